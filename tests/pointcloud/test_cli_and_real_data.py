"""The ``eotwin pointcloud`` commands on real fixtures, and every kind of bad input."""

from __future__ import annotations

import json

import laspy
import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS, Transformer

from eotwin.cli.main import run
from eotwin.geo.grid import Grid
from eotwin.io.raster import write_geotiff
from eotwin.pointcloud.pipeline import build_point_cloud, make_options, prefetch

RICO = "s2img/rico-hdl/Major-TOM-Core/S2L2A/0U/0U_199R/S2A_MSIL2A_20220706T085611_N0400_R007_T33NZA_20220706T153419"


def bilinear_at(path, lon, lat):
    """Independent bilinear interpolation of a north-up raster at (lon, lat) in its own CRS (NaN if any corner is NaN)."""
    with rasterio.open(path) as ds:
        data = ds.read(1).astype(np.float64)
        inv = ~ds.transform
    c, r = inv @ (lon, lat)
    c, r = c - 0.5, r - 0.5
    c0, r0 = np.floor(c).astype(int), np.floor(r).astype(int)
    fc, fr = c - c0, r - r0
    ok = (c0 >= 0) & (r0 >= 0) & (c0 + 1 < data.shape[1]) & (r0 + 1 < data.shape[0])
    c0, r0 = np.clip(c0, 0, data.shape[1] - 2), np.clip(r0, 0, data.shape[0] - 2)
    value = (data[r0, c0] * (1 - fc) * (1 - fr) + data[r0, c0 + 1] * fc * (1 - fr)
             + data[r0 + 1, c0] * (1 - fc) * fr + data[r0 + 1, c0 + 1] * fc * fr)
    return np.where(ok, value, np.nan)


