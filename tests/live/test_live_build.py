"""bbox + date -> STAC search -> windowed S3 reads -> EDH DEM -> LAZ, against loopback servers."""

from __future__ import annotations

import laspy
import numpy as np
from pyproj import Transformer

from eotwin.io.remote.cache import Cache
from eotwin.io.remote.stac_api import search
from eotwin.pointcloud.live_items import choose_items
from eotwin.pointcloud.live_pipeline import LiveRequest, build_from_bbox, target_grid


def scene_bbox(world, shrink=0.1):
    grid = world.scene.image_grid
    left, bottom, right, top = grid.bounds
    dx, dy = (right - left) * shrink, (top - bottom) * shrink
    west, south, east, north = Transformer.from_crs(grid.crs, 4326, always_xy=True).transform_bounds(
        left + dx, bottom + dy, right - dx, top - dy)
    return (west, south, east, north)


def test_search_pages_filters_and_choice(world, servers, endpoints):
    bbox = scene_bbox(world)
    items = search(endpoints, "sentinel-2-l2a", bbox, "2024-07-01T00:00:00Z/2024-07-31T23:59:59Z", max_cloud=50, limit=1)
    assert sorted(i["id"] for i in items) == sorted(i["id"] for i in world.items)  # two pages of one
    assert search(endpoints, "sentinel-2-l2a", bbox, "2024-07-01T00:00:00Z/2024-07-31T23:59:59Z", max_cloud=5) == [world.items[0]]
    chosen = choose_items(items, bbox)
    assert [c.item["id"] for c in chosen] == [world.items[0]["id"], world.items[1]["id"]]
    assert "3.5 % cloud" in chosen[0].reason and "adds" in chosen[1].reason


def test_live_build_matches_the_served_files(world, servers, endpoints, credentials, tmp_path):
    bbox = scene_bbox(world)
    request = LiveRequest(bbox=bbox, datetime="2024-07-01T00:00:00Z/2024-07-31T23:59:59Z", max_cloud=50)
    cache = Cache(tmp_path / "cache")
    result = build_from_bbox(request, tmp_path / "live.laz", endpoints=endpoints, credentials=credentials, cache=cache,
                             viewer=False, preview=False)
    las = laspy.read(result.output)
    grid = target_grid(request)
    assert grid.crs.to_epsg() == 32632
    x, y = np.asarray(las.x), np.asarray(las.y)
    col = (x - grid.transform.c) / 10 - 0.5
    row = (grid.transform.f - y) / 10 - 0.5
    np.testing.assert_allclose(col, np.rint(col), atol=1e-6)
    np.testing.assert_allclose(row, np.rint(row), atol=1e-6)
    assert len(set(zip(np.rint(col).astype(int).tolist(), np.rint(row).astype(int).tolist(), strict=True))) == len(las)
    # the grids coincide with the scene's (10 m, same origin modulo 10 m): Z is the analytic surface within bilinear
    # error on a 1" DEM, colours are the scene's L2A reflectance through the documented stretch
    scene = world.scene
    sg = scene.image_grid
    srow = np.rint((sg.transform.f - y) / 10 - 0.5).astype(int)
    scol = np.rint((x - sg.transform.c) / 10 - 0.5).astype(int)
    assert np.abs(np.asarray(las.z) - scene.elevation[srow, scol]).mean() < 1.0
    # exact Z against the DEM the server serves: bilinear interpolation of its cells at each point, within the LAS
    # centimetre and GDAL's 0.01 px transform approximation times the local slope
    lon, lat = Transformer.from_crs(grid.crs, 4326, always_xy=True).transform(x, y)
    dem = scene.dem.astype(np.float64)

    def bilinear(lo, la):
        c, r = ~scene.dem_grid.transform @ (lo, la)
        c, r = c - 0.5, r - 0.5
        c0, r0 = np.floor(c).astype(int), np.floor(r).astype(int)
        fc, fr = c - c0, r - r0
        return (dem[r0, c0] * (1 - fc) * (1 - fr) + dem[r0, c0 + 1] * fc * (1 - fr)
                + dem[r0 + 1, c0] * (1 - fc) * fr + dem[r0 + 1, c0 + 1] * fc * fr)

    expected = bilinear(lon, lat)
    step = 0.01 / 3600
    slope = sum(np.maximum(np.abs(bilinear(lon + dx, lat + dy) - expected), np.abs(bilinear(lon - dx, lat - dy) - expected))
                for dx, dy in ((step, 0), (0, step)))
    assert (np.abs(np.asarray(las.z) - expected) <= slope + 0.0051).all()
    from eotwin.sample.scene import observed_reflectance

    refl = observed_reflectance(scene)
    from eotwin.sentinel2.bands import S2_BANDS

    dn = np.clip(np.rint(refl[S2_BANDS.index("B04")] * 10000 + 1000), 1, 65535)
    red = np.clip(np.rint((dn[srow, scol].astype(np.float32) * np.float32(1e-4) + np.float32(-0.1))
                          * (np.float32(255) / np.float32(0.3))), 0, 255).astype(np.uint16) * 257
    np.testing.assert_array_equal(np.asarray(las.red), red)
    # clouds, shadows and swath no-data (SCL 9, 3, 0) make no points: SCL is served at 20 m (the scene's classes at
    # every other pixel), so a 10 m point is masked by the 20 m cell it falls in
    from eotwin.sample.scene import scene_scl

    scl20 = scene_scl(scene)[::2, ::2]
    assert not np.isin(scl20[srow // 2, scol // 2], [0, 1, 3, 8, 9, 10]).any()
    assert not scene.nodata[srow, scol].any()
    expected = ~np.isin(scl20[np.arange(sg.height)[:, None] // 2, np.arange(sg.width)[None, :] // 2], [0, 1, 3, 8, 9, 10])
    expected &= ~scene.nodata  # image no-data (DN 0)
    r0 = round((sg.transform.f - grid.transform.f) / 10)
    c0 = round((grid.transform.c - sg.transform.c) / 10)
    assert len(las) == int(expected[r0:r0 + grid.height, c0:c0 + grid.width].sum())  # no gap: every clear pixel is a point
    assert cache.misses > 0
