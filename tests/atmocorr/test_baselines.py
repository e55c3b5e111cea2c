"""DOS and DDV + 6S retrievals (dark_object, dark_vegetation, water_vapour) on synthetic scenes whose atmosphere is known."""

from __future__ import annotations

import numpy as np
import pytest

from eotwin.atmocorr import dark_object, dark_vegetation, physics, water_vapour
from eotwin.atmocorr.lut import load_lut
from eotwin.atmocorr.retrieval import DEFAULT_AOT
from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import S2_BANDS

ATMOSPHERE = dict(aot=0.25, sza=40.0, vza=6.0, raa=120.0, wv=1.5, o3=0.33)
GEOMETRY = {k: ATMOSPHERE[k] for k in ("sza", "vza", "raa")}


@pytest.fixture(scope="module")
def lut():
    return load_lut()


def _ddv_scene(seed: int = 5, size: int = 80, vegetation: bool = True, water: float = 0.10) -> np.ndarray:
    """(13, size, size) surface: dark dense vegetation obeying Kaufman's ratios, bare soil, ``water`` share of water."""
    rng = np.random.default_rng(seed)
    veg_share = 0.45 if vegetation else 0.0
    kind = rng.choice(3, size=(size, size), p=[veg_share, 1.0 - veg_share - water, water])
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
    boa, found = dark_object.dark_object_subtraction(surface + haze[:, None, None])
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
    _, dos1 = dark_object.dark_object_subtraction(toa)
    assert dos1[3] == pytest.approx(haze[3] + 0.14, abs=1e-5)  # DOS1 takes the NIR dark value for haze
    boa, modelled = dark_object.dark_object_subtraction(toa, bands=bands)
    np.testing.assert_allclose(modelled, haze, rtol=1e-4)
    np.testing.assert_allclose(boa, surface, atol=1e-5)


def test_dos_respects_the_valid_mask_and_rejects_empty_scenes():
    toa = np.full((2, 10, 10), 0.2, dtype=np.float32)
    toa[:, 0, 0] = 0.0  # a no-data pixel would pull the dark value down
    valid = np.ones((10, 10), dtype=bool)
    valid[0, 0] = False
    _, haze = dark_object.dark_object_subtraction(toa, valid)
    np.testing.assert_allclose(haze, [0.19, 0.19], atol=1e-6)
    with pytest.raises(EotwinError, match="at least one valid pixel"):
        dark_object.dark_object_subtraction(toa, np.zeros((10, 10), dtype=bool))


def test_ddv_retrieves_the_atmosphere_and_the_surface(lut):
    surface = _ddv_scene()
    toa = _toa(lut, surface, **ATMOSPHERE)
    result = dark_vegetation.ddv_correction(toa, S2_BANDS, lut, sensor="S2A", **GEOMETRY, o3=ATMOSPHERE["o3"])
    assert not result.fallback and result.n_dark > 1000 and result.swir_range == (0.01, 0.05)
    assert result.aot == pytest.approx(ATMOSPHERE["aot"], abs=0.01)
    assert result.wv == pytest.approx(ATMOSPHERE["wv"], abs=0.1)
    l2a = [i for i, b in enumerate(S2_BANDS) if b != "B10"]
    err = np.abs(result.boa[l2a] - surface[l2a])
    assert err.max() < 0.004
    # the physical baseline beats leaving TOA unchanged and beats DOS in the blue band
    dos, _ = dark_object.dark_object_subtraction(toa)
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
    result = dark_vegetation.ddv_correction(
        toa, S2_BANDS, lut, sensor="S2A", sza=sza, vza=6.0, raa=120.0, wv=1.5, o3=0.33
    )
    assert result.wv == 1.5 and result.boa.shape == surface.shape
    assert result.aot == pytest.approx(0.25, abs=0.01)


def test_ddv_falls_back_to_the_default_aot_without_vegetation(lut):
    surface = _ddv_scene(vegetation=False, size=40, water=0.0)  # no water either (that has its own retrieval)
    toa = _toa(lut, surface, **ATMOSPHERE)
    result = dark_vegetation.ddv_correction(toa, S2_BANDS, lut, sensor="S2A", **GEOMETRY, wv=1.5)
    assert result.fallback and result.n_dark == 0 and result.aot == DEFAULT_AOT
    assert result.retrieval.source.startswith("default (too few dark pixels: 0 < 50)")
    assert result.aerosol == "continental" and result.retrieval.swir_range is None