@pytest.mark.parametrize("name,res,west,east", [("glo_30_left", 1 / 3600, 42.94, 43.01), ("glo_90_right", 3 / 3600, 42.99, 43.06)])
def test_real_copernicus_dem_heights_are_bilinear_samples(shared_fixtures, tmp_path, name, res, west, east):
    """Real GLO-30 and GLO-90 crops (EPSG:4326, 1" and 3") under a 10 m UTM 38N image grid reaching past them."""
    dem = shared_fixtures / f"dem/dem-stitcher/{name}.tif"
    utm = CRS.from_epsg(32638)
    to_utm = Transformer.from_crs(4326, utm, always_xy=True)
    left, bottom, right, top = to_utm.transform_bounds(west, 40.46, east, 40.54)
    grid = Grid(Affine(10, 0, round(left, -1), 0, -10, round(top, -1)), int((right - left) // 10), int((top - bottom) // 10), utm)
    rng = np.random.default_rng(0)
    write_geotiff(tmp_path / "tci.tif", rng.integers(1, 256, (3, grid.height, grid.width), dtype=np.uint8), grid, nodata=0)
    opts = make_options(dem=str(dem), image=(str(tmp_path / "tci.tif"),), output=tmp_path / "real.laz", viewer=False,
                        preview=False)
    result = build_point_cloud(opts)
    las = laspy.read(result.output)
    lon, lat = Transformer.from_crs(utm, 4326, always_xy=True).transform(np.asarray(las.x), np.asarray(las.y))
    expected = bilinear_at(dem, lon, lat)
    inside = np.isfinite(expected)
    assert inside.mean() > 0.95  # the image reaches past the DEM's edge: those pixels made no point
    error = np.abs(np.asarray(las.z)[inside] - expected[inside])
    # GDAL approximates the pixel transform within 0.01 px (see sources.py): bound the height error by how much
    # the surface changes over 0.01 px in lon and lat at each point, plus the LAS centimetre quantisation
    centre = bilinear_at(dem, lon, lat)
    step = 0.01 * res
    # one-sided changes: the bilinear surface has kinks on cell edges, where a central difference underestimates
    slope_lon = np.maximum(np.abs(bilinear_at(dem, lon + step, lat) - centre), np.abs(bilinear_at(dem, lon - step, lat) - centre))
    slope_lat = np.maximum(np.abs(bilinear_at(dem, lon, lat + step) - centre), np.abs(bilinear_at(dem, lon, lat - step) - centre))
    bound = (slope_lon + slope_lat)[inside] + 0.0051
    bad = error > np.nan_to_num(bound, nan=0.1)
    assert not bad.any(), (int(bad.sum()), error[bad][:5], bound[bad][:5], lon[inside][bad][:3], lat[inside][bad][:3])
    assert las.header.parse_crs() == utm
    with rasterio.open(dem) as ds:  # nothing outside the DEM
        assert ds.bounds.left - 1e-4 <= lon.min() and lon.max() <= ds.bounds.right + 1e-4


def test_real_eolearn_dem_on_its_own_grid(shared_fixtures, tmp_path):
    """eo-learn's real DEM patch (EPSG:32633) and its real MAX_NDVI as colour: heights pass through unchanged."""
    root = shared_fixtures / "dem/eo-learn_TestEOPatch"
    dem = np.load(root / "data_timeless/DEM.npy")[..., 0]
    ndvi = np.load(root / "data_timeless/MAX_NDVI.npy")[..., 0]
    (x0, y0), (_, y1), (x1, _) = json.loads((root / "bbox.geojson").read_text())["coordinates"][0][:3]
    h, w = dem.shape
    grid = Grid(Affine((x1 - x0) / w, 0, x0, 0, -(y1 - y0) / h, y1), w, h, CRS.from_epsg(32633))
    write_geotiff(tmp_path / "dem.tif", dem, grid)
    green = np.clip(ndvi * 255, 1, 255).astype(np.uint8)
    write_geotiff(tmp_path / "rgb.tif", np.stack([255 - green, green, np.full_like(green, 60)]), grid)
    code = run(["-q", "pointcloud", "build", "--dem", str(tmp_path / "dem.tif"), "--image", str(tmp_path / "rgb.tif"),
                "-o", str(tmp_path / "eo.las"), "--no-viewer", "--no-preview"])
    assert code == 0
    las = laspy.read(tmp_path / "eo.las")
    assert len(las) == h * w
    rows = np.rint((grid.transform.f - np.asarray(las.y)) / abs(grid.transform.e) - 0.5).astype(int)
    cols = np.rint((np.asarray(las.x) - grid.transform.c) / grid.transform.a - 0.5).astype(int)
    np.testing.assert_allclose(np.asarray(las.z), dem[rows, cols], atol=0.005)
    np.testing.assert_array_equal(np.asarray(las.green) // 257, green[rows, cols])


def test_real_sentinel2_l2a_bands_with_offset(shared_fixtures, tmp_path):
    """Real Major-TOM L2A B04/B03/B02 (baseline 04.00: reflectance = (DN - 1000) / 10000), three files."""
    band = {b: shared_fixtures / RICO / f"{b}.tif" for b in ("B04", "B03", "B02")}
    with rasterio.open(band["B04"]) as ds:
        grid = Grid(ds.transform, ds.width, ds.height, CRS.from_wkt(ds.crs.to_wkt()))
        dn = {b: rasterio.open(p).read(1) for b, p in band.items()}
    lonlat = Transformer.from_crs(grid.crs, 4326, always_xy=True).transform_bounds(*grid.bounds)
    res = 1 / 1200
    dem_grid = Grid.from_bounds((lonlat[0] - 0.01, lonlat[1] - 0.01, lonlat[2] + 0.01, lonlat[3] + 0.01), res, 4326)
    lon, lat = dem_grid.pixel_centres()
    write_geotiff(tmp_path / "dem.tif", (300 + 2000 * (lon - lonlat[0]) + 0 * lat).astype(np.float32), dem_grid)
    out = tmp_path / "s2.laz"
    code = run(["-q", "pointcloud", "build", "--dem", str(tmp_path / "dem.tif"), "--image", str(band["B04"]), "--image",
                str(band["B03"]), "--image", str(band["B02"]), "--reflectance-offset", "-0.1", "-o", str(out)])
    assert code == 0
    las = laspy.read(out)
    rows = np.rint((grid.transform.f - np.asarray(las.y)) / 10 - 0.5).astype(int)
    cols = np.rint((np.asarray(las.x) - grid.transform.c) / 10 - 0.5).astype(int)
    for name, b in (("red", "B04"), ("green", "B03"), ("blue", "B02")):
        refl = (dn[b][rows, cols].astype(np.float32) * np.float32(1e-4) + np.float32(-0.1))
        # the documented fixed stretch, in float32 as computed: rint((refl - 0) * 255 / (0.3 - 0)), clipped to 0..255
        expected = np.clip(np.rint(refl * (np.float32(255) / np.float32(0.3))), 0, 255).astype(np.uint16) * 257
        np.testing.assert_array_equal(np.asarray(getattr(las, name)), expected)
    meta = json.loads((tmp_path / "s2.laz.json").read_text())
    assert meta["properties"]["eotwin:parameters"]["radiometry"]["offset"] == -0.1
    assert (tmp_path / "s2.html").stat().st_size > 1000 and (tmp_path / "s2.png").stat().st_size > 1000


def test_info_command_reports_count_crs_and_colour(tmp_path, sample_files, capsys):
    out = tmp_path / "c.laz"
    assert run(["-q", "pointcloud", "build", "--dem", str(sample_files.dem), "--image", str(sample_files.tci), "-o", str(out),
                "--no-viewer", "--no-preview"]) == 0
    capsys.readouterr()
    assert run(["pointcloud", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    las = laspy.read(out)
    assert info["count"] == len(las) and info["point_format"] == 7 and info["crs"]["epsg"] == 32632
    assert info["colour"]["max"] == [int(las.red.max()), int(las.green.max()), int(las.blue.max())]
    assert run(["pointcloud", "info", str(out)]) == 0
    assert "EPSG:32632" in capsys.readouterr().out


def _no_traceback_one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("case", ["missing", "not_raster", "no_crs", "no_overlap", "fraction_high", "fraction_zero",
                                  "unwritable", "bad_format", "one_band_image", "image_data_cut"])
def test_bad_input_is_one_line_nonzero_and_leaves_nothing(case, tmp_path, sample_files, capsys):
    dem, image = str(sample_files.dem), str(sample_files.tci)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "c.laz"
    extra: list[str] = []
    if case == "missing":
        dem = str(tmp_path / "nope.tif")
    elif case == "not_raster":
        (tmp_path / "notes.tif").write_text("hello")
        dem = str(tmp_path / "notes.tif")
    elif case == "no_crs":
        with rasterio.open(tmp_path / "nocrs.tif", "w", driver="GTiff", width=4, height=4, count=1, dtype="float32") as ds:
            ds.write(np.ones((1, 4, 4), np.float32))
        dem = str(tmp_path / "nocrs.tif")
    elif case == "no_overlap":
        far = Grid(Affine(1 / 3600, 0, 20.0, 0, -1 / 3600, 50.0), 50, 50, CRS.from_epsg(4326))
        write_geotiff(tmp_path / "far.tif", np.ones((50, 50), np.float32), far)
        dem = str(tmp_path / "far.tif")
    elif case == "fraction_high":
        extra = ["--sampled-fraction", "1.5"]
    elif case == "fraction_zero":
        extra = ["--sampled-fraction", "0"]
    elif case == "unwritable":
        out_dir.chmod(0o500)
        if __import__("os").access(out_dir, __import__("os").W_OK):  # root ignores permissions: use a file as directory
            out_dir.chmod(0o700)
            (tmp_path / "blocker").write_text("x")
            out = tmp_path / "blocker" / "c.laz"
    elif case == "bad_format":
        extra = ["--format", "xyz"]
    elif case == "one_band_image":
        image = str(sample_files.scl)
    elif case == "image_data_cut":  # header intact (a COG's IFDs come first), pixels cut short: fails at read
        cut = tmp_path / "cut.tif"
        with rasterio.open(sample_files.tci) as src:
            profile = {**src.profile, "driver": "COG", "compress": "deflate"}
            for key in ("blockxsize", "blockysize", "tiled", "interleave"):  # GTiff-only options
                profile.pop(key, None)
            with rasterio.open(cut, "w", **profile) as dst:
                dst.write(src.read())
        cut.write_bytes(cut.read_bytes()[: int(cut.stat().st_size * 0.6)])
        with rasterio.open(cut) as opened:  # the premise: it opens, only reading fails
            assert opened.count == 3
        image = str(cut)
    quiet = ["-q"] if case == "image_data_cut" else []  # it fails once the progress bar has started
    code = run([*quiet, "pointcloud", "build", "--dem", dem, "--image", image, "-o", str(out), *extra])
    out_dir.chmod(0o700)
    assert code != 0
    line = _no_traceback_one_line(capsys)
    assert line.startswith("error:") or "Error" in line or "Invalid" in line
    if case == "image_data_cut":  # was "error:: Read failed. See previous exception for details."
        assert line.startswith("error: ") and "cut.tif" in line, line
    assert not out.exists()
    assert not any(out_dir.iterdir()), "no partial or temporary files are left behind"


def test_prefetch_reraises_producer_errors_and_stops_early():
    def items():
        yield 1
        yield 2
        raise ValueError("boom")

    got = []
    with pytest.raises(ValueError, match="boom"):
        for item in prefetch(items()):
            got.append(item)
    assert got == [1, 2]
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for item in prefetch(endless(), depth=2):
        if item == 3:
            break
    assert len(produced) <= 3 + 2 + 2  # bounded look-ahead, producer stopped
