"""An L1C input with a known truth: the sample scene's surface pushed through the 6S table.

The sample scene (:func:`eotwin.sample.scene.make_scene`) has a cloud-free 13-band surface
reflectance. Its top-of-atmosphere reflectance under a chosen atmosphere (AOT, water vapour, ozone,
aerosol model) and geometry is the 6S Lambertian forward model with the committed table's terms,
written as an "L1C stack" GeoTIFF (uint16 DN = TOA x 10000 + 1000, tag RADIO_ADD_OFFSET=-1000,
angles and spacecraft in tags). The surface itself is written as an L2A stack (BOA_ADD_OFFSET=-1000),
so ``eotwin atmocorr run L1C --reference TRUTH`` measures a correction against the exact answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eotwin.atmocorr import physics
from eotwin.atmocorr.lut import AtmosphereTerms, SixSLut, load_lut
from eotwin.atmocorr.products import BOA_ADD_OFFSET, L2A_BANDS, QUANTIFICATION, boa_to_dn
from eotwin.atmocorr.srf import S2_BANDS
from eotwin.errors import EotwinError
from eotwin.io.files import ensure_writable_dir
from eotwin.io.raster import write_geotiff
from eotwin.sample.scene import SampleScene, make_scene

RADIO_ADD_OFFSET = -1000
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
) -> SampleL1C:
    """Write ``l1c_stack.tif`` and ``l2a_truth.tif`` for the sample scene into ``directory``."""
    from eotwin.atmocorr.srf import normalise_sensor

    atm = {**DEFAULT_ATMOSPHERE, **(atmosphere or {})}
    geo = {**DEFAULT_GEOMETRY, **(geometry or {})}
    unknown = set(atm) - set(DEFAULT_ATMOSPHERE) | set(geo) - set(DEFAULT_GEOMETRY)
    if unknown:
        raise EotwinError(f"unknown atmosphere or geometry keys: {', '.join(sorted(unknown))}")
    sensor = normalise_sensor(spacecraft)
    directory = ensure_writable_dir(Path(directory))
    scene = scene or make_scene(size=size, seed=seed)
    lut = load_lut(lut_path)
    surface = scene.surface_reflectance.astype(np.float32)
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
    valid = ~scene.nodata
    dn = np.clip(np.rint(toa * QUANTIFICATION - RADIO_ADD_OFFSET), 1, 65535).astype(np.uint16)
    dn[:, ~valid] = 0
    tags = {
        "PRODUCT_ID": "EOTWIN_SAMPLE_L1C",
        "PROCESSING_LEVEL": "L1C",
        "SPACECRAFT": spacecraft,
        "RADIO_ADD_OFFSET": RADIO_ADD_OFFSET,
        "QUANTIFICATION_VALUE": int(QUANTIFICATION),
        "SUN_ZENITH": geo["sun_zenith"],
        "SUN_AZIMUTH": geo["sun_azimuth"],
        "VIEW_ZENITH": geo["view_zenith"],
        "VIEW_AZIMUTH": geo["view_azimuth"],
        **{f"SIMULATED_{k.upper()}": v for k, v in atm.items()},
        "SIMULATION": "sample-scene surface through the 6S LUT forward model (eotwin.atmocorr.sample_l1c)",
    }
    l1c = write_geotiff(
        directory / "l1c_stack.tif", dn, scene.image_grid, nodata=0, descriptions=list(S2_BANDS), tags=tags
    )
    truth_bands = [S2_BANDS.index(b) for b in L2A_BANDS]
    truth_dn = boa_to_dn(surface[truth_bands], valid)
    truth = write_geotiff(
        directory / "l2a_truth.tif",
        truth_dn,
        scene.image_grid,
        nodata=0,
        descriptions=list(L2A_BANDS),
        tags={
            "BOA_ADD_OFFSET": BOA_ADD_OFFSET,
            "BOA_QUANTIFICATION_VALUE": int(QUANTIFICATION),
            "PROCESSING_LEVEL": "L2A",
            "PRODUCT_ID": "EOTWIN_SAMPLE_SURFACE",
        },
    )
    return SampleL1C(l1c, truth, surface, valid, atm, geo, spacecraft)