def _vegetation(surface: np.ndarray) -> np.ndarray:
    """The dark dense vegetation of :func:`_ddv_scene` (its only pixels with SWIR between 0.015 and 0.045)."""
    swir = surface[S2_BANDS.index("B12")]
    return (swir >= 0.0149) & (swir <= 0.0451)


def _swap_ddv(surface: np.ndarray, share: float, seed: int, **spectrum: float) -> np.ndarray:
    """``surface`` with a random ``share`` of its dark vegetation pixels given another spectrum."""
    band = {b: i for i, b in enumerate(S2_BANDS)}
    veg = np.flatnonzero(_vegetation(surface).ravel())
    pick = np.random.default_rng(seed).choice(veg, size=round(share * veg.size), replace=False)
    out = surface.reshape(surface.shape[0], -1).copy()
    for name, value in spectrum.items():
        out[band[name], pick] = value
    return out.reshape(surface.shape)


def test_ddv_widens_the_swir_range_in_turn_like_sen2cor(lut):
    surface = _ddv_scene(seed=3, size=60)
    band = {b: i for i, b in enumerate(S2_BANDS)}
    veg = _vegetation(surface)
    # the vegetation's SWIR reflectance raised to 0.06-0.09 (Kaufman's ratios kept): beyond sen2cor's first range
    swir = surface[band["B12"]][veg] + 0.045
    surface[band["B12"]][veg], surface[band["B04"]][veg], surface[band["B02"]][veg] = swir, 0.5 * swir, 0.25 * swir
    result = dark_vegetation.ddv_correction(_toa(lut, surface, **ATMOSPHERE), S2_BANDS, lut, sensor="S2A", **GEOMETRY,
                                      wv=1.5, o3=0.33)
    assert result.swir_range == (0.01, 0.10) and not result.fallback
    assert result.aot == pytest.approx(0.25, abs=0.01)


def test_ddv_sets_water_aside(lut):
    """Pixels that pass the SWIR and NDVI tests but are water (NIR < 0.05, SWIR-1 < 0.03, NDWI > 0) and
    brighter in the visible than Kaufman's ratios would pull the AOT down if they were counted."""
    surface = _ddv_scene(seed=4, size=60)
    band = {b: i for i, b in enumerate(S2_BANDS)}
    n_veg = int(_vegetation(surface).sum())
    n_water_before = int((surface[band["B08"]] < 0.05).sum())
    surface = _swap_ddv(surface, 0.45, 1, B02=0.03, B03=0.06, B04=0.014, B08=0.045, B8A=0.045, B09=0.045,
                        B11=0.025, B12=0.02)
    toa = _toa(lut, surface, **ATMOSPHERE)
    retrieval = dark_vegetation.estimate_aot_ddv(toa, S2_BANDS, lut, sensor="S2A", aerosol="continental", wv=1.5,
                                           o3=0.33, **GEOMETRY)
    n_swapped = round(0.45 * n_veg)
    assert retrieval.excluded["water"] == n_water_before + n_swapped
    assert retrieval.n_found == n_veg - n_swapped  # only the vegetation left is dark dense vegetation
    assert retrieval.source == "ddv" and retrieval.aot == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("aerosol", ["continental", "maritime"])
def test_ddv_picks_the_aerosol_model_the_scene_was_made_with(lut, aerosol):
    surface = _ddv_scene(seed=6, size=60)
    terms = lut.terms_for("S2A", S2_BANDS, aerosol, **{**ATMOSPHERE, "aot": 0.3})
    toa = physics.forward(surface, terms).astype(np.float32)
    result = dark_vegetation.ddv_correction(toa, S2_BANDS, lut, sensor="S2A", **GEOMETRY, o3=0.33)
    other = "maritime" if aerosol == "continental" else "continental"
    assert result.aerosol == aerosol and result.retrieval.aerosol == aerosol
    assert result.retrieval.mismatch[aerosol] < 0.005 < 0.03 < result.retrieval.mismatch[other]
    assert result.aot == pytest.approx(0.3, abs=0.01) and result.wv == pytest.approx(1.5, abs=0.1)
    l2a = [i for i, b in enumerate(S2_BANDS) if b != "B10"]
    assert np.abs(result.boa[l2a] - surface[l2a]).max() < 0.004


