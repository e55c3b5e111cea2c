"""The CAMS aerosol forecast of an L1C (AUX_CAMSFO GRIB): read into L1CProduct, and used by 6s-ddv for the
aerosol model and, where the scene has no usable dark pixels, the AOT."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from eotwin.errors import EotwinError
from eotwin.sentinel2.cams import CamsAerosol, read_cams
from eotwin.sentinel2.products import open_l1c
from tests.sentinel2.test_ecmwf import grib_message
from tests.sentinel2.test_products import TL_0509, build_safe

AUX = str(Path(TL_0509).parent / "AUX_DATA" / "AUX_CAMSFO")
# like a real AUX_CAMSFO: total AOD, its species, and the model's surface geopotential (m2 s-2)
MARINE = (grib_message(210207, [0.30, 0.32, 0.34, 0.36, 0.38, 0.40]) + grib_message(210208, [0.25] * 6)
          + grib_message(210209, [0.03] * 6) + grib_message(210212, [0.06] * 6, edition=2)
          + grib_message(129, [9806.65] * 6))


def test_tile_means_species_and_the_aerosol_model():
    cams = read_cams(MARINE)
    assert cams.aod550 == pytest.approx(0.35, abs=1e-3)
    assert cams.species == pytest.approx({"sea salt": 0.25, "dust": 0.03, "sulphate": 0.06}, abs=1e-3)
    assert cams.sea_salt_share == pytest.approx(0.25 / 0.34, abs=1e-3)
    assert cams.aerosol_model == "maritime" and cams.surface_height_m == pytest.approx(1000.0, abs=0.5)
    dusty = read_cams(grib_message(210207, [0.6] * 6) + grib_message(210208, [0.05] * 6)
                      + grib_message(210209, [0.5] * 6))
    assert dusty.aerosol_model == "continental" and dusty.surface_height_m is None
    assert read_cams(grib_message(210207, [0.2] * 6)).aerosol_model is None  # no species split: no choice


def test_bad_cams_data_are_one_line_errors(tmp_path):
    for data, match in ((grib_message(206, [0.006] * 6), r"no total aerosol optical depth .*paramId 210207"),
                        (grib_message(210207, [7.0] * 6), "outside"), (b"junk", "not a GRIB file"),
                        (MARINE[:50], "truncated or corrupt")):
        with pytest.raises(EotwinError, match=match) as info:
            read_cams(data)
        assert "\n" not in str(info.value)
    with pytest.raises(EotwinError, match="cannot read"):
        read_cams(tmp_path / "missing")


def test_a_safe_with_aux_camsfo_carries_the_forecast(shared_fixtures, tmp_path):
    plain = build_safe(shared_fixtures, tmp_path / "plain")
    assert open_l1c(plain).cams is None
    safe = tmp_path / "with" / plain.name
    shutil.copytree(plain, safe)
    (safe / AUX).parent.mkdir(parents=True, exist_ok=True)
    (safe / AUX).write_bytes(MARINE)
    product = open_l1c(safe)
    assert product.cams == read_cams(MARINE)
    (safe / AUX).write_bytes(MARINE[:50])  # a damaged forecast is an error, not a silent default
    with pytest.raises(EotwinError, match="AUX_CAMSFO"):
        open_l1c(safe)


# ----------------------------------------------------------------------------- in 6s-ddv
def _bright_stack(path: Path, atmosphere: dict) -> np.ndarray:
    """A desert-like L1C stack (no dark pixels) made with the 6S table; returns its surface (12, h, w)."""
    from eotwin.atmocorr.lut import load_lut
    from eotwin.atmocorr.physics import forward_gain, relative_azimuth
    from eotwin.atmocorr.sample_l1c import l1c_stack_tags
    from eotwin.geo.grid import Grid
    from eotwin.io.raster import write_geotiff
    from eotwin.sentinel2.bands import L2A_BANDS, S2_BANDS
    from eotwin.sentinel2.radiometry import QUANTIFICATION, RADIO_ADD_OFFSET

    geometry = {"sun_zenith": 35.0, "sun_azimuth": 150.0, "view_zenith": 5.0, "view_azimuth": 105.0}
    rng = np.random.default_rng(2)
    size = 48
    # sand: brighter towards the SWIR, a little texture
    base = np.array([0.12, 0.15, 0.22, 0.30, 0.34, 0.37, 0.39, 0.41, 0.42, 0.42, 0.50, 0.48])
    surface = base[:, None, None] * (1 + 0.08 * rng.standard_normal((1, size, size)))
    lut = load_lut()
    raa = float(relative_azimuth(geometry["sun_azimuth"], geometry["view_azimuth"]))
    t = lut.terms_for("S2A", L2A_BANDS, atmosphere["aerosol"], atmosphere["aot"], geometry["sun_zenith"],
                      geometry["view_zenith"], raa, atmosphere["wv"], atmosphere["o3"])
    toa = np.full((len(S2_BANDS), size, size), 0.3)
    for i, band in enumerate(L2A_BANDS):
        toa[S2_BANDS.index(band)] = forward_gain(surface[i], t.path[i], (t.tg * t.t_down * t.t_up)[i], t.s_alb[i])
    dn = np.clip(np.rint(toa * QUANTIFICATION - RADIO_ADD_OFFSET), 1, 65535).astype(np.uint16)
    grid = Grid(Affine(20.0, 0, 500000.0, 0, -20.0, 2700000.0), size, size, "EPSG:32629")
    write_geotiff(path, dn, grid, nodata=0, descriptions=list(S2_BANDS),
                  tags=l1c_stack_tags("EOTWIN_CAMS_TEST_L1C", "Sentinel-2A", geometry, atmosphere, "test_cams.py"))
    return surface


def test_ddv_takes_the_cams_aot_where_no_dark_pixel_is_and_its_aerosol_model(tmp_path, monkeypatch):
    """A desert under maritime air at AOT 0.35: without dark pixels 6s-ddv assumed continental AOT 0.2;
    with the product's CAMS forecast it corrects with the forecast's AOT and model."""
    from eotwin.atmocorr import pipeline
    from eotwin.sentinel2.bands import L2A_BANDS

    atmosphere = {"aot": 0.35, "wv": 1.5, "o3": 0.33, "aerosol": "maritime"}
    surface = _bright_stack(tmp_path / "l1c.tif", atmosphere)
    options = {"input": tmp_path / "l1c.tif", "method": "6s-ddv", "ozone": 0.33}
    without = pipeline.run_correction(pipeline.make_options(output=tmp_path / "without", **options))
    forecast = CamsAerosol(aod550=0.35, species={"sea salt": 0.25, "dust": 0.05, "sulphate": 0.05})
    opened = pipeline._open_input
    monkeypatch.setattr(pipeline, "_open_input", lambda o: dataclasses.replace(opened(o), cams=forecast))
    with_cams = pipeline.run_correction(pipeline.make_options(output=tmp_path / "with", **options))
    assert without.atmosphere["aot_source"].startswith("default")
    info = with_cams.atmosphere
    assert info["aot"] == pytest.approx(0.35) and info["aot_source"].startswith("CAMS AUX_CAMSFO")
    assert info["aerosol"] == "maritime" and info["aerosol_source"].startswith("CAMS AUX_CAMSFO")

    def rmse(result) -> float:
        with rasterio.open(result.files["l2a"]) as ds:
            boa = (ds.read([list(ds.descriptions).index(b) + 1 for b in L2A_BANDS]).astype(float) - 1000) / 1e4
        return float(np.sqrt(np.mean((boa - surface) ** 2)))

    assert rmse(with_cams) < 0.002 < 0.005 < rmse(without), (rmse(with_cams), rmse(without))


def test_ddv_over_vegetation_keeps_its_aot_and_takes_the_cams_model(sample_scene, tmp_path, monkeypatch):
    """Dense vegetation gives the AOT; the model comes from the forecast's species, not Kaufman's ratios."""
    from eotwin.atmocorr import pipeline
    from eotwin.atmocorr.sample_l1c import make_sample_l1c

    l1c = make_sample_l1c(tmp_path / "in", sample_scene).l1c
    options = {"input": l1c, "method": "6s-ddv"}
    plain = pipeline.run_correction(pipeline.make_options(output=tmp_path / "plain", **options))
    opened = pipeline._open_input
    for model, species in (("maritime", {"sea salt": 0.3, "sulphate": 0.05}),
                           ("continental", {"sea salt": 0.02, "dust": 0.3})):
        forecast = CamsAerosol(aod550=0.9, species=species)
        monkeypatch.setattr(pipeline, "_open_input", lambda o, f=forecast: dataclasses.replace(opened(o), cams=f))
        info = pipeline.run_correction(pipeline.make_options(output=tmp_path / model, **options)).atmosphere
        assert info["aerosol"] == model and info["aerosol_source"].startswith("CAMS AUX_CAMSFO")
        assert info["aot_source"].startswith("ddv") and info["aot"] != 0.9  # the dark pixels' AOT, not CAMS's
        if model == plain.atmosphere["aerosol"]:
            assert info["aot"] == plain.atmosphere["aot"]


def test_stack_tags_round_trip_and_bad_tags_are_one_line_errors():
    from eotwin.sentinel2.cams import from_stack_tags, stack_tags

    cams = read_cams(MARINE)
    back = from_stack_tags(stack_tags(cams), "l1c.tif")
    assert back.aod550 == pytest.approx(cams.aod550, abs=1e-5) and back.aerosol_model == cams.aerosol_model
    assert from_stack_tags({"OZONE": "0.3"}, "l1c.tif") is None
    for tags, match in (({"CAMS_AOD550": "x"}, "not a number"), ({"CAMS_AOD550": "9"}, "outside"),
                        ({"CAMS_AOD550": "0.2", "CAMS_SSAOD550": "-1"}, "non-negative")):
        with pytest.raises(EotwinError, match=match) as info:
            from_stack_tags(tags, "l1c.tif")
        assert "\n" not in str(info.value) and "l1c.tif" in str(info.value)


def test_the_cams_orography_is_the_ground_height_when_none_is_given(tmp_path):
    """TOA made by 6S itself at 1.5 km; the stack's CAMS_SURFACE_HEIGHT says 1500 m: 6s-ddv and ai take it
    without --elevation (and say so); --elevation 0 refuses it and leaves the Rayleigh error in the blue."""
    from eotwin.atmocorr import pipeline
    from eotwin.atmocorr.physics import relative_azimuth
    from eotwin.atmocorr.sample_l1c import l1c_stack_tags
    from eotwin.atmocorr.sixs import simulate
    from eotwin.geo.grid import Grid
    from eotwin.io.raster import write_geotiff
    from eotwin.sentinel2.bands import L2A_BANDS, S2_BANDS
    from eotwin.sentinel2.radiometry import QUANTIFICATION, RADIO_ADD_OFFSET

    geometry = {"sun_zenith": 35.0, "sun_azimuth": 150.0, "view_zenith": 5.0, "view_azimuth": 105.0}
    atmosphere = {"aot": 0.15, "wv": 1.5, "o3": 0.33, "aerosol": "continental"}
    raa = float(relative_azimuth(geometry["sun_azimuth"], geometry["view_azimuth"]))
    size, surfaces = 16, (0.04, 0.25)
    toa = np.full((len(S2_BANDS), size, size), 0.01)
    truth = np.zeros((len(L2A_BANDS), size, size))
    for k, band in enumerate(L2A_BANDS):
        for half, rho in enumerate(surfaces):
            out = simulate("S2A", band, aerosol="continental", aot=0.15, sza=35.0, vza=5.0, raa=raa, wv=1.5, o3=0.33,
                           rho=rho, altitude_km=1.5)
            toa[S2_BANDS.index(band), :, half * size // 2:(half + 1) * size // 2] = out.toa
            truth[k, :, half * size // 2:(half + 1) * size // 2] = rho
    tags = {**l1c_stack_tags("EOTWIN_CAMS_HEIGHT_L1C", "Sentinel-2A", geometry, atmosphere, "test_cams.py"),
            "CAMS_AOD550": "0.15", "CAMS_SURFACE_HEIGHT": "1500.0"}
    dn = np.clip(np.rint(toa * QUANTIFICATION - RADIO_ADD_OFFSET), 1, 65535).astype(np.uint16)
    write_geotiff(tmp_path / "l1c.tif", dn, Grid(Affine(20.0, 0, 500000.0, 0, -20.0, 5100000.0), size, size,
                                                 "EPSG:32632"), nodata=0, descriptions=list(S2_BANDS), tags=tags)
    given = {"input": tmp_path / "l1c.tif", "method": "6s-ddv", "aot": 0.15, "wv": 1.5, "ozone": 0.33,
             "aerosol": "continental"}
    own = pipeline.run_correction(pipeline.make_options(output=tmp_path / "own", **given))
    sea = pipeline.run_correction(pipeline.make_options(output=tmp_path / "sea", elevation=0.0, **given))
    assert own.atmosphere["elevation"] == 1500.0 and own.atmosphere["elevation_source"].startswith("CAMS")
    assert sea.atmosphere["elevation_source"] == "given"

    def blue_error(result) -> float:
        with rasterio.open(result.files["l2a"]) as ds:
            boa = (ds.read(list(ds.descriptions).index("B02") + 1).astype(float) - 1000) / 1e4
        return float(np.abs(boa - truth[L2A_BANDS.index("B02")]).max())

    assert blue_error(own) < 0.002 < 0.006 < blue_error(sea), (blue_error(own), blue_error(sea))
    ai = pipeline.run_correction(pipeline.make_options(input=tmp_path / "l1c.tif", output=tmp_path / "ai",
                                                       ozone=0.33)).atmosphere
    assert ai["elevation"] == 1500.0 and ai["elevation_source"].startswith("CAMS")
