"""Aerosol from dark water (dark_water, and the DDV's use of it) on scenes made with the 6S table."""

from __future__ import annotations

import numpy as np
import pytest

from eotwin.atmocorr import dark_vegetation, physics
from eotwin.atmocorr.dark_water import estimate_aot_dark_water
from eotwin.atmocorr.lut import load_lut
from eotwin.atmocorr.retrieval import DEFAULT_AOT
from eotwin.sentinel2.bands import S2_BANDS

GEOMETRY = dict(sza=35.0, vza=5.0, raa=100.0)
SOIL = (0.08, 0.10, 0.14, 0.18, 0.21, 0.23, 0.25, 0.27, 0.28, 0.28, 0.05, 0.32, 0.28)
CLEAR_WATER = (0.05, 0.045, 0.04, 0.022, 0.012, 0.004, 0.002, 0.0015, 0.001, 0.001, 0.0005, 0.0004, 0.0003)
TURBID_WATER = (0.06, 0.06, 0.07, 0.06, 0.05, 0.04, 0.035, 0.03, 0.028, 0.028, 0.01, 0.012, 0.009)
L2A = [i for i, b in enumerate(S2_BANDS) if b != "B10"]


def estimate_aot_dark_water_fits(lut, toa: np.ndarray, model: str):
    """The dark-water retrieval of ``toa``'s water pixels allowed only ``model`` (None: it does not fit)."""
    water = toa.reshape(toa.shape[0], -1)[:, toa[S2_BANDS.index("B08")].reshape(-1) < 0.05]
    bands = ("B08", "B11", "B12")
    flat = water[[S2_BANDS.index(b) for b in bands]]
    return estimate_aot_dark_water(flat, bands, lut, sensor="S2A", models=(model,), n_valid=flat.shape[1],
                                   wv=1.5, o3=0.33, **GEOMETRY)


@pytest.fixture(scope="module")
def lut():
    return load_lut()


def _scene(water: tuple[float, ...], water_share: float, size: int = 60, seed: int = 1) -> np.ndarray:
    """Bare soil (no dark vegetation anywhere) with ``water_share`` of the pixels water of spectrum ``water``."""
    rng = np.random.default_rng(seed)
    is_water = rng.random((size, size)) < water_share
    soil = np.array(SOIL)[:, None, None] * rng.uniform(0.9, 1.1, (len(S2_BANDS), size, size))
    spectrum = np.array(water)[:, None, None] * rng.uniform(0.8, 1.2, (len(S2_BANDS), size, size))
    return np.where(is_water, spectrum, soil)


def _toa(lut, surface, aerosol: str, aot: float) -> np.ndarray:
    terms = lut.terms_for("S2A", S2_BANDS, aerosol, aot, wv=1.5, o3=0.33, **GEOMETRY)
    return physics.forward(surface, terms).astype(np.float32)


@pytest.mark.parametrize(("aerosol", "aot"), [("continental", 0.4), ("maritime", 0.4), ("maritime", 0.15),
                                              ("continental", 0.1)])
def test_clear_water_gives_the_aot_and_the_aerosol_model(lut, aerosol, aot):
    surface = _scene(CLEAR_WATER, 0.3)
    result = dark_vegetation.ddv_correction(_toa(lut, surface, aerosol, aot), S2_BANDS, lut, sensor="S2A",
                                            wv=1.5, o3=0.33, **GEOMETRY)
    retrieval = result.retrieval
    assert retrieval.source.startswith("dark water (no DDV: too few dark pixels")
    assert not result.fallback and retrieval.n_used == retrieval.n_found > 0
    assert result.aot == pytest.approx(aot, abs=0.04)
    if aot >= 0.15:  # at low AOT both models fit black water about equally: the first (continental) is kept
        assert result.aerosol == aerosol
    assert abs(retrieval.water_surface["B08"]) < 0.003  # the clearest water's NIR is black again
    assert np.abs(result.boa[L2A] - surface[L2A]).max() < 0.01
    assert np.sqrt(np.mean((result.boa[L2A] - surface[L2A]) ** 2)) < 0.004


def test_turbid_water_is_not_taken_for_black(lut):
    result = dark_vegetation.ddv_correction(_toa(lut, _scene(TURBID_WATER, 0.3), "maritime", 0.3), S2_BANDS, lut,
                                            sensor="S2A", wv=1.5, o3=0.33, **GEOMETRY)
    assert result.fallback and result.retrieval.source.startswith("default (too few dark pixels")
    assert result.aot == min(DEFAULT_AOT, result.retrieval.cap)
    assert not result.retrieval.water_nir


def test_too_little_water_says_nothing(lut):
    result = dark_vegetation.ddv_correction(_toa(lut, _scene(CLEAR_WATER, 0.01), "maritime", 0.3), S2_BANDS, lut,
                                            sensor="S2A", wv=1.5, o3=0.33, **GEOMETRY)
    assert result.fallback and result.retrieval.source.startswith("default (too few dark pixels")


@pytest.mark.parametrize("aerosol", ["continental", "maritime"])
def test_the_wrong_model_leaves_the_nir_negative_or_brighter(lut, aerosol):
    """Black SWIR read under the wrong model: continental (too steep) leaves too much NIR path (negative
    B08), maritime (too flat) too little (a brighter B08 than under the right model)."""
    surface = _scene(CLEAR_WATER, 0.5)
    retrieval = dark_vegetation.estimate_aot_ddv(_toa(lut, surface, aerosol, 0.5), S2_BANDS, lut, sensor="S2A",
                                                 aerosol=None, wv=1.5, o3=0.33, **GEOMETRY)
    other = "maritime" if aerosol == "continental" else "continental"
    assert retrieval.aerosol == aerosol and abs(retrieval.water_nir[aerosol]) < 0.002
    # the other model is out: its fit left the NIR negative, or it could not fit (table end, SWIR residual),
    # or it left the NIR brighter than the right one did
    assert retrieval.water_nir[other] < -0.002 or retrieval.water_nir[other] > retrieval.water_nir[aerosol] or (
        estimate_aot_dark_water_fits(lut, _toa(lut, surface, aerosol, 0.5), other) is None)
    assert retrieval.aot == pytest.approx(0.5, abs=0.03)
