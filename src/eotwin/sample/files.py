"""Write the sample scene as real files: a DEM GeoTIFF, an L2A-style band stack, a TCI and an SCL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eotwin.io.files import ensure_writable_dir, write_json_atomic
from eotwin.io.raster import write_geotiff
from eotwin.sample.scene import SampleScene, make_scene, observed_reflectance, scene_scl

L2A_10M_BANDS = ("B02", "B03", "B04", "B08")
BOA_ADD_OFFSET = -1000
QUANTIFICATION = 10000
TCI_SATURATION = 0.2  # reflectance mapped to 255 in the true-colour image


@dataclass(frozen=True)
class SampleFiles:
    directory: Path
    dem: Path
    l2a: Path
    tci: Path
    scl: Path
    metadata: Path


def reflectance_to_l2a_dn(refl: np.ndarray) -> np.ndarray:
    """BOA reflectance -> L2A DN (baseline >= 04.00): DN = refl * 10000 - BOA_ADD_OFFSET, 1..65535."""
    return np.clip(np.rint(refl * QUANTIFICATION - BOA_ADD_OFFSET), 1, 65535).astype(np.uint16)


def reflectance_to_tci(rgb: np.ndarray) -> np.ndarray:
    """Reflectance (3, H, W) -> uint8 true colour, 1..255 (0 stays for no data)."""
    return np.clip(np.rint(rgb / TCI_SATURATION * 254.0) + 1, 1, 255).astype(np.uint8)


def write_sample(directory: str | Path, scene: SampleScene | None = None) -> SampleFiles:
    """Write the sample scene's files into ``directory`` (atomic per file) and return their paths."""
    directory = ensure_writable_dir(Path(directory))
    scene = scene or make_scene()
    grid = scene.image_grid
    refl = observed_reflectance(scene)
    band_index = {b: i for i, b in enumerate(scene.bands)}

    dem_path = write_geotiff(directory / "dem.tif", scene.dem, scene.dem_grid, nodata=-32767.0, descriptions=["elevation (m)"],
                             tags={"SOURCE": "eotwin sample scene (analytic relief)", "UNITS": "metre"})

    l2a = np.stack([reflectance_to_l2a_dn(refl[band_index[b]]) for b in L2A_10M_BANDS])
    l2a[:, scene.nodata] = 0
    l2a_path = write_geotiff(directory / "l2a_10m.tif", l2a, grid, nodata=0, descriptions=list(L2A_10M_BANDS),
                             tags={"BOA_ADD_OFFSET": BOA_ADD_OFFSET, "BOA_QUANTIFICATION_VALUE": QUANTIFICATION,
                                   "PROCESSING_LEVEL": "L2A", "SPACECRAFT": "Sentinel-2A"})

    tci = reflectance_to_tci(np.stack([refl[band_index[b]] for b in ("B04", "B03", "B02")]))
    tci[:, scene.nodata] = 0
    tci_path = write_geotiff(directory / "tci.tif", tci, grid, nodata=0, descriptions=["red", "green", "blue"], photometric="RGB")

    scl_path = write_geotiff(directory / "scl.tif", scene_scl(scene), grid, nodata=0, descriptions=["SCL"])

    meta_path = write_json_atomic(directory / "sample.json", {
        "description": "eotwin sample scene: alpine valley, UTM 32N, analytic relief, land cover by elevation",
        "crs": grid.crs.to_string(),
        "image": {"shape": list(grid.shape), "resolution_m": grid.res[0], "bounds": list(grid.bounds)},
        "dem": {"crs": scene.dem_grid.crs.to_string(), "shape": list(scene.dem_grid.shape), "bounds": list(scene.dem_grid.bounds)},
        "files": {"dem": dem_path.name, "l2a": l2a_path.name, "tci": tci_path.name, "scl": scl_path.name},
        "l2a_convention": {"BOA_ADD_OFFSET": BOA_ADD_OFFSET, "QUANTIFICATION_VALUE": QUANTIFICATION},
    })
    return SampleFiles(directory, dem_path, l2a_path, tci_path, scl_path, meta_path)
