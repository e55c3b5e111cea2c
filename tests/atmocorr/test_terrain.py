"""Altitude and slope in the 6S inversion: checked against 6S run at target altitude, and on known slopes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from eotwin.atmocorr import terrain
from eotwin.atmocorr.lut import load_lut
from eotwin.atmocorr.physics import forward_gain, relative_azimuth
from eotwin.atmocorr.sample_l1c import l1c_stack_tags
from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid
from eotwin.io.raster import write_geotiff
from eotwin.sentinel2.bands import L2A_BANDS, S2_BANDS
from eotwin.sentinel2.radiometry import QUANTIFICATION, RADIO_ADD_OFFSET, dn_to_boa

GEOMETRY = {"sun_zenith": 35.0, "sun_azimuth": 150.0, "view_zenith": 5.0, "view_azimuth": 105.0}
ATMOSPHERE = {"aot": 0.15, "wv": 1.5, "o3": 0.33, "aerosol": "continental"}
UTM = "EPSG:32632"


def test_table_at_altitude_matches_6s_run_at_that_altitude():
    """path within 0.0005 of 6S itself at 2.5 km (beyond the table's own error); sea level: 0.012 off."""
    from eotwin.atmocorr.sixs import simulate

    lut = load_lut()
    high = lut.at_pressure(float(terrain.pressure_ratio(2500.0)))
    for band in ("B02", "B04", "B8A"):
        ours = high.terms_for("S2A", (band,), "continental", 0.3, 40.0, 5.0, 60.0, 2.0, 0.35)
        sea = lut.terms_for("S2A", (band,), "continental", 0.3, 40.0, 5.0, 60.0, 2.0, 0.35)
        truth = simulate("S2A", band, aerosol="continental", aot=0.3, sza=40.0, vza=5.0, raa=60.0, wv=2.0, o3=0.35,
                         altitude_km=2.5)
        # off the table's nodes its own interpolation error comes on top: measured at sea level, same point
        at_sea = simulate("S2A", band, aerosol="continental", aot=0.3, sza=40.0, vza=5.0, raa=60.0, wv=2.0, o3=0.35)
        table_error = abs(sea.path[0] - at_sea.toa)
        assert abs(ours.path[0] - truth.toa) < table_error + 5e-4, band
        assert abs(ours.t_down[0] - truth.t_down) < 1e-3 + abs(sea.t_down[0] - at_sea.t_down), band
        assert abs(ours.t_up[0] - truth.t_up) < 1e-3 + abs(sea.t_up[0] - at_sea.t_up), band
        # the linear split of the spherical albedo is approximate (terrain.py): 0.012 at worst here, which moves
        # a surface of reflectance 0.3 by 0.001
        assert abs(ours.s_alb[0] - truth.s_alb) < 0.015, band
        if band == "B02":
            assert sea.path[0] - truth.toa > 0.012  # what the altitude changes


def test_stored_optical_depths_are_6s_own():
    from eotwin.atmocorr.sixs import optical_depths

    depths = terrain.load_optical_depths()
    ray, aer = optical_depths("S2B", "B03", "maritime")
    assert depths.rayleigh["S2B"]["B03"] == pytest.approx(ray, abs=1e-5)
    assert depths.aerosol_per_aot["S2B"]["maritime"]["B03"] == pytest.approx(aer, abs=1e-5)
    assert depths.tau("S2A", "B02", "continental", 0.0, 0.5) == pytest.approx(0.5 * depths.rayleigh["S2A"]["B02"])


def test_slope_and_aspect_of_known_planes():
    rows, cols = np.mgrid[0:5, 0:6].astype(float)
    east_down = 100.0 - 10.0 * cols * 0.1  # falls 1 m per 10 m pixel towards the east
    slope, aspect = terrain.slope_aspect(east_down, 10.0, 10.0)
    np.testing.assert_allclose(slope, np.arctan(0.1))
    np.testing.assert_allclose(np.degrees(aspect), 90.0)
    south_down = 100.0 - 2.0 * rows  # rows go south: falls 2 m per 10 m pixel towards the south
    slope, aspect = terrain.slope_aspect(south_down, 10.0, 10.0)
    np.testing.assert_allclose(slope, np.arctan(0.2))
    np.testing.assert_allclose(np.degrees(aspect), 180.0)


def test_incidence_on_slopes_facing_and_away_from_the_sun():
    slope = np.radians(20.0)
    facing = terrain.cos_incidence(40.0, 180.0, slope, np.radians(180.0))
    away = terrain.cos_incidence(40.0, 180.0, slope, 0.0)
    side = terrain.cos_incidence(40.0, 180.0, slope, np.radians(90.0))
    assert facing == pytest.approx(np.cos(np.radians(20.0)))
    assert away == pytest.approx(np.cos(np.radians(60.0)))
    assert side == pytest.approx(np.cos(np.radians(40.0)) * np.cos(slope))
    flat = terrain.illumination_factor(np.cos(np.radians(40.0)), 40.0, 0.3, 0.85, 0.0)
    assert flat == pytest.approx(1.0)
    lit = terrain.illumination_factor(facing, 40.0, 0.3, 0.85, slope)
    dark = terrain.illumination_factor(-0.5, 40.0, 0.3, 0.85, slope)
    assert lit > 1.0 and dark == pytest.approx(terrain.MIN_ILLUMINATION)


def test_elevations_no_ground_has_are_refused():
    with pytest.raises(EotwinError, match="outside"):
        terrain.pressure_ratio(np.array([100.0, 25000.0]))


def _grid(size: int) -> Grid:
    return Grid(Affine(20.0, 0, 500000.0, 0, -20.0, 5100000.0), size, size, UTM)


def _write_stack(path, toa: np.ndarray, grid: Grid) -> None:
    dn = np.clip(np.rint(toa * QUANTIFICATION - RADIO_ADD_OFFSET), 1, 65535).astype(np.uint16)
    tags = l1c_stack_tags("EOTWIN_TERRAIN_TEST_L1C", "Sentinel-2A", GEOMETRY, ATMOSPHERE, "test_terrain.py")
    write_geotiff(path, dn, grid, nodata=0, descriptions=list(S2_BANDS), tags=tags)


def _boa(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return dn_to_boa(src.read())


def test_flat_high_ground_made_by_6s_is_recovered_with_elevation_or_dem(tmp_path):
    """TOA computed by 6S itself at 1.8 km over two surfaces; --elevation and a flat --dem both recover them."""
    from eotwin.atmocorr import pipeline
    from eotwin.atmocorr.sixs import simulate

    size, altitude = 16, 1800.0
    surfaces = {"vegetation": 0.04, "soil": 0.25}  # one grey value per half: enough for the 6S check
    raa = float(relative_azimuth(GEOMETRY["sun_azimuth"], GEOMETRY["view_azimuth"]))
    toa = np.zeros((len(S2_BANDS), size, size), dtype=np.float64)
    truth = np.zeros_like(toa)
    for k, band in enumerate(S2_BANDS):
        for half, rho in enumerate(surfaces.values()):
            out = simulate("S2A", band, aerosol="continental", aot=ATMOSPHERE["aot"], sza=GEOMETRY["sun_zenith"],
                           vza=GEOMETRY["view_zenith"], raa=raa, wv=ATMOSPHERE["wv"], o3=ATMOSPHERE["o3"],
                           rho=rho, altitude_km=altitude / 1000.0) if band in L2A_BANDS else None
            toa[k, :, half * size // 2:(half + 1) * size // 2] = out.toa if out else 0.01
            truth[k, :, half * size // 2:(half + 1) * size // 2] = rho
    grid = _grid(size)
    _write_stack(tmp_path / "l1c.tif", toa, grid)
    dem = tmp_path / "dem.tif"
    write_geotiff(dem, np.full((1, size + 4, size + 4), altitude, dtype=np.float32),
                  Grid(Affine(20.0, 0, 500000.0 - 40, 0, -20.0, 5100000.0 + 40), size + 4, size + 4, UTM))
    # the water vapour is retrieved (B09/B8A): 6S's 1.5 g/cm2 is the column from sea level, less is above the ground
    common = dict(input=tmp_path / "l1c.tif", aot=ATMOSPHERE["aot"], ozone=ATMOSPHERE["o3"], aerosol="continental")
    sea = pipeline.run_correction(pipeline.make_options(output=tmp_path / "sea", **common))
    high = pipeline.run_correction(pipeline.make_options(output=tmp_path / "high", elevation=altitude, **common))
    with_dem = pipeline.run_correction(pipeline.make_options(output=tmp_path / "dem", dem=dem, **common))
    idx = [S2_BANDS.index(b) for b in L2A_BANDS]
    want = truth[idx]
    errors = {name: np.abs(_boa(r.files["l2a"]) - want).max(axis=(1, 2))
              for name, r in (("sea", sea), ("high", high), ("dem", with_dem))}
    blue = L2A_BANDS.index("B02")
    assert errors["sea"][blue] > 0.008  # sea-level physics leaves the missing Rayleigh in the blue
    # measured: 0.0004-0.0007 in B01-B09; B11/B12 0.0016/0.0021, as at sea level: their CO2/CH4 absorption is
    # kept at the sea-level column (terrain.py)
    for name in ("high", "dem"):
        assert errors[name].max() < 0.0025, (name, errors[name])
        assert errors[name][: L2A_BANDS.index("B09") + 1].max() < 0.001, (name, errors[name])
    assert high.atmosphere["elevation"] == altitude and with_dem.atmosphere["elevation"] == altitude
    item = json.loads((tmp_path / "dem" / "item.json").read_text())
    assert item["properties"]  # the run info travels into the STAC item as before


def test_slopes_facing_and_away_from_the_sun_are_corrected_with_the_dem(tmp_path):
    """A ridge (two planes) lit from the south-south-east: the tilted forward model is undone pixel by pixel."""
    from eotwin.atmocorr import pipeline

    size, rho = 24, 0.2
    grid = _grid(size)
    lut = load_lut()
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    grade = 0.35  # height rises 0.35 m per metre northwards in the south half, falls in the north half
    y = (size / 2 - np.abs(rows + 0.5 - size / 2)) * 20.0
    z = 1000.0 + grade * y
    write_geotiff(tmp_path / "dem.tif", z[None].astype(np.float32), grid)
    south_half = rows >= size / 2  # rises to the north: faces south, towards the sun
    slope = np.full((size, size), np.arctan(grade))
    aspect = np.where(south_half, np.pi, 0.0)
    p = terrain.pressure_ratio(z)
    cos_i = terrain.cos_incidence(GEOMETRY["sun_zenith"], GEOMETRY["sun_azimuth"], slope, aspect)
    raa = float(relative_azimuth(GEOMETRY["sun_azimuth"], GEOMETRY["view_azimuth"]))
    depths = terrain.load_optical_depths()
    toa = np.full((len(S2_BANDS), size, size), 0.05)
    for k, band in enumerate(S2_BANDS):
        if band not in L2A_BANDS:
            continue
        args = ("S2A", (band,), "continental", ATMOSPHERE["aot"], GEOMETRY["sun_zenith"], GEOMETRY["view_zenith"],
                raa, ATMOSPHERE["wv"], ATMOSPHERE["o3"])
        t, t0 = lut.terms_for(*args), lut.terms_for(*args[:3], 0.0, *args[4:])
        path = terrain.molecular_scaled(t.path[0], t0.path[0], p)
        gain = terrain.molecular_scaled((t.tg * t.t_down * t.t_up)[0], (t0.t_down * t0.t_up)[0], p, transmittance=True)
        s_alb = terrain.molecular_scaled(t.s_alb[0], t0.s_alb[0], p)
        t_down = terrain.molecular_scaled(t.t_down[0], t0.t_down[0], p, transmittance=True)
        factor = terrain.illumination_factor(cos_i, GEOMETRY["sun_zenith"],
                                             depths.tau("S2A", band, "continental", ATMOSPHERE["aot"], p), t_down,
                                             slope)
        toa[k] = forward_gain(np.asarray(rho, dtype=np.float64), path, gain, s_alb, illumination=factor)
    _write_stack(tmp_path / "l1c.tif", toa, grid)
    result = pipeline.run_correction(pipeline.make_options(
        input=tmp_path / "l1c.tif", output=tmp_path / "out", dem=tmp_path / "dem.tif", aot=ATMOSPHERE["aot"],
        wv=ATMOSPHERE["wv"], ozone=ATMOSPHERE["o3"], aerosol="continental"))
    boa = _boa(result.files["l2a"])
    inner = (slice(None), slice(2, size // 2 - 2), slice(1, -1)), (slice(None), slice(size // 2 + 2, -2), slice(1, -1))
    for part in inner:  # away from the ridge line and the edges, where the DEM's slope is the plane's
        assert np.abs(boa[part] - rho).max() < 0.002
    flat = pipeline.run_correction(pipeline.make_options(
        input=tmp_path / "l1c.tif", output=tmp_path / "flat", aot=ATMOSPHERE["aot"], wv=ATMOSPHERE["wv"],
        ozone=ATMOSPHERE["o3"], aerosol="continental", elevation=1000.0))
    flat_boa = _boa(flat.files["l2a"])
    nir = L2A_BANDS.index("B08")
    assert flat_boa[nir][south_half].mean() > rho + 0.02  # the sunlit slope looks brighter without the DEM
    assert flat_boa[nir][~south_half].mean() < rho - 0.02


def test_cli_refuses_elevation_with_dem(tmp_path, capsys):
    from eotwin.cli.main import run

    rc = run(["atmocorr", "run", str(tmp_path / "x.tif"), "-o", str(tmp_path / "o"), "--elevation", "100",
              "--dem", str(tmp_path / "d.tif")])
    assert rc != 0 and not (tmp_path / "o").exists()
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