def test_ddv_falls_back_when_the_red_and_blue_ratios_disagree(lut):
    """Dark vegetation far bluer than Kaufman's ratio: its blue asks for no aerosol, its red for 0.25."""
    surface = _ddv_scene(seed=7, size=60, water=0.0)
    band = {b: i for i, b in enumerate(S2_BANDS)}
    veg = _vegetation(surface)
    surface[band["B02"]][veg] = surface[band["B12"]][veg] * 0.25 + 0.06
    retrieval = dark_vegetation.estimate_aot_ddv(_toa(lut, surface, **ATMOSPHERE), S2_BANDS, lut, sensor="S2A",
                                           aerosol=None, wv=1.5, o3=0.33, **GEOMETRY)
    assert retrieval.fallback and retrieval.source.startswith("default (dark pixels disagree")
    assert retrieval.aot == DEFAULT_AOT and retrieval.n_used == 0 and retrieval.n_found > 1000


def test_ddv_aot_never_exceeds_what_the_darkest_pixels_allow(lut):
    """Vegetation brighter in red and blue than Kaufman's ratios reads as a thick haze; black water
    (1 % of the scene, surface 0.002 in blue and red) shows the path can be no brighter than that."""
    surface = _ddv_scene(seed=8, size=60)
    band = {b: i for i, b in enumerate(S2_BANDS)}
    veg = _vegetation(surface)
    surface[band["B04"]][veg] *= 2.0
    surface[band["B02"]][veg] *= 2.0
    water = surface[band["B08"]] < 0.01
    surface[band["B02"]][water] = surface[band["B04"]][water] = 0.002
    aot = 0.1
    toa = _toa(lut, surface, **{**ATMOSPHERE, "aot": aot})
    retrieval = dark_vegetation.estimate_aot_ddv(toa, S2_BANDS, lut, sensor="S2A", aerosol="continental", wv=1.5,
                                           o3=0.33, **GEOMETRY)
    uncapped = 0.5 * (retrieval.aot_red + retrieval.aot_blue)
    assert retrieval.source == "ddv, capped by the darkest pixels"
    assert aot < retrieval.aot == retrieval.cap < 0.2 < uncapped  # the cap allows 0.007 below black water


def test_water_vapour_beyond_the_table_is_flagged_not_silently_clamped(lut):
    surface = _ddv_scene(seed=9, size=40)
    wv_max = float(lut.axes["wv"][-1])
    toa = _toa(lut, surface, **{**ATMOSPHERE, "wv": wv_max})
    b09 = S2_BANDS.index("B09")
    inside = water_vapour.retrieve_water_vapour(toa[S2_BANDS.index("B8A")], toa[b09], lut, sensor="S2A",
                                             aerosol="continental", aot=0.25, o3=0.33, **GEOMETRY)
    assert inside.wv == pytest.approx(wv_max, abs=0.1)
    wetter = toa.copy()
    wetter[b09] *= 0.85  # more absorption at 945 nm than the wettest node gives
    result = dark_vegetation.ddv_correction(wetter, S2_BANDS, lut, sensor="S2A", **GEOMETRY, o3=0.33)
    water = result.water
    assert water.edge == "upper" and result.wv == wv_max
    assert water.above == water.pixels > 1000 and water.below == 0
    assert water.warning(lut.axes["wv"]).startswith(
        f"water vapour clamped to the 6S table's upper edge ({wv_max:g} g/cm2): {water.pixels} of"
    )
    drier = dark_vegetation.ddv_correction(_toa(lut, surface, **ATMOSPHERE), S2_BANDS, lut, sensor="S2A", **GEOMETRY,
                                     o3=0.33)
    assert drier.water.edge is None and drier.water.above == drier.water.below == 0
    assert drier.water.warning(lut.axes["wv"]) is None


def test_dos_through_6s_beats_no_correction_in_every_band_where_plain_dos_does_not(lut):
    surface = _ddv_scene(seed=10, size=60)
    toa = _toa(lut, surface, **ATMOSPHERE)
    l2a = [i for i, b in enumerate(S2_BANDS) if b != "B10"]
    bands = [S2_BANDS[i] for i in l2a]
    result = dark_object.dos_correction(toa[l2a], bands, lut, sensor="S2A", **GEOMETRY, o3=0.33)
    plain, _ = dark_object.dark_object_subtraction(toa[l2a], bands=bands)

    def bias(img: np.ndarray) -> np.ndarray:
        return (img - surface[l2a]).reshape(len(l2a), -1).mean(axis=1)

    assert result.retrieval.source == "dark object" and 0.15 < result.aot < 0.35
    assert (np.abs(bias(result.boa)) < np.abs(bias(toa[l2a]))).all()
    nir = bands.index("B08")
    assert abs(bias(plain)[nir]) > abs(bias(toa[l2a])[nir])  # plain DOS: worse than nothing in the NIR


