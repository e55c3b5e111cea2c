"""An L1C input with a known truth: the sample scene's surface pushed through the 6S table.

The sample scene (:func:`eotwin.sample.scene.make_scene`) has a cloud-free 13-band surface
reflectance. Its top-of-atmosphere reflectance under a chosen atmosphere (AOT, water vapour, ozone,
aerosol model) and geometry is the 6S Lambertian forward model with the committed table's terms,
written as an "L1C stack" GeoTIFF (uint16 DN = TOA x 10000 + 1000, tag RADIO_ADD_OFFSET=-1000,
angles and spacecraft in tags). The surface itself is written as an L2A stack (BOA_ADD_OFFSET=-1000),
so ``eotwin atmocorr run L1C --reference TRUTH`` measures a correction against the exact answer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eotwin.atmocorr import physics
from eotwin.atmocorr.lut import AtmosphereTerms, SixSLut, load_lut
from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid
from eotwin.io.files import ensure_writable_dir
from eotwin.io.raster import gdal_cache_env, write_geotiff
from eotwin.progress import ProgressReporter, ensure_progress
from eotwin.sample.scene import SampleScene, make_scene
from eotwin.sentinel2.bands import L2A_BANDS, S2_BANDS
from eotwin.sentinel2.radiometry import BOA_ADD_OFFSET, QUANTIFICATION, RADIO_ADD_OFFSET, boa_to_dn, toa_to_dn

DEFAULT_ATMOSPHERE = {"aot": 0.2, "wv": 1.5, "o3": 0.33, "aerosol": "continental"}
DEFAULT_GEOMETRY = {"sun_zenith": 35.0, "sun_azimuth": 150.0, "view_zenith": 5.0, "view_azimuth": 105.0}


@dataclass(frozen=True)
class SampleL1C:
    """The files written and what they were made from."""

    l1c: Path  # L1C stack (13 bands)
    truth: Path  # L2A stack of the surface (12 bands)
    surface: np.ndarray  # (13, H, W) float32, the exact surface reflectance
    valid: np.ndarray  # (H, W) bool: inside the swath
    atmosphere: dict[str, object] = field(default_factory=dict)
    geometry: dict[str, float] = field(default_factory=dict)
    spacecraft: str = "Sentinel-2A"


def toa_terms(lut: SixSLut, *, sensor: str, aerosol: str, aot: float, wv: float, o3: float, sun_zenith: float,
              sun_azimuth: float, view_zenith: float, view_azimuth: float,
              bands: tuple[str, ...] = S2_BANDS) -> AtmosphereTerms:
    """The table's terms for one atmosphere and geometry, shaped to broadcast over (bands, rows, cols)."""
    raa = physics.relative_azimuth(sun_azimuth, view_azimuth)
    terms = lut.terms_for(sensor, bands, aerosol, aot, sun_zenith, view_zenith, raa, wv, o3)
    shape = (slice(None), None, None)
    return AtmosphereTerms(terms.bands, *(getattr(terms, k)[shape] for k in ("path", "tg", "t_down", "t_up", "s_alb")))


def simulate_toa(
    surface: np.ndarray,
    lut: SixSLut,
    *,
    sensor: str,
    aerosol: str,
    aot: float,
    wv: float,
    o3: float,
    sun_zenith: float,
    sun_azimuth: float,
    view_zenith: float,
    view_azimuth: float,
    bands: tuple[str, ...] = S2_BANDS,
) -> np.ndarray:
    """TOA reflectance (bands first) of a Lambertian surface under one atmosphere and geometry (pure)."""
    raa = physics.relative_azimuth(sun_azimuth, view_azimuth)
    terms = lut.terms_for(sensor, bands, aerosol, aot, sun_zenith, view_zenith, raa, wv, o3)
    shape = (slice(None),) + (None,) * (surface.ndim - 1)
    per_band = AtmosphereTerms(
        terms.bands, *(getattr(terms, k)[shape] for k in ("path", "tg", "t_down", "t_up", "s_alb"))
    )
    return physics.forward(surface, per_band).astype(np.float32)


