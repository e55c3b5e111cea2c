"""DOS and DDV + 6S baselines on synthetic scenes whose atmosphere is known."""

from __future__ import annotations

import numpy as np
import pytest

from eotwin.atmocorr import baselines, physics
from eotwin.atmocorr.lut import load_lut
from eotwin.atmocorr.srf import S2_BANDS
from eotwin.errors import EotwinError

ATMOSPHERE = dict(aot=0.25, sza=40.0, vza=6.0, raa=120.0, wv=1.5, o3=0.33)
GEOMETRY = {k: ATMOSPHERE[k] for k in ("sza", "vza", "raa")}


@pytest.fixture(scope="module")
def lut():
    return load_lut()


def _ddv_scene(seed: int = 5, size: int = 80, vegetation: bool = True) -> np.ndarray:
    """(13, size, size) surface: dark dense vegetation obeying Kaufman's ratios, bare soil, water."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=(size, size), p=[0.45, 0.45, 0.10] if vegetation else [0.0, 0.9, 0.1])
    surface = np.empty((len(S2_BANDS), size, size), dtype=np.float64)
    band = {b: i for i, b in enumerate(S2_BANDS)}
    veg = kind == 0
    swir = rng.uniform(0.015, 0.045, veg.sum())
    vegetation_spectrum = dict(
        B01=0.02, B05=0.08, B06=0.25, B07=0.3, B08=0.32, B8A=0.33, B09=0.33, B10=0.02, B11=0.12
    )
    for name, value in vegetation_spectrum.items():
        surface[band[name]][veg] = value * rng.uniform(0.9, 1.1, veg.sum())
    surface[band["B09"]][veg] = surface[band["B8A"]][
        veg
    ]  # flat 865-945 nm: the water-vapour method's premise
    surface[band["B12"]][veg] = swir
    surface[band["B04"]][veg] = 0.5 * swir
    surface[band["B02"]][veg] = 0.25 * swir
    surface[band["B03"]][veg] = 0.8 * swir + 0.02
    soil = kind == 1
    soil_spectrum = (0.08, 0.10, 0.14, 0.18, 0.21, 0.23, 0.25, 0.27, 0.28, 0.28, 0.05, 0.32, 0.28)
    for i, value in enumerate(soil_spectrum):
        surface[i][soil] = value * rng.uniform(0.9, 1.1, soil.sum())
    surface[band["B09"]][soil] = surface[band["B8A"]][soil]
    water = kind == 2
    for i, value in enumerate(
        (0.05, 0.045, 0.04, 0.022, 0.016, 0.011, 0.01, 0.008, 0.007, 0.007, 0.002, 0.003, 0.002)
    ):
        surface[i][water] = value
    return surface


def _toa(lut, surface: np.ndarray, **atm) -> np.ndarray:
    terms = lut.terms_for("S2A", S2_BANDS, "continental", **atm)  # scene-wide atmosphere: (bands,) terms
    return physics.forward(surface, terms).astype(np.float32)


def test_dos_removes_a_known_additive_haze_exactly():
    rng = np.random.default_rng(1)
    surface = rng.uniform(0.02, 0.5, (3, 50, 50)).astype(np.float32)
    surface[:, :5, :] = 0.01  # 10 % dark objects at exactly 1 % reflectance
    haze = np.array([0.08, 0.05, 0.01], dtype=np.float32)
    boa, found = baselines.dark_object_subtraction(surface + haze[:, None, None])
    np.testing.assert_allclose(found, haze, atol=1e-6)
    np.testing.assert_allclose(boa, surface, atol=1e-6)


def test_dos_scattering_model_extrapolates_visible_haze_to_bands_without_dark_objects():
    bands = ("B02", "B03", "B04", "B08")
    wavelengths = np.array([492.0, 560.0, 665.0, 833.0])
    haze = 0.06 * (wavelengths / 492.0) ** -2.0  # a clear-ish atmosphere: haze ~ wavelength^-2
    rng = np.random.default_rng(2)
    surface = rng.uniform(0.2, 0.5, (4, 60, 60)).astype(np.float32)
    surface[:3, :6, :] = 0.01  # water: dark in the visible ...
    surface[3, :6, :] = 0.15  # ... but not in the NIR (turbid water / no dark object there)
    toa = surface + haze[:, None, None].astype(np.float32)
    _, dos1 = baselines.dark_object_subtraction(toa)
    assert dos1[3] == pytest.approx(haze[3] + 0.14, abs=1e-5)  # DOS1 takes the NIR dark value for haze
    boa, modelled = baselines.dark_object_subtraction(toa, bands=bands)
    np.testing.assert_allclose(modelled, haze, rtol=1e-4)
    np.testing.assert_allclose(boa, surface, atol=1e-5)


def test_dos_respects_the_valid_mask_and_rejects_empty_scenes():
    toa = np.full((2, 10, 10), 0.2, dtype=np.float32)
    toa[:, 0, 0] = 0.0  # a no-data pixel would pull the dark value down
    valid = np.ones((10, 10), dtype=bool)
    valid[0, 0] = False
    _, haze = baselines.dark_object_subtraction(toa, valid)
    np.testing.assert_allclose(haze, [0.19, 0.19], atol=1e-6)
    with pytest.raises(EotwinError, match="at least one valid pixel"):
        baselines.dark_object_subtraction(toa, np.zeros((10, 10), dtype=bool))


def test_ddv_retrieves_the_atmosphere_and_the_surface(lut):
    surface = _ddv_scene()
    toa = _toa(lut, surface, **ATMOSPHERE)
    result = baselines.ddv_correction(toa, S2_BANDS, lut, sensor="S2A", **GEOMETRY, o3=ATMOSPHERE["o3"])
    assert not result.fallback and result.n_dark > 1000 and result.swir_range == (0.01, 0.05)
    assert result.aot == pytest.approx(ATMOSPHERE["aot"], abs=0.01)
    assert result.wv == pytest.approx(ATMOSPHERE["wv"], abs=0.1)
    l2a = [i for i, b in enumerate(S2_BANDS) if b != "B10"]
    err = np.abs(result.boa[l2a] - surface[l2a])
    assert err.max() < 0.004
    # the physical baseline beats leaving TOA unchanged and beats DOS in the blue band
    dos, _ = baselines.dark_object_subtraction(toa)
    blue = S2_BANDS.index("B02")
    rmse = {
        name: float(np.sqrt(np.mean((img[blue] - surface[blue]) ** 2)))
        for name, img in (("ddv", result.boa), ("dos", dos), ("toa", toa))
    }
    assert rmse["ddv"] < rmse["dos"] < rmse["toa"]


def test_ddv_with_known_water_vapour_and_per_pixel_angles(lut):
    surface = _ddv_scene(seed=9, size=40)
    toa = _toa(lut, surface, **ATMOSPHERE)
    sza = np.full(surface.shape[1:], ATMOSPHERE["sza"])
    result = baselines.ddv_correction(
        toa, S2_BANDS, lut, sensor="S2A", sza=sza, vza=6.0, raa=120.0, wv=1.5, o3=0.33
    )
    assert result.wv == 1.5 and result.boa.shape == surface.shape
    assert result.aot == pytest.approx(0.25, abs=0.01)


def test_ddv_falls_back_to_the_default_aot_without_vegetation(lut):
    surface = _ddv_scene(vegetation=False, size=40)
    toa = _toa(lut, surface, **ATMOSPHERE)
    result = baselines.ddv_correction(toa, S2_BANDS, lut, sensor="S2A", **GEOMETRY, wv=1.5)
    assert result.fallback and result.n_dark == 0 and result.aot == baselines.DEFAULT_AOT


def test_bad_inputs_are_one_line_errors(lut):
    toa = np.zeros((12, 5, 5), dtype=np.float32)
    with pytest.raises(EotwinError, match="13 band names"):
        baselines.ddv_correction(toa, S2_BANDS, lut, sensor="S2A", **GEOMETRY)
    with pytest.raises(EotwinError, match="must be floating point"):
        baselines.lut_correction(
            np.zeros((13, 5, 5), dtype=np.uint16),
            S2_BANDS,
            lut,
            sensor="S2A",
            aerosol="continental",
            aot=0.1,
            wv=1.0,
            **GEOMETRY,
        )
    with pytest.raises(EotwinError, match="needs bands B02, B04, B08 and B12"):
        baselines.estimate_aot_ddv(
            np.zeros((2, 5, 5), dtype=np.float32),
            ("B02", "B04"),
            lut,
            sensor="S2A",
            aerosol="continental",
            wv=1.0,
            **GEOMETRY,
        )
    with pytest.raises(EotwinError, match="unknown Sentinel-2 spacecraft"):
        baselines.lut_correction(
            np.zeros((13, 5, 5), dtype=np.float32),
            S2_BANDS,
            lut,
            sensor="Landsat-8",
            aerosol="continental",
            aot=0.1,
            wv=1.0,
            **GEOMETRY,
        )
