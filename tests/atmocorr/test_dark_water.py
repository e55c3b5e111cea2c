"""Aerosol from dark water (dark_water, and the DDV's use of it) on scenes made with the 6S table."""

from __future__ import annotations

import numpy as np
import pytest

from eotwin.atmocorr import dark_vegetation, physics
from eotwin.atmocorr.dark_water import estimate_aot_dark_water
from eotwin.atmocorr.dark_water import offshore as dark_water_offshore
from eotwin.atmocorr.lut import load_lut
from eotwin.atmocorr.retrieval import DEFAULT_AOT
from eotwin.sentinel2.bands import S2_BANDS

GEOMETRY = dict(sza=35.0, vza=5.0, raa=100.0)
SOIL = (0.08, 0.10, 0.14, 0.18, 0.21, 0.23, 0.25, 0.27, 0.28, 0.28, 0.05, 0.32, 0.28)
CLEAR_WATER = (0.05, 0.045, 0.04, 0.022, 0.012, 0.004, 0.002, 0.0015, 0.001, 0.001, 0.0005, 0.0004, 0.0003)
TURBID_WATER = (0.06, 0.06, 0.07, 0.06, 0.05, 0.04, 0.035, 0.03, 0.028, 0.028, 0.01, 0.012, 0.009)
L2A = [i for i, b in enumerate(S2_BANDS) if b != "B10"]


def estimate_aot_dark_water_fits(lut, toa: np.ndarray, model: str):
    """The dark-water retrieval of ``toa``'s open water allowed only ``model`` (None: it does not fit)."""
    open_water = dark_vegetation.open_water_mask(toa, S2_BANDS, lut, pixel_size=PIXEL_M, sensor="S2A", o3=0.33,
                                                 **GEOMETRY)
    water = toa.reshape(toa.shape[0], -1)[:, open_water.reshape(-1)]
    bands = ("B08", "B11", "B12")
    flat = water[[S2_BANDS.index(b) for b in bands]]
    return estimate_aot_dark_water(flat, bands, lut, sensor="S2A", models=(model,), n_valid=flat.shape[1],
                                   wv=1.5, o3=0.33, **GEOMETRY)


@pytest.fixture(scope="module")
def lut():
    return load_lut()


PIXEL_M = 60.0  # the scenes' pixel size: 60 px of water are 3.6 km, the middle of it open water


def _scene(water: tuple[float, ...], water_cols: int, size: int = 60, width: int = 100, seed: int = 1) -> np.ndarray:
    """Bare soil (no dark vegetation anywhere) with its last ``water_cols`` columns water of spectrum ``water``."""
    rng = np.random.default_rng(seed)
    is_water = np.zeros((size, width), dtype=bool)
    is_water[:, width - water_cols:] = True
    soil = np.array(SOIL)[:, None, None] * rng.uniform(0.9, 1.1, (len(S2_BANDS), size, width))
    spectrum = np.array(water)[:, None, None] * rng.uniform(0.8, 1.2, (len(S2_BANDS), size, width))
    return np.where(is_water, spectrum, soil)


def _ddv(lut, toa: np.ndarray, pixel_m: float = PIXEL_M):
    open_water = dark_vegetation.open_water_mask(toa, S2_BANDS, lut, pixel_size=pixel_m, sensor="S2A", o3=0.33,
                                                 **GEOMETRY)
    return dark_vegetation.ddv_correction(toa, S2_BANDS, lut, sensor="S2A", wv=1.5, o3=0.33, open_water=open_water,
                                          **GEOMETRY)


def _toa(lut, surface, aerosol: str, aot: float) -> np.ndarray:
    terms = lut.terms_for("S2A", S2_BANDS, aerosol, aot, wv=1.5, o3=0.33, **GEOMETRY)
    return physics.forward(surface, terms).astype(np.float32)


@pytest.mark.parametrize(("aerosol", "aot"), [("continental", 0.4), ("maritime", 0.4), ("maritime", 0.15),
                                              ("continental", 0.1)])
def test_clear_water_gives_the_aot_and_the_aerosol_model(lut, aerosol, aot):
    surface = _scene(CLEAR_WATER, 60)
    result = _ddv(lut, _toa(lut, surface, aerosol, aot))
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
    result = _ddv(lut, _toa(lut, _scene(TURBID_WATER, 60), "maritime", 0.3))
    assert result.fallback and result.retrieval.source.startswith("default (too few dark pixels")
    assert result.aot == min(DEFAULT_AOT, result.retrieval.cap)
    assert not result.retrieval.water_nir


