"""Write the sample scene as real files: a DEM GeoTIFF, an L2A-style band stack, a TCI and an SCL."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from eotwin.io.files import ensure_writable_dir, write_json_atomic
from eotwin.io.raster import geotiff_writer, write_geotiff
from eotwin.progress import ProgressReporter, ensure_progress
from eotwin.sample.scene import (
    DEFAULT_SIZE,
    SampleScene,
    SceneGenerator,
    SceneRows,
    observed_reflectance,
    scene_scl,
)
from eotwin.sentinel2.bands import S2_BANDS, TCI_BANDS, bands_at
from eotwin.sentinel2.radiometry import BOA_ADD_OFFSET, QUANTIFICATION, boa_to_dn, reflectance_to_tci

L2A_10M_BANDS = bands_at(10)  # B02, B03, B04, B08


@dataclass(frozen=True)
class SampleFiles:
    directory: Path
    dem: Path
    l2a: Path
    tci: Path
    scl: Path
    metadata: Path


def write_sample(directory: str | Path, scene: SampleScene | None = None, *, size: int = DEFAULT_SIZE, seed: int = 42,
                 block_rows: int = 128, progress: ProgressReporter | None = None) -> SampleFiles:
    """Write the sample scene's files into ``directory`` (atomic per file) and return their paths.

    Without ``scene`` the scene of ``size`` and ``seed`` is generated and written ``block_rows`` rows at a
    time, so a full-tile-sized sample (10980 px) needs a few hundred MB, not the 7 GB of the whole scene.
    """
    directory = ensure_writable_dir(Path(directory))
    progress = ensure_progress(progress)
    if scene is not None:
        grid, dem_grid, dem = scene.image_grid, scene.dem_grid, scene.dem

        def rows(r0: int, r1: int) -> SceneRows:
            return SceneRows(r0, scene.elevation[r0:r1], scene.land_cover[r0:r1], scene.surface_reflectance[:, r0:r1],
                             scene.cloud[r0:r1], scene.cloud_shadow[r0:r1], scene.nodata[r0:r1])
        bands = scene.bands
    else:
        generator = SceneGenerator(size, seed)
        grid, dem_grid, dem = generator.image_grid, generator.dem_grid, generator.dem()
        rows, bands = generator.rows, S2_BANDS
    band_index = {b: i for i, b in enumerate(bands)}

    dem_path = write_geotiff(directory / "dem.tif", dem, dem_grid, nodata=-32767.0, descriptions=["elevation (m)"],
                             tags={"SOURCE": "eotwin sample scene (analytic relief)", "UNITS": "metre"})
    del dem
    l2a_path, tci_path, scl_path = directory / "l2a_10m.tif", directory / "tci.tif", directory / "scl.tif"
    with contextlib.ExitStack() as stack:
        l2a_dst = stack.enter_context(geotiff_writer(
            l2a_path, grid, len(L2A_10M_BANDS), "uint16", nodata=0, descriptions=list(L2A_10M_BANDS),
            tags={"BOA_ADD_OFFSET": BOA_ADD_OFFSET, "BOA_QUANTIFICATION_VALUE": int(QUANTIFICATION),
                  "PROCESSING_LEVEL": "L2A", "SPACECRAFT": "Sentinel-2A"}))
        tci_dst = stack.enter_context(geotiff_writer(tci_path, grid, 3, "uint8", nodata=0,
                                                     descriptions=["red", "green", "blue"], photometric="RGB"))
        scl_dst = stack.enter_context(geotiff_writer(scl_path, grid, 1, "uint8", nodata=0, descriptions=["SCL"]))
        starts = range(0, grid.height, block_rows)
        with progress.task("writing the sample scene", total=len(starts)) as task:
            for r0 in starts:
                part = rows(r0, min(r0 + block_rows, grid.height))
                window = Window(0, r0, grid.width, part.land_cover.shape[0])
                refl = observed_reflectance(part)
                l2a = np.stack([boa_to_dn(refl[band_index[b]]) for b in L2A_10M_BANDS])
                l2a[:, part.nodata] = 0
                l2a_dst.write(l2a, window=window)
                tci = reflectance_to_tci(np.stack([refl[band_index[b]] for b in TCI_BANDS]))
                tci[:, part.nodata] = 0
                tci_dst.write(tci, window=window)
                scl_dst.write(scene_scl(part)[None], window=window)
                task.advance()

    meta_path = write_json_atomic(directory / "sample.json", {
        "description": "eotwin sample scene: alpine valley, UTM 32N, analytic relief, land cover by elevation",
        "crs": grid.crs.to_string(),
        "image": {"shape": list(grid.shape), "resolution_m": grid.res[0], "bounds": list(grid.bounds)},
        "dem": {"crs": dem_grid.crs.to_string(), "shape": list(dem_grid.shape), "bounds": list(dem_grid.bounds)},
        "files": {"dem": dem_path.name, "l2a": l2a_path.name, "tci": tci_path.name, "scl": scl_path.name},
        "l2a_convention": {"BOA_ADD_OFFSET": BOA_ADD_OFFSET, "QUANTIFICATION_VALUE": int(QUANTIFICATION)},
    })
    return SampleFiles(directory, dem_path, l2a_path, tci_path, scl_path, meta_path)
