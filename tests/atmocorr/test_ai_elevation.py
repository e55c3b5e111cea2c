"""The AI on high ground (``--elevation``): the network reads the TOA the ground would give at sea level, the
surface is inverted with the 6S table at the ground's pressure; checked on scenes 6S itself made at 2 km;
the fallback gets the same height."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from eotwin.atmocorr.ai import synth
from eotwin.atmocorr.lut import DEFAULT_LUT_PATH
from eotwin.sentinel2.bands import L2A_BANDS

LUT = Path(os.environ.get("EOTWIN_ATMOCORR_LUT", DEFAULT_LUT_PATH))
SCORED = [L2A_BANDS.index(b) for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")]

pytest.importorskip("onnxruntime")


def test_the_table_of_the_ground_undoes_a_scene_made_by_6s_at_2_km(ben_mock_dir):
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.evaluation.heldout import mosaic
    from eotwin.atmocorr.physics import forward_gain
    from eotwin.atmocorr.sixs import simulate

    rng = np.random.default_rng(5)
    surface = mosaic(list(synth.ben_surfaces(ben_mock_dir, synth.TEST_SPLITS).values()), rng)
    true_aot, geometry = 0.3, {"sza": 35.0, "vza": 5.0, "raa": 60.0}
    terms = np.empty((3, len(L2A_BANDS), 1, 1))
    for i, band in enumerate(L2A_BANDS):
        r = simulate("S2A", band, aerosol="continental", aot=true_aot, wv=1.5, o3=0.33, altitude_km=2.0, **geometry)
        terms[:, i, 0, 0] = r.toa, r.tg * r.t_down * r.t_up, r.s_alb
    toa = forward_gain(surface.astype(np.float64), *terms).astype(np.float32)
    angles = np.array(list(geometry.values()), np.float32).reshape(3, 1, 1)
    model = OnnxModel(lut_path=LUT)
    results = {}
    for name, elevation in (("sea", None), ("ground", 2000.0), ("sea again", None)):
        model.use_elevation(elevation)
        boa, aot = model.predict(toa, angles, sensor="S2A", ozone=0.33)
        results[name] = (float(np.sqrt(np.nanmean((boa - surface) ** 2, axis=(1, 2)))[SCORED].mean()),
                         float(np.nanmean(aot)))
    # measured: mean RMSE 0.0101 -> 0.0024, scene AOT 0.026 -> 0.249 (truth 0.3)
    assert results["ground"][0] < 0.4 * results["sea"][0], results
    assert abs(results["ground"][1] - true_aot) < 0.25 * abs(results["sea"][1] - true_aot), results
    assert results["sea again"] == results["sea"]  # sea level is the table itself, nothing kept from before


def test_sea_level_toa_of_high_ground_is_what_6s_gives_at_sea_level():
    """The conversion the network's inputs go through: 6S's aerosol-free TOA at 2 km, converted, against 6S's
    at sea level over the same surfaces (the Rayleigh path the height removed comes back)."""
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.sixs import simulate

    model = OnnxModel(lut_path=LUT)
    geometry = {"sza": 40.0, "vza": 5.0, "raa": 100.0}
    surfaces = (0.03, 0.3)
    toa = {z: np.array([[[simulate("S2A", band, aerosol="continental", aot=0.0, wv=2.0, o3=0.33, rho=rho,
                                   altitude_km=z, **geometry).toa for rho in surfaces]] for band in L2A_BANDS],
                       np.float32) for z in (0.0, 2.0)}
    angles = np.array(list(geometry.values()), np.float32).reshape(3, 1, 1)
    model.use_elevation(2000.0)
    converted = model.sea_level_toa(toa[2.0], angles, "S2A")
    blue = L2A_BANDS.index("B02")
    assert (toa[0.0] - toa[2.0])[blue, 0, 0] > 0.01  # what the height takes away in the blue, over the dark one
    # in the bands scattering dominates; the others differ by the water vapour below 2 km (6S's column is from
    # sea level), which the conversion leaves to the network's water-vapour reading
    visible = [L2A_BANDS.index(b) for b in ("B01", "B02", "B03")]
    assert np.abs(converted - toa[0.0])[visible].max() < 0.001, np.abs(converted - toa[0.0]).max(axis=(1, 2))
    assert np.abs(converted - toa[0.0])[blue, 0, 0] < 0.05 * (toa[0.0] - toa[2.0])[blue, 0, 0]
    model.use_elevation(None)
    assert model.sea_level_toa(toa[2.0], angles, "S2A") is toa[2.0]


def test_elevation_is_taken_by_the_default_ai_and_its_fallback(sample_scene, tmp_path):
    """The sample scene lies beyond the OOD threshold: the 6s-ddv fallback runs at the given height too."""
    from eotwin.atmocorr import correctors, pipeline
    from eotwin.atmocorr.sample_l1c import make_sample_l1c

    l1c = make_sample_l1c(tmp_path / "in", sample_scene, lut_path=LUT).l1c
    options = pipeline.make_options(input=l1c, output=tmp_path / "ai", lut=LUT, elevation=1500.0)
    assert correctors.choose_method(options) == ("ai", "default")
    result = pipeline.run_correction(options)
    ddv = pipeline.run_correction(pipeline.make_options(input=l1c, output=tmp_path / "ddv", lut=LUT, method="6s-ddv",
                                                        elevation=1500.0, aot=result.atmosphere["aot"],
                                                        wv=result.atmosphere["wv"],
                                                        aerosol=result.atmosphere["aerosol"]))
    info = result.atmosphere
    assert info["fallback"].startswith("6s-ddv:") and info["elevation"] == 1500.0
    assert info["elevation_source"] == "given"
    import rasterio

    with rasterio.open(result.files["l2a"]) as ds, rasterio.open(ddv.files["l2a"]) as ref:
        assert np.abs(ds.read().astype(np.int32) - ref.read().astype(np.int32)).max() <= 1


def test_ai_with_a_dem_inverts_its_scene_atmosphere_per_pixel(ben_mock_dir, tmp_path):
    """``--dem`` with ai: the network reads the scene at the DEM's median height, and 6S with the DEM inverts its
    scene atmosphere per pixel (height and slopes): the same product as 6s-ddv --dem told that atmosphere."""
    import rasterio
    from affine import Affine

    from eotwin.atmocorr import pipeline
    from eotwin.atmocorr.evaluation.heldout import mosaic
    from eotwin.atmocorr.physics import forward_gain
    from eotwin.atmocorr.sample_l1c import l1c_stack_tags
    from eotwin.atmocorr.sixs import simulate
    from eotwin.geo.grid import Grid
    from eotwin.io.raster import write_geotiff
    from eotwin.sentinel2.bands import S2_BANDS
    from eotwin.sentinel2.radiometry import QUANTIFICATION, RADIO_ADD_OFFSET

    rng = np.random.default_rng(8)
    surface = mosaic(list(synth.ben_surfaces(ben_mock_dir, synth.TEST_SPLITS).values()), rng)
    geometry = {"sun_zenith": 35.0, "sun_azimuth": 150.0, "view_zenith": 5.0, "view_azimuth": 90.0}
    height, aot = 1500.0, 0.25
    toa = np.full((len(S2_BANDS), *surface.shape[1:]), 0.01)
    for band in L2A_BANDS:
        r = simulate("S2A", band, aerosol="continental", aot=aot, wv=1.5, o3=0.33, altitude_km=height / 1000,
                     sza=35.0, vza=5.0, raa=60.0)
        toa[S2_BANDS.index(band)] = forward_gain(surface[L2A_BANDS.index(band)].astype(np.float64), r.toa,
                                                 r.tg * r.t_down * r.t_up, r.s_alb)
    h, w = surface.shape[1:]
    grid = Grid(Affine(10.0, 0, 500000.0, 0, -10.0, 5100000.0), w, h, "EPSG:32632")
    dn = np.clip(np.rint(toa * QUANTIFICATION - RADIO_ADD_OFFSET), 1, 65535).astype(np.uint16)
    tags = l1c_stack_tags("EOTWIN_AI_DEM_TEST_L1C", "Sentinel-2A", geometry,
                          {"aot": aot, "wv": 1.5, "o3": 0.33, "aerosol": "continental"}, "test_ai_elevation.py")
    write_geotiff(tmp_path / "l1c.tif", dn, grid, nodata=0, descriptions=list(S2_BANDS), tags=tags)
    write_geotiff(tmp_path / "dem.tif", np.full((1, h // 2 + 4, w // 2 + 4), height, np.float32),
                  Grid(Affine(20.0, 0, 500000.0 - 40, 0, -20.0, 5100000.0 + 40), w // 2 + 4, h // 2 + 4, "EPSG:32632"))
    common = {"input": tmp_path / "l1c.tif", "lut": LUT, "ozone": 0.33}
    with_dem = pipeline.run_correction(pipeline.make_options(output=tmp_path / "ai", dem=tmp_path / "dem.tif", **common))
    flat = pipeline.run_correction(pipeline.make_options(output=tmp_path / "flat", **common))
    info = with_dem.atmosphere
    assert with_dem.method == "ai" and info["fallback"] == "none" and info["elevation"] == height, info
    assert info["aot_source"] == "network scene mean" and info["inversion"].startswith("6S with the DEM")
    told = pipeline.run_correction(pipeline.make_options(
        output=tmp_path / "told", method="6s-ddv", dem=tmp_path / "dem.tif", aot=info["aot"], wv=info["wv"],
        aerosol=info["aerosol"], **common))

    def boa(result) -> np.ndarray:
        with rasterio.open(result.files["l2a"]) as ds:
            return (ds.read([list(ds.descriptions).index(b) + 1 for b in L2A_BANDS]).astype(np.float64) - 1000) / 1e4

    got = boa(with_dem)
    assert np.abs(got - boa(told)).max() <= 2e-4  # the AOT and water vapour are rounded in the info
    scored = [L2A_BANDS.index(b) for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")]
    error = {name: float(np.sqrt(np.mean((b - surface) ** 2, axis=(1, 2)))[scored].mean())
             for name, b in (("dem", got), ("flat", boa(flat)))}
    # measured: 0.0020 with the DEM (network AOT 0.204, truth 0.25), 0.0083 at sea level
    assert error["dem"] < 0.6 * error["flat"], error
    with rasterio.open(with_dem.files["l2a"]) as ds:
        assert ds.tags()["ATMOCORR_METHOD"] == "ai"


def test_ai_kept_beyond_the_threshold_still_uses_the_dem(sample_scene, tmp_path):
    """``--no-ood-fallback`` with ``--dem``: the AI's atmosphere is kept, and still inverted with the DEM."""
    import rasterio

    from eotwin.atmocorr import pipeline
    from eotwin.atmocorr.sample_l1c import make_sample_l1c
    from eotwin.geo.grid import Grid
    from eotwin.io.raster import write_geotiff

    l1c = make_sample_l1c(tmp_path / "in", sample_scene, lut_path=LUT).l1c
    with rasterio.open(l1c) as ds:
        grid = Grid(ds.transform, ds.width, ds.height, ds.crs.to_string())
    write_geotiff(tmp_path / "dem.tif", np.full((1, grid.height, grid.width), 800.0, np.float32), grid)
    result = pipeline.run_correction(pipeline.make_options(input=l1c, output=tmp_path / "out", lut=LUT,
                                                           dem=tmp_path / "dem.tif", ood_fallback=False))
    info = result.atmosphere
    assert result.method == "ai" and info["fallback"].startswith("disabled"), info
    assert info["inversion"].startswith("6S with the DEM") and info["elevation"] == 800.0
