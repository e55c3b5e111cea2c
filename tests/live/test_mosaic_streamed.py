"""The live mosaic is written block by block: a full tile's bands are never held whole.

Found by ``benchmarks/memory.py`` (pointcloud-build-live): a bbox over a full tile died of MemoryError under
2 GiB, because the mosaic held each band as float32 several times over (the target, every window's warped
copy, the source converted to reflectance), and GDAL's block cache kept up to 5 % of the host's RAM.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject

from eotwin.geo.grid import Grid
from eotwin.io.raster import write_geotiff
from eotwin.io.remote.gdal import gdal_env
from eotwin.pointcloud.live_mosaic import mosaic_to_file
from eotwin.pointcloud.live_pipeline import LIVE_GDAL_CACHE_MB
from eotwin.sentinel2.windows import WindowFile

CRS32 = CRS.from_epsg(32632)


def _window(tmp_path, name, col0, width, height, seed, nodata_rows=0):
    rng = np.random.default_rng(seed)
    dn = rng.integers(1000, 9000, size=(height, width)).astype(np.uint16)
    dn[:nodata_rows] = 0  # no data: the next window fills these
    grid = Grid(Affine(10, 0, 400_000 + 10 * col0, 0, -10, 5_000_000), width, height, CRS32)
    write_geotiff(tmp_path / name, dn, grid, nodata=0)
    return WindowFile(tmp_path / name, name, "B04", 1e-4, -0.1), dn, grid


def _reference(windows, target, reflectance):
    """The mosaic computed whole, in memory (what the pipeline did before)."""
    dtype, fill = (np.float32, np.nan) if reflectance else (np.uint8, 0)
    out = np.full(target.shape, fill, dtype=dtype)
    for win in windows:
        with rasterio.open(win.path) as ds:
            src = ds.read(1)
            if reflectance:
                src = np.where(src != ds.nodata, src.astype(np.float32) * np.float32(win.scale)
                               + np.float32(win.offset), np.nan).astype(np.float32)
            part = np.full(target.shape, fill, dtype=dtype)
            reproject(src.astype(dtype, copy=False), part, src_transform=ds.transform, src_crs=ds.crs,
                      src_nodata=np.nan if reflectance else ds.nodata, dst_transform=target.transform,
                      dst_crs=ds.crs, dst_nodata=fill, resampling=Resampling.nearest)
        empty = np.isnan(out) if reflectance else out == 0
        out[empty] = part[empty]
    return out


def test_streamed_mosaic_equals_the_whole_one_and_holds_one_block(tmp_path, monkeypatch):
    import eotwin.pointcloud.live_mosaic as s2

    monkeypatch.setattr(s2, "MOSAIC_BLOCK_ROWS", 128)  # a full tile has 10980 rows: blocks of 512 are 5 % of it
    first, _, _ = _window(tmp_path, "a.tif", 0, 1500, 2400, 1, nodata_rows=300)
    second, _, _ = _window(tmp_path, "b.tif", 1000, 1600, 2400, 2)
    target = Grid(Affine(10, 0, 400_000 + 35, 0, -10, 5_000_000 - 25), 2550, 2390, CRS32)  # off the pixel grid
    band_bytes = target.width * target.height * 4
    tracemalloc.start()
    try:
        path = mosaic_to_file([first, second], target, tmp_path / "B04.tif", reflectance=True,
                              resampling=Resampling.nearest, description="B04")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with rasterio.open(path) as ds:
        got = ds.read(1)
        assert ds.descriptions == ("B04",) and np.isnan(ds.nodata)
    np.testing.assert_array_equal(got, _reference([first, second], target, reflectance=True))
    assert np.isfinite(got).mean() > 0.95  # the second window filled the first one's no-data rows
    # the whole mosaic held five full float32 copies of the band; the stream holds a few blocks of rows
    assert peak < 0.25 * band_bytes, (peak, band_bytes)


def test_streamed_mosaic_of_classes_keeps_the_first_window(tmp_path):
    first, dn_a, _ = _window(tmp_path, "a.tif", 0, 900, 700, 3, nodata_rows=100)
    second, _, _ = _window(tmp_path, "b.tif", 0, 900, 700, 4)
    for win in (first, second):  # SCL-like classes: uint8, 0 = no data
        with rasterio.open(win.path) as ds:
            data, profile = (ds.read(1) % 12).astype(np.uint8), ds.profile
        profile.update(dtype="uint8")
        with rasterio.open(win.path, "w", **profile) as ds:
            ds.write(data, 1)
    target = Grid(Affine(10, 0, 400_000, 0, -10, 5_000_000), 900, 700, CRS32)
    path = mosaic_to_file([first, second], target, tmp_path / "SCL.tif", reflectance=False,
                          resampling=Resampling.nearest, description="SCL")
    with rasterio.open(path) as ds:
        got = ds.read(1)
    np.testing.assert_array_equal(got, _reference([first, second], target, reflectance=False))
    keep = (dn_a % 12 != 0)[100:]
    np.testing.assert_array_equal(got[100:][keep], (dn_a % 12)[100:][keep])  # where the first has data, its value


def test_remote_reads_keep_a_small_gdal_block_cache():
    from eotwin.io.remote.credentials import Credentials
    from eotwin.io.remote.endpoints import Endpoints

    with gdal_env(Endpoints(), Credentials(), block_cache_mb=LIVE_GDAL_CACHE_MB):
        assert int(rasterio.env.getenv()["GDAL_CACHEMAX"]) == LIVE_GDAL_CACHE_MB * 2**20
    with rasterio.Env(GDAL_CACHEMAX=128 * 2**20), gdal_env(Endpoints(), Credentials()):  # atmocorr sets its own
        assert int(rasterio.env.getenv()["GDAL_CACHEMAX"]) == 128 * 2**20


def test_windows_without_nodata_fill_only_their_footprint(tmp_path):
    """A window file with no no-data value: outside its footprint the target stays empty (NaN), as before."""
    first, dn, grid = _window(tmp_path, "a.tif", 0, 400, 300, 5)
    with rasterio.open(first.path) as ds:
        profile, data = ds.profile, ds.read(1)
    profile.update(nodata=None)
    with rasterio.open(first.path, "w", **profile) as ds:
        ds.write(data, 1)
    target = Grid(Affine(10, 0, 400_000 - 1000, 0, -10, 5_000_000 + 500), 600, 450, CRS32)  # larger than the window
    path = mosaic_to_file([first], target, tmp_path / "B04.tif", reflectance=True, resampling=Resampling.nearest,
                          description="B04")
    with rasterio.open(path) as ds:
        got = ds.read(1)
    inside = got[50:350, 100:500]
    np.testing.assert_allclose(inside, dn * np.float32(1e-4) - np.float32(0.1), rtol=1e-6)
    assert np.isnan(got[:50]).all() and np.isnan(got[:, :100]).all() and np.isnan(got[350:]).all()