def test_bad_inputs_are_one_line_errors(lut):
    toa = np.zeros((12, 5, 5), dtype=np.float32)
    with pytest.raises(EotwinError, match="13 band names"):
        dark_vegetation.ddv_correction(toa, S2_BANDS, lut, sensor="S2A", **GEOMETRY)
    with pytest.raises(EotwinError, match="must be floating point"):
        physics.lut_correction(
            np.zeros((13, 5, 5), dtype=np.uint16),
            S2_BANDS,
            lut,
            sensor="S2A",
            atmosphere=physics.Atmosphere(0.1, 1.0),
            geometry=physics.Geometry(**GEOMETRY),
        )
    with pytest.raises(EotwinError, match="needs bands B02, B04, B08 and B12"):
        dark_vegetation.estimate_aot_ddv(
            np.zeros((2, 5, 5), dtype=np.float32),
            ("B02", "B04"),
            lut,
            sensor="S2A",
            aerosol="continental",
            wv=1.0,
            **GEOMETRY,
        )
    with pytest.raises(EotwinError, match="unknown Sentinel-2 spacecraft"):
        physics.lut_correction(
            np.zeros((13, 5, 5), dtype=np.float32),
            S2_BANDS,
            lut,
            sensor="Landsat-8",
            atmosphere=physics.Atmosphere(0.1, 1.0),
            geometry=physics.Geometry(**GEOMETRY),
        )


def test_open_water_gets_a_flagged_default_water_vapour_and_its_aot_from_the_water(lut):
    """No pixel bright enough in B8A to measure water vapour (open water): the table's reference water
    vapour, saying it is a default; the AOT from the water's black SWIR (:mod:`.dark_water`)."""
    water = np.array([0.05, 0.045, 0.04, 0.022, 0.012, 0.006, 0.004, 0.003, 0.002, 0.002, 0.001, 0.0005, 0.0003])
    surface = np.broadcast_to(water[:, None, None], (13, 30, 30)) * np.random.default_rng(11).uniform(
        0.9, 1.1, (13, 30, 30)
    )
    toa = _toa(lut, surface, **ATMOSPHERE)
    b8a, b09 = toa[S2_BANDS.index("B8A")], toa[S2_BANDS.index("B09")]
    kwargs = dict(sensor="S2A", aerosol="continental", **GEOMETRY)
    with pytest.raises(EotwinError, match=r"at least 10 valid pixels with B8A reflectance above 0\.02"):
        water_vapour.retrieve_water_vapour(b8a, b09, lut, **kwargs)
    open_water = dark_vegetation.open_water_mask(toa, S2_BANDS, lut, pixel_size=60.0, sensor="S2A", o3=0.33,
                                                 **GEOMETRY)
    assert open_water.all()  # water only: no shore in sight
    result = dark_vegetation.ddv_correction(toa, S2_BANDS, lut, sensor="S2A", **GEOMETRY, o3=0.33,
                                            open_water=open_water)
    assert result.wv == lut.wv_ref and result.water.source.startswith("default (only 0 pixels with B8A")
    assert result.water.warning(lut.axes["wv"]).startswith(f"water vapour {lut.wv_ref:g} g/cm2 is a default")
    assert result.retrieval.source.startswith("dark water (no DDV: too few dark pixels")
    assert result.retrieval.excluded["water"] == 900 and result.aerosol == "continental"
    assert result.aot == pytest.approx(ATMOSPHERE["aot"], abs=0.05)


def test_dos_without_a_dark_object_takes_the_default_aot_and_says_so(lut):
    """A bright desert (no pixel near 1 % in the visible): the dark object would read it all as haze."""
    sand = np.array([0.15, 0.18, 0.24, 0.32, 0.36, 0.38, 0.40, 0.42, 0.44, 0.44, 0.05, 0.55, 0.50])
    surface = np.broadcast_to(sand[:, None, None], (13, 30, 30)) * np.random.default_rng(12).uniform(
        0.85, 1.15, (13, 30, 30)
    )
    toa = _toa(lut, surface, **ATMOSPHERE)
    result = dark_object.dos_correction(toa, S2_BANDS, lut, sensor="S2A", **GEOMETRY, o3=0.33)
    assert result.retrieval.source.startswith("default (no dark object")
    assert result.aot == DEFAULT_AOT
    dos = dark_object.estimate_aot_dark_object(toa, S2_BANDS, lut, sensor="S2A", aerosol="continental", wv=1.5,
                                             o3=0.33, **GEOMETRY)
    assert dos.fallback
