"""The point-cloud build proves its geometry, heights, colours, validity, sampling and CRS against references."""

from __future__ import annotations

import json
import struct

import laspy
import numpy as np
import pytest
from affine import Affine
from pyproj import CRS, Transformer

from eotwin.geo.grid import Grid
from eotwin.io.raster import write_geotiff
from eotwin.pointcloud.pipeline import build_point_cloud, make_options

UTM32 = CRS.from_epsg(32632)
WGS84 = CRS.from_epsg(4326)


def read_las(path):
    las = laspy.read(path)
    xyz = np.column_stack([las.x, las.y, las.z])
    rgb = np.column_stack([las.red, las.green, las.blue])
    return las, xyz, rgb


def pixel_index(grid: Grid, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of each point, asserting that it sits exactly on a pixel centre."""
    t = grid.transform
    col = (xyz[:, 0] - t.c) / t.a - 0.5
    row = (xyz[:, 1] - t.f) / t.e - 0.5
    # LAS stores 0.01 m integers: a 10 m grid's centres (x.5 pixels = 5 m) are representable exactly
    np.testing.assert_allclose(col, np.rint(col), atol=1e-6)
    np.testing.assert_allclose(row, np.rint(row), atol=1e-6)
    col, row = np.rint(col).astype(int), np.rint(row).astype(int)
    assert col.min() >= 0 and row.min() >= 0 and col.max() < grid.width and row.max() < grid.height
    return row, col


@pytest.fixture(scope="module")
def bilinear_scene(tmp_path_factory):
    """A DEM in EPSG:4326 whose heights are a bilinear function of lon/lat (so bilinear resampling is exact),
    a uint8 TCI on a 10 m UTM 32N grid with a nodata hole, and a DEM nodata hole."""
    root = tmp_path_factory.mktemp("bilinear")
    image_grid = Grid(Affine(10, 0, 367000, 0, -10, 5066000), 120, 100, UTM32)
    left, bottom, right, top = image_grid.bounds
    lonlat = Transformer.from_crs(UTM32, WGS84, always_xy=True).transform_bounds(left, bottom, right, top)
    res = 1 / 3600
    dem_grid = Grid(Affine(res, 0, lonlat[0] - 5 * res, 0, -res, lonlat[3] + 5 * res),
                    int((lonlat[2] - lonlat[0]) / res) + 10, int((lonlat[3] - lonlat[1]) / res) + 10, WGS84)

    def height(lon, lat):
        return 1000.0 + 800.0 * (lon - 7.3) + 600.0 * (lat - 45.73) + 5000.0 * (lon - 7.3) * (lat - 45.73)

    lon_c, lat_c = dem_grid.pixel_centres()
    dem = height(lon_c, lat_c).astype(np.float64)
    dem[40:46, 30:38] = np.nan  # a real DEM hole (voids in GLO-30 are NaN-filled in EDH / -32767 in COGs)
    write_geotiff(root / "dem.tif", dem.astype(np.float32), dem_grid, nodata=float("nan"))
    rng = np.random.default_rng(3)
    tci = rng.integers(1, 256, size=(3, 100, 120), dtype=np.uint8)
    tci[:, 10:20, 50:70] = 0  # TCI nodata
    write_geotiff(root / "tci.tif", tci, image_grid, nodata=0, photometric="RGB")
    scl = np.full((100, 120), 4, np.uint8)
    scl[60:70, 5:25] = 9  # cloud high probability
    scl[80:85, 90:100] = 3  # cloud shadow
    write_geotiff(root / "scl.tif", scl, image_grid, nodata=0)
    return {"root": root, "image_grid": image_grid, "dem_grid": dem_grid, "height": height, "tci": tci, "scl": scl}


@pytest.fixture(scope="module")
def full_cloud(bilinear_scene):
    s = bilinear_scene
    opts = make_options(dem=str(s["root"] / "dem.tif"), image=(str(s["root"] / "tci.tif"),), output=s["root"] / "full.laz",
                        mask=str(s["root"] / "scl.tif"), viewer=False, preview=False, block_rows=17)
    result = build_point_cloud(opts)
    return result, *read_las(result.output)


def test_points_are_pixel_centres_with_exact_colours(bilinear_scene, full_cloud):
    result, las, xyz, rgb = full_cloud
    row, col = pixel_index(bilinear_scene["image_grid"], xyz)
    assert len(set(zip(row.tolist(), col.tolist(), strict=True))) == len(xyz)  # one point per pixel
    tci = bilinear_scene["tci"]
    np.testing.assert_array_equal(rgb, tci[:, row, col].T.astype(np.uint16) * 257)


def test_heights_match_the_analytic_surface_in_another_crs(bilinear_scene, full_cloud):
    _, _, xyz, _ = full_cloud
    lon, lat = Transformer.from_crs(UTM32, WGS84, always_xy=True).transform(xyz[:, 0], xyz[:, 1])
    expected = bilinear_scene["height"](lon, lat)
    # bilinear resampling of a bilinear function is exact; what remains is float32 storage of the DEM,
    # GDAL's 0.01 px transform approximation and the LAS 0.01 m quantisation
    np.testing.assert_allclose(xyz[:, 2], expected, atol=0.02)


def test_nodata_and_masked_pixels_make_no_points(bilinear_scene, full_cloud):
    result, _, xyz, _ = full_cloud
    s = bilinear_scene
    grid = s["image_grid"]
    # independent validity: image nodata, SCL exclusions, DEM void (pixels whose centre falls in the NaN cells'
    # bilinear support) and pixels outside the DEM
    x, y = grid.pixel_centres()
    lon, lat = Transformer.from_crs(UTM32, WGS84, always_xy=True).transform(x, y)
    inv = ~s["dem_grid"].transform
    c, r = inv @ (lon, lat)
    c0, r0 = np.floor(c - 0.5).astype(int), np.floor(r - 0.5).astype(int)  # bilinear support: 2x2 around the centre
    void = np.zeros(s["dem_grid"].shape, bool)
    void[40:46, 30:38] = True
    near_void = np.zeros(grid.shape, bool)
    for dr in (0, 1):
        for dc in (0, 1):
            near_void |= void[np.clip(r0 + dr, 0, void.shape[0] - 1), np.clip(c0 + dc, 0, void.shape[1] - 1)]
    expected_valid = (s["tci"] > 0).all(axis=0) & ~np.isin(s["scl"], [0, 1, 3, 8, 9, 10])
    row, col = pixel_index(grid, xyz)
    got = np.zeros(grid.shape, bool)
    got[row, col] = True
    assert not (got & ~expected_valid).any(), "a nodata or masked pixel produced a point"
    assert not (got & near_void & ~_ring(near_void)).any(), "a pixel inside the DEM void produced a point"
    # everything valid away from the void edge made a point (GDAL may or may not use a partial support at the rim)
    assert (got | ~expected_valid | near_void).all()
    assert np.isfinite(xyz[:, 2]).all() and xyz[:, 2].min() > 500  # no zero-height ghosts


def _ring(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` on its border (GDAL's bilinear may use a partial kernel there)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def test_sampling_is_exact_unique_and_reproducible(bilinear_scene, full_cloud):
    result, _, full_xyz, _ = full_cloud
    s = bilinear_scene
    full = {tuple(p) for p in np.round(full_xyz[:, :2], 2).tolist()}
    picks = []
    for seed in (11, 11, 12):
        opts = make_options(dem=str(s["root"] / "dem.tif"), image=(str(s["root"] / "tci.tif"),),
                            output=s["root"] / f"s{seed}.ply", mask=str(s["root"] / "scl.tif"), sampled_fraction=0.37,
                            seed=seed, viewer=False, preview=False, block_rows=13)
        r = build_point_cloud(opts)
        assert r.valid_pixels == result.count
        assert r.count == round(0.37 * result.count)
        from eotwin.io.pointcloud_reader import read_points

        pts = read_points(r.output).xyz
        keys = [tuple(p) for p in np.round(pts[:, :2], 2).tolist()]
        assert len(set(keys)) == len(keys), "duplicate points"
        assert set(keys) <= full, "sampled points must be points of the full cloud"
        picks.append(set(keys))
    assert picks[0] == picks[1]
    assert picks[0] != picks[2]


def test_streaming_sampler_is_uniform():
    from eotwin.pointcloud.sampling import StreamingSampler

    blocks, k, trials = [10, 0, 25, 15], 20, 3000
    hits = np.zeros(sum(blocks))
    for seed in range(trials):
        sampler, start = StreamingSampler(sum(blocks), k, seed), 0
        for n in blocks:
            idx = sampler.pick(n)
            assert len(np.unique(idx)) == len(idx)
            hits[start + idx] += 1
            start += n
        assert sampler.done
    freq = hits / trials
    sigma = np.sqrt(0.4 * 0.6 / trials)
    assert np.abs(freq - k / sum(blocks)).max() < 5 * sigma


def test_las_header_is_las14_format7_with_wkt_crs(full_cloud):
    result, las, xyz, _ = full_cloud
    assert las.header.parse_crs() == UTM32
    assert las.header.version.major == 1 and las.header.version.minor == 4
    assert las.header.point_format.id == 7
    np.testing.assert_allclose(las.header.scales, [0.01, 0.01, 0.01])
    assert abs(las.header.offsets[0] - xyz[:, 0].min()) < 2000 and abs(las.header.offsets[1] - xyz[:, 1].min()) < 2000
    np.testing.assert_allclose(las.header.mins, xyz.min(axis=0))
    # the raw bytes, read by the LAS 1.4 specification rather than by laspy (what PDAL's reader checks)
    raw = result.output.read_bytes()
    assert raw[:4] == b"LASF"
    global_encoding = struct.unpack_from("<H", raw, 6)[0]
    assert global_encoding & 0x10, "WKT bit must be set for point formats 6-10"
    major, minor = raw[24], raw[25]
    header_size, offset_to_points, n_vlrs = struct.unpack_from("<HII", raw, 94)
    point_format, record_length = raw[104] & 0x3F, struct.unpack_from("<H", raw, 105)[0]
    assert (major, minor, header_size) == (1, 4, 375)
    assert point_format == 7 and record_length >= 36
    assert raw[104] & 0x80, "LAZ sets the compression bit on the point format"
    n_points_64 = struct.unpack_from("<Q", raw, 247)[0]
    assert n_points_64 == result.count
    pos, records = header_size, []
    for _ in range(n_vlrs):
        user_id = raw[pos + 2:pos + 18].rstrip(b"\0").decode()
        record_id, length = struct.unpack_from("<HH", raw, pos + 18)
        records.append((user_id, record_id, raw[pos + 54:pos + 54 + length]))
        pos += 54 + length
    wkt = [payload for user, rid, payload in records if user == "LASF_Projection" and rid == 2112]
    assert wkt and CRS.from_wkt(wkt[0].rstrip(b"\0").decode()) == UTM32


def test_ply_has_float64_coordinates_and_a_crs_sidecar(bilinear_scene, full_cloud):
    s = bilinear_scene
    opts = make_options(dem=str(s["root"] / "dem.tif"), image=(str(s["root"] / "tci.tif"),), output=s["root"] / "c.ply",
                        mask=str(s["root"] / "scl.tif"), viewer=False, preview=False)
    r = build_point_cloud(opts)
    from eotwin.io.pointcloud_reader import parse_ply_header

    count, dtype, _, _ = parse_ply_header(r.output)
    assert count == full_cloud[0].count
    assert dtype["x"] == np.dtype("<f8") and dtype["red"] == np.dtype("u1")
    meta = json.loads(r.metadata.read_text())
    assert CRS.from_wkt(meta["properties"]["proj:wkt2"]) == UTM32
    assert meta["properties"]["pc:count"] == count
    assert meta["properties"]["eotwin:origin"] == [0.0, 0.0, 0.0]


def test_metadata_is_a_stac_item(full_cloud):
    result = full_cloud[0]
    meta = json.loads(result.metadata.read_text())
    assert meta["type"] == "Feature" and meta["properties"]["pc:count"] == result.count
    west, south, _, east, north, _ = meta["bbox"]
    assert 7.2 < west < east < 7.4 and 45.6 < south < north < 45.8
    assert meta["properties"]["eotwin:parameters"]["resampling"] == {"dem": "bilinear", "image": "none (same grid)"}


def test_dem_grid_option_puts_points_on_dem_pixel_centres(bilinear_scene):
    s = bilinear_scene
    opts = make_options(dem=str(s["root"] / "dem.tif"), image=(str(s["root"] / "tci.tif"),), output=s["root"] / "d.laz",
                        grid="dem", viewer=False, preview=False)
    r = build_point_cloud(opts)
    las, xyz, _ = read_las(r.output)
    assert las.header.parse_crs() == WGS84
    assert las.header.scales[0] == pytest.approx(1e-7)
    t = s["dem_grid"].transform
    col = (xyz[:, 0] - t.c) / t.a - 0.5
    row = (xyz[:, 1] - t.f) / t.e - 0.5
    np.testing.assert_allclose(col, np.rint(col), atol=0.01)  # 1e-7 deg quantisation = 0.0004 px
    np.testing.assert_allclose(row, np.rint(row), atol=0.01)
    # on its own grid the DEM is not resampled: heights equal the DEM cells exactly (to the LAS centimetre)
    np.testing.assert_allclose(xyz[:, 2], s["height"](xyz[:, 0], xyz[:, 1]), atol=0.006)


def test_z_scale_multiplies_heights(bilinear_scene, full_cloud):
    s = bilinear_scene
    opts = make_options(dem=str(s["root"] / "dem.tif"), image=(str(s["root"] / "tci.tif"),), output=s["root"] / "z.laz",
                        mask=str(s["root"] / "scl.tif"), z_scale=2.5, viewer=False, preview=False, block_rows=17)
    _, xyz, _ = read_las(build_point_cloud(opts).output)
    np.testing.assert_allclose(xyz[:, 2], 2.5 * full_cloud[2][:, 2], atol=0.03)


def test_heights_do_not_depend_on_the_window(sample_files, sample_scene, tmp_path):
    """Bug found: GDAL chose the bilinear kernel width per warped chunk, so a thin tile (2 pixels wide) warped
    from a small DEM crop got other heights than the same pixels in a large run (0.55 m off in the live tiling
    test). The resampling ratio is now fixed per grid."""
    import contextlib

    import rasterio
    from rasterio.windows import Window as RioWindow

    from eotwin.geo.grid import Window
    from eotwin.pointcloud.sources import DemSource

    grid = sample_scene.image_grid  # a curved alpine surface: a wider kernel smooths it
    thin = grid.window_grid(Window(20, 150, 60, 2))
    with rasterio.open(sample_files.dem) as ds:  # the DEM cells under the thin tile plus 3 cells, as the live mode fetches
        inv = ~ds.transform
        from pyproj import Transformer

        west, south, east, north = Transformer.from_crs(grid.crs, ds.crs.to_wkt(), always_xy=True).transform_bounds(*thin.bounds)
        c0, r0 = (int(v) - 3 for v in inv @ (west, north))
        c1, r1 = (int(v) + 4 for v in inv @ (east, south))
        crop = ds.read(1, window=RioWindow(c0, r0, c1 - c0, r1 - r0))
        profile = ds.profile | {"width": c1 - c0, "height": r1 - r0, "transform": ds.window_transform(RioWindow(c0, r0, c1 - c0, r1 - r0))}
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.update(tiled=False)
    with rasterio.open(tmp_path / "crop.tif", "w", **profile) as dst:
        dst.write(crop, 1)
    with contextlib.ExitStack() as stack:
        big = DemSource(str(sample_files.dem), stack)
        big.attach(grid)
        small = DemSource(str(tmp_path / "crop.tif"), stack)
        small.attach(thin)
        expected = big.read(Window(0, 0, grid.height, grid.width))[20:80, 150:152]
        np.testing.assert_allclose(small.read(Window(0, 0, 60, 2)), expected, atol=0.01)