def l1c_stack_tags(product_id: str, spacecraft: str, geo: dict, atm: dict, simulation: str,
                   ozone_tag: bool = True) -> dict:
    """Dataset tags of an "L1C stack" (issue 6's convention) with the simulated atmosphere recorded, and
    (``ozone_tag``) the ozone column as ``OZONE``: what a real L1C carries from ECMWF."""
    return {
        "PRODUCT_ID": product_id,
        "PROCESSING_LEVEL": "L1C",
        "SPACECRAFT": spacecraft,
        "RADIO_ADD_OFFSET": RADIO_ADD_OFFSET,
        "QUANTIFICATION_VALUE": int(QUANTIFICATION),
        "SUN_ZENITH": geo["sun_zenith"],
        "SUN_AZIMUTH": geo["sun_azimuth"],
        "VIEW_ZENITH": geo["view_zenith"],
        "VIEW_AZIMUTH": geo["view_azimuth"],
        **{f"SIMULATED_{k.upper()}": v for k, v in atm.items()},
        **({"OZONE": atm["o3"]} if ozone_tag else {}),
        "SIMULATION": simulation,
    }


def make_sample_l1c(
    directory: str | Path,
    scene: SampleScene | None = None,
    *,
    size: int = 600,
    seed: int = 42,
    spacecraft: str = "Sentinel-2A",
    atmosphere: dict[str, object] | None = None,
    geometry: dict[str, float] | None = None,
    lut_path: Path | None = None,
    ozone_tag: bool = True,
) -> SampleL1C:
    """Write ``l1c_stack.tif`` and ``l2a_truth.tif`` for the sample scene into ``directory`` (the stack
    with the ``OZONE`` tag unless ``ozone_tag`` is false)."""
    atm = {**DEFAULT_ATMOSPHERE, **(atmosphere or {})}
    geo = {**DEFAULT_GEOMETRY, **(geometry or {})}
    unknown = set(atm) - set(DEFAULT_ATMOSPHERE) | set(geo) - set(DEFAULT_GEOMETRY)
    if unknown:
        raise EotwinError(f"unknown atmosphere or geometry keys: {', '.join(sorted(unknown))}")
    scene = scene or make_scene(size=size, seed=seed)
    return make_l1c_from_surface(
        directory, scene.surface_reflectance, ~scene.nodata, scene.image_grid, spacecraft=spacecraft, atmosphere=atm,
        geometry=geo, lut_path=lut_path, ozone_tag=ozone_tag, product_id="EOTWIN_SAMPLE",
        simulation="sample-scene surface through the 6S LUT forward model (eotwin.atmocorr.sample_l1c)",
    )


def make_l1c_from_surface(
    directory: str | Path,
    surface: np.ndarray,
    valid: np.ndarray,
    grid,
    *,
    spacecraft: str = "Sentinel-2A",
    atmosphere: dict[str, object] | None = None,
    geometry: dict[str, float] | None = None,
    lut_path: Path | None = None,
    ozone_tag: bool = True,
    product_id: str = "EOTWIN_SIMULATED",
    simulation: str = "a known surface through the 6S LUT forward model (eotwin.atmocorr.sample_l1c)",
) -> SampleL1C:
    """``l1c_stack.tif`` (TOA of ``surface`` (13, H, W) under the atmosphere) and ``l2a_truth.tif`` (the surface)."""
    from eotwin.sentinel2.bands import normalise_sensor

    atm = {**DEFAULT_ATMOSPHERE, **(atmosphere or {})}
    geo = {**DEFAULT_GEOMETRY, **(geometry or {})}
    sensor = normalise_sensor(spacecraft)
    directory = ensure_writable_dir(Path(directory))
    lut = load_lut(lut_path)
    surface = np.asarray(surface, dtype=np.float32)
    toa = simulate_toa(
        surface,
        lut,
        sensor=sensor,
        aerosol=str(atm["aerosol"]),
        aot=float(atm["aot"]),
        wv=float(atm["wv"]),
        o3=float(atm["o3"]),
        **geo,
    )
    tags = l1c_stack_tags(f"{product_id}_L1C", spacecraft, geo, atm, simulation, ozone_tag=ozone_tag)
    l1c = write_geotiff(directory / "l1c_stack.tif", l1c_dn(toa, valid), grid, nodata=0,
                        descriptions=list(S2_BANDS), tags=tags)
    truth = write_geotiff(directory / "l2a_truth.tif", boa_to_dn(surface[TRUTH_BANDS], valid), grid, nodata=0,
                          descriptions=list(L2A_BANDS), tags=truth_tags(product_id))
    return SampleL1C(l1c, truth, surface, valid, atm, geo, spacecraft)


TRUTH_BANDS = [S2_BANDS.index(b) for b in L2A_BANDS]