def test_water_near_the_shore_says_nothing(lut):
    """A lake 600 m wide (10 px at 60 m): no pixel lies 1 km from land, where the shore's light (adjacency)
    and mixed pixels brighten the SWIR; the same lake as open water would give its AOT."""
    toa = _toa(lut, _scene(CLEAR_WATER, 10), "maritime", 0.3)
    result = _ddv(lut, toa)
    assert result.fallback and result.retrieval.source.startswith("default (too few dark pixels")
    assert _ddv(lut, toa, pixel_m=10.0).retrieval.source.startswith("default")  # 100 m wide at 10 m: still shore
    wide = _ddv(lut, _toa(lut, _scene(CLEAR_WATER, 60), "maritime", 0.3))
    assert wide.retrieval.source.startswith("dark water") and wide.aot == pytest.approx(0.3, abs=0.04)


def test_without_an_open_water_map_there_is_no_dark_water(lut):
    toa = _toa(lut, _scene(CLEAR_WATER, 60), "maritime", 0.3)
    result = dark_vegetation.ddv_correction(toa, S2_BANDS, lut, sensor="S2A", wv=1.5, o3=0.33, **GEOMETRY)
    assert result.retrieval.source.startswith("default (too few dark pixels")


def test_open_water_lies_a_kilometre_from_land():
    water = np.zeros((5, 40), dtype=bool)
    water[:, 10:] = True
    valid = np.ones_like(water)
    mask = dark_water_offshore(water, valid, 100.0)
    assert not mask[:, :19].any() and mask[:, 19:].all()  # 10 px of 100 m from the last land column (9)
    assert dark_water_offshore(np.ones_like(water), valid, 10.0).all()  # no land: all water counts
    valid[:, :10] = False  # the land is no data: nothing to keep away from
    assert dark_water_offshore(water, valid, 100.0)[:, 10:].all()


@pytest.mark.parametrize("aerosol", ["continental", "maritime"])
def test_the_wrong_model_leaves_the_nir_negative_or_brighter(lut, aerosol):
    """Black SWIR read under the wrong model: continental (too steep) leaves too much NIR path (negative
    B08), maritime (too flat) too little (a brighter B08 than under the right model)."""
    surface = _scene(CLEAR_WATER, 60)
    retrieval = _ddv(lut, _toa(lut, surface, aerosol, 0.5)).retrieval
    other = "maritime" if aerosol == "continental" else "continental"
    assert retrieval.aerosol == aerosol and abs(retrieval.water_nir[aerosol]) < 0.002
    # the other model is out: its fit left the NIR negative, or it could not fit (table end, SWIR residual),
    # or it left the NIR brighter than the right one did
    assert retrieval.water_nir[other] < -0.002 or retrieval.water_nir[other] > retrieval.water_nir[aerosol] or (
        estimate_aot_dark_water_fits(lut, _toa(lut, surface, aerosol, 0.5), other) is None)
    assert retrieval.aot == pytest.approx(0.5, abs=0.03)


def test_the_pipeline_maps_open_water_onto_its_scene_sample(lut):
    """The run's scene sample is a subset of an overview's pixels: the open-water map is made on the
    overview (decimated again when wide) and read back at the sample's pixels."""
    from types import SimpleNamespace

    from affine import Affine

    from eotwin.atmocorr.correctors import OPEN_WATER_MAX_SIDE, SceneSample, _open_water
    from eotwin.atmocorr.physics import Geometry
    from eotwin.sentinel2.bands import L2A_BANDS

    width = 2 * OPEN_WATER_MAX_SIDE  # decimated by 2 for the map
    surface = _scene(CLEAR_WATER, width // 2, size=40, width=width)
    toa = _toa(lut, surface, "maritime", 0.3)[[S2_BANDS.index(b) for b in L2A_BANDS]]
    index = np.arange(0, 40 * width, 7)
    sample = SceneSample(toa.reshape(12, -1)[:, index][:, None, :], np.ones((1, index.size), bool), {}, toa, 3,
                         index=index)
    product = SimpleNamespace(grid=SimpleNamespace(transform=Affine(20.0, 0, 0, 0, -20.0, 0)), spacecraft="S2A")
    got = _open_water(sample, product, lut, Geometry(**GEOMETRY), 1.5, 0.33)
    cols = index % width
    # 20 m x step 3 x 2 = 120 m per map pixel: 1 km is 9 map pixels (18 overview columns) past the shore
    assert got.shape == (1, index.size)
    assert not got[0, cols < width // 2 + 16].any() and got[0, cols >= width // 2 + 18].all()
    assert _open_water(SceneSample(sample.toa, sample.valid, {}), product, lut, Geometry(**GEOMETRY), 1.5, 0.33) is None