def l1c_dn(toa: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """TOA reflectance -> L1C DN (baseline >= 04.00: RADIO_ADD_OFFSET -1000); 0 outside ``valid``."""
    dn = toa_to_dn(toa)
    dn[:, ~valid] = 0
    return dn


def truth_tags(product_id: str) -> dict[str, object]:
    return {"BOA_ADD_OFFSET": BOA_ADD_OFFSET, "BOA_QUANTIFICATION_VALUE": int(QUANTIFICATION),
            "PROCESSING_LEVEL": "L2A", "PRODUCT_ID": f"{product_id}_SURFACE"}


def write_sample_l1c(
    directory: str | Path,
    *,
    size: int = 600,
    seed: int = 42,
    spacecraft: str = "Sentinel-2A",
    atmosphere: dict[str, object] | None = None,
    geometry: dict[str, float] | None = None,
    lut_path: Path | None = None,
    block_rows: int = 64,  # the forward model works in float64: 64 rows of a full tile are about 70 MB a copy
    progress: ProgressReporter | None = None,
) -> tuple[Path, Path]:
    """:func:`make_sample_l1c`'s two files written ``block_rows`` rows at a time (the same pixels), for sizes
    up to a full tile within a few hundred MB; returns the L1C stack and truth paths."""
    from rasterio.windows import Window as RioWindow

    from eotwin.io.raster import geotiff_writer
    from eotwin.sample.scene import SceneGenerator
    from eotwin.sentinel2.bands import normalise_sensor

    atm = {**DEFAULT_ATMOSPHERE, **(atmosphere or {})}
    geo = {**DEFAULT_GEOMETRY, **(geometry or {})}
    unknown = set(atm) - set(DEFAULT_ATMOSPHERE) | set(geo) - set(DEFAULT_GEOMETRY)
    if unknown:
        raise EotwinError(f"unknown atmosphere or geometry keys: {', '.join(sorted(unknown))}")
    sensor = normalise_sensor(spacecraft)
    directory = ensure_writable_dir(Path(directory))
    lut = load_lut(lut_path)
    generator = SceneGenerator(size, seed)
    grid = generator.image_grid
    tags = l1c_stack_tags("EOTWIN_SAMPLE_L1C", spacecraft, geo, atm,
                          "sample-scene surface through the 6S LUT forward model (eotwin.atmocorr.sample_l1c)")
    progress = ensure_progress(progress)
    with contextlib.ExitStack() as stack:
        l1c = stack.enter_context(geotiff_writer(directory / "l1c_stack.tif", grid, len(S2_BANDS), "uint16", nodata=0,
                                                 descriptions=list(S2_BANDS), tags=tags))
        truth = stack.enter_context(geotiff_writer(directory / "l2a_truth.tif", grid, len(L2A_BANDS), "uint16",
                                                   nodata=0, descriptions=list(L2A_BANDS),
                                                   tags=truth_tags("EOTWIN_SAMPLE")))
        terms = toa_terms(lut, sensor=sensor, aerosol=str(atm["aerosol"]), aot=float(atm["aot"]), wv=float(atm["wv"]),
                          o3=float(atm["o3"]), **geo)  # once: the same atmosphere for every block
        starts = range(0, size, block_rows)
        with progress.task(f"writing a {size} px sample L1C", total=len(starts)) as task:
            for r0 in starts:
                part = generator.rows(r0, min(r0 + block_rows, size))
                valid = ~part.nodata
                toa = physics.forward(part.surface_reflectance, terms).astype(np.float32)
                window = RioWindow(0, r0, size, valid.shape[0])
                l1c.write(l1c_dn(toa, valid), window=window)
                truth.write(boa_to_dn(part.surface_reflectance[TRUTH_BANDS], valid), window=window)
                task.advance()
    return directory / "l1c_stack.tif", directory / "l2a_truth.tif"


# ----------------------------------------------------------------------------- a full-size tile, fast
FULL_TILE = 10980  # pixels per side of a Sentinel-2 tile at 10 m
TILE_BASE = 1098  # side of the sample scene that is mirrored over a full tile


@dataclass(frozen=True)
class TiledL1C:
    """A large L1C stack made by mirroring one simulated sample scene; knows its exact surface anywhere."""

    l1c: Path
    size: int
    base_surface: np.ndarray  # (13, n, n) float32: the surface that is mirrored
    atmosphere: dict[str, object] = field(default_factory=dict)
    geometry: dict[str, float] = field(default_factory=dict)
    spacecraft: str = "Sentinel-2A"

    def surface(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """The exact surface reflectance (13, height, width) of a window (NaN outside the swath)."""
        n = self.base_surface.shape[1]
        rows, cols = mirror_index(row_off, height, n), mirror_index(col_off, width, n)
        out = self.base_surface[:, rows][:, :, cols].copy()
        out[:, ~tile_valid(self.size, row_off, col_off, height, width)] = np.nan
        return out


def mirror_index(start: int, count: int, n: int) -> np.ndarray:
    """Indices into a base of ``n`` pixels for positions ``start ... start+count-1`` of its mirrored tiling.

    Mirroring (0..n-1, n-1..0, 0..n-1, ...) keeps the surface continuous across copies.
    """
    i = (np.arange(start, start + count) % (2 * n)).astype(np.intp)
    return np.where(i < n, i, 2 * n - 1 - i)


def tile_valid(size: int, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
    """Inside the swath: the lower-left corner of the tile is outside (as ``make_scene``'s edge, scaled)."""
    rows = np.arange(row_off, row_off + height)[:, None]
    cols = np.arange(col_off, col_off + width)[None, :]
    return ~(cols + 2 * (size - rows) < size // 3)


def make_tiled_l1c(
    directory: str | Path,
    *,
    size: int = FULL_TILE,
    base: int = TILE_BASE,
    seed: int = 42,
    spacecraft: str = "Sentinel-2A",
    atmosphere: dict[str, object] | None = None,
    geometry: dict[str, float] | None = None,
    lut_path: Path | None = None,
    block_rows: int = 512,
    compress: str = "deflate",
    progress: ProgressReporter | None = None,
) -> TiledL1C:
    """Write ``l1c_stack.tif``: a ``size`` x ``size`` L1C stack (13 bands, 10 m) of a mirrored sample scene.

    The TOA of a ``base`` x ``base`` sample surface is simulated once with the 6S table (as
    :func:`make_sample_l1c`), turned into DN and mirrored over the tile block by block, so a full
    10980 px tile takes seconds of numpy and its compression, in bounded memory (one block of uint16).
    """
    import rasterio

    from eotwin.io.files import atomic_path
    from eotwin.sentinel2.bands import normalise_sensor

    if size < 1 or base < 16:
        raise EotwinError(f"tile size must be positive and the base at least 16 px (got {size}, {base})")
    atm = {**DEFAULT_ATMOSPHERE, **(atmosphere or {})}
    geo = {**DEFAULT_GEOMETRY, **(geometry or {})}
    unknown = set(atm) - set(DEFAULT_ATMOSPHERE) | set(geo) - set(DEFAULT_GEOMETRY)
    if unknown:
        raise EotwinError(f"unknown atmosphere or geometry keys: {', '.join(sorted(unknown))}")
    directory = ensure_writable_dir(Path(directory))
    progress = ensure_progress(progress)
    scene = make_scene(size=min(base, size), seed=seed)
    surface = scene.surface_reflectance.astype(np.float32)
    toa = simulate_toa(
        surface,
        load_lut(lut_path),
        sensor=normalise_sensor(spacecraft),
        aerosol=str(atm["aerosol"]),
        aot=float(atm["aot"]),
        wv=float(atm["wv"]),
        o3=float(atm["o3"]),
        **geo,
    )
    base_dn = toa_to_dn(toa)
    del toa
    n = base_dn.shape[1]
    origin = scene.image_grid.transform
    grid = Grid(origin, size, size, scene.image_grid.crs)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": len(S2_BANDS),
        "dtype": "uint16",
        "crs": rasterio.crs.CRS.from_wkt(grid.crs.to_wkt()),
        "transform": grid.transform,
        "nodata": 0,
        "compress": compress,
        "predictor": 2,
        "zlevel": 1,  # fast: the file is an input, written once per benchmark
        "zstd_level": 1,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",
    }
    tags = l1c_stack_tags(f"EOTWIN_SAMPLE_L1C_TILE_{size}", spacecraft, geo, atm,
                          f"the sample scene's surface ({n} px) mirrored over the tile, through the 6S LUT")
    block_rows = max(256, block_rows - block_rows % 256)  # whole rows of the file's 256 px tiles
    target = directory / "l1c_stack.tif"
    cols = mirror_index(0, size, n)
    windows = list(grid.row_blocks(block_rows))
    with (
        atomic_path(target) as tmp,
        gdal_cache_env(256),
        rasterio.open(tmp, "w", **profile) as dst,
        progress.task(f"writing a {size} px L1C stack", total=len(windows)) as task,
    ):
        for i, name in enumerate(S2_BANDS, start=1):
            dst.set_band_description(i, name)
        dst.update_tags(**{k: str(v) for k, v in tags.items()})
        from rasterio.windows import Window as RioWindow

        for w in windows:
            block = base_dn[:, mirror_index(w.row_off, w.height, n)][:, :, cols]
            block[:, ~tile_valid(size, w.row_off, 0, w.height, size)] = 0
            dst.write(block, window=RioWindow(0, w.row_off, size, w.height))
            task.advance()
    return TiledL1C(target, size, surface, atm, geo, spacecraft)
