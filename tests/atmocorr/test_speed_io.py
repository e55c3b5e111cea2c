"""The fast, bounded I/O of ``eotwin atmocorr run``: COG writing with streamed overviews, decimated
reads, the full-tile synthetic L1C and the bounded water-vapour estimate."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling

from eotwin.atmocorr import physics, products, water_vapour
from eotwin.atmocorr.lut import load_lut
from eotwin.atmocorr.products import BandReader, BlockWriter, halve_nodata_average, overview_count, read_toa
from eotwin.atmocorr.sample_l1c import make_tiled_l1c, mirror_index, simulate_toa
from eotwin.geo.grid import Grid, Window


def _grid(height: int, width: int) -> Grid:
    return Grid(Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5000000.0), width, height, CRS.from_epsg(32632))


def _image(bands: int, height: int, width: int, dtype: str, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(1, np.iinfo(dtype).max, (bands, height, width)).astype(dtype)
    data[:, rng.random((height, width)) < 0.2] = 0  # scattered no data
    data[:, : height // 5, : width // 3] = 0  # and a block of it
    return data


def _write_blocks(path: Path, data: np.ndarray, rows: int, **kwargs) -> Path:
    grid = _grid(*data.shape[1:])
    writer = BlockWriter(path, grid, data.shape[0], data.dtype.name, nodata=0, **kwargs)
    for w in grid.row_blocks(rows):
        writer.write(data[:, w.row_off : w.row_off + w.height], w)
    return writer.finish()


def test_halving_is_the_nodata_aware_mean_rounded_half_up_also_at_odd_edges():
    x = np.array([[[1, 2, 0, 7, 5], [4, 0, 0, 0, 6], [9, 10, 0, 3, 0]]], dtype=np.uint16)
    got = halve_nodata_average(x)
    # (1+2+4)/3 = 2.33 -> 2; nothing valid -> 0; (7)/1; (5+6)/2 = 5.5 -> 6; last row alone: 19/2 -> 10
    assert got.tolist() == [[[2, 7, 6], [10, 3, 0]]]
    assert got.dtype == np.uint16


def test_cog_overviews_streamed_per_block_equal_gdal_average_overviews(tmp_path):
    data = _image(3, 1200, 1100, "uint16")
    out = _write_blocks(
        tmp_path / "l2a.tif", data, rows=37, descriptions=("B02", "B03", "B04"), tags={"K": 1}
    )
    reference = tmp_path / "ref.tif"
    with rasterio.open(
        reference, "w", driver="GTiff", width=1100, height=1200, count=3, dtype="uint16", nodata=0,
        crs="EPSG:32632", transform=_grid(1200, 1100).transform,
    ) as ds:  # fmt: skip
        ds.write(data)
        ds.build_overviews([2, 4], Resampling.average)
    with rasterio.open(out) as ds, rasterio.open(reference) as ref:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.overviews(1) == ref.overviews(1) == [2**k for k in range(1, overview_count(1100, 1200) + 1)]
        assert ds.descriptions == ("B02", "B03", "B04") and ds.tags()["K"] == "1" and ds.nodata == 0
        np.testing.assert_array_equal(ds.read(), data)
        for level in range(2):
            with (
                rasterio.open(out, overview_level=level) as o,
                rasterio.open(reference, overview_level=level) as r,
            ):
                np.testing.assert_array_equal(o.read(), r.read())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l2a.tif", "ref.tif"]  # no staging file left


def test_rgb_cog_with_odd_sizes_and_blocks_out_of_order(tmp_path):
    data = _image(3, 1031, 1537, "uint8", seed=2)
    out = _write_blocks(tmp_path / "tci.tif", data, rows=256, photometric="RGB")
    with rasterio.open(out) as ds:
        assert [c.name for c in ds.colorinterp] == ["red", "green", "blue"]
        assert ds.overviews(1) == [2, 4]
        np.testing.assert_array_equal(ds.read(), data)
        with rasterio.open(out, overview_level=0) as o:
            np.testing.assert_array_equal(o.read(), halve_nodata_average(data))
    # blocks written bottom to top: GDAL builds the overviews at the end, the file is the same image
    grid = _grid(1031, 1537)
    writer = BlockWriter(tmp_path / "rev.tif", grid, 3, "uint8", nodata=0)
    for w in reversed(list(grid.row_blocks(300))):
        writer.write(data[:, w.row_off : w.row_off + w.height], w)
    writer.finish()
    with rasterio.open(tmp_path / "rev.tif") as ds:
        np.testing.assert_array_equal(ds.read(), data)
        assert ds.overviews(1) and ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rev.tif", "tci.tif"]


def test_aborted_writer_leaves_nothing(tmp_path):
    grid = _grid(1100, 1100)
    writer = BlockWriter(tmp_path / "x.tif", grid, 2, "uint16", nodata=0)
    writer.write(np.ones((2, 100, 1100), np.uint16), Window(0, 0, 100, 1100))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    return make_tiled_l1c(tmp_path_factory.mktemp("tile"), size=700, base=256, block_rows=256)


def test_tiled_l1c_is_the_mirrored_6s_forward_model_with_the_stack_conventions(tiled):
    product = products.open_l1c(tiled.l1c)
    assert product.grid.shape == (700, 700) and product.offsets["B02"] == -1000
    assert product.spacecraft == "S2A" and product.angles.means()["sun_zenith"] == pytest.approx(35.0)
    truth = tiled.surface(200, 300, 150, 400)  # crosses a mirror seam at 256 and 512
    with BandReader(product.bands, product.grid) as reader:
        toa = read_toa(reader, product, products.L2A_BANDS, Window(200, 300, 150, 400))
    from eotwin.atmocorr.srf import S2_BANDS

    expected = simulate_toa(
        truth[[S2_BANDS.index(b) for b in products.L2A_BANDS]], load_lut(), sensor="S2A",
        aerosol="continental", aot=0.2, wv=1.5, o3=0.33, bands=products.L2A_BANDS, **tiled.geometry,
    )  # fmt: skip
    np.testing.assert_allclose(toa, expected, atol=0.5e-4 + 1e-7)  # DN rounding only
    assert np.isnan(toa[:, -1, 0]).all() == np.isnan(truth[:, -1, 0]).all()
    assert mirror_index(254, 4, 256).tolist() == [254, 255, 255, 254]
    # the swath edge: the lower-left corner is no data
    with BandReader(product.bands, product.grid) as reader:
        corner = reader.read(("B02",), Window(690, 0, 10, 10))
    assert np.isnan(corner).all()


def test_decimated_read_equals_decimating_the_full_read(tiled):
    product = products.open_l1c(tiled.l1c)
    window = Window(13, 0, 301, 700)
    with BandReader(product.bands, product.grid) as reader:
        full = read_toa(reader, product, products.L2A_BANDS, window)
        step = read_toa(reader, product, products.L2A_BANDS, window, step=6)
        dn = reader.read(("B04",), window)
    np.testing.assert_array_equal(step, full[:, ::6, ::6])
    np.testing.assert_array_equal(
        full[products.L2A_BANDS.index("B04")], (dn[0] + np.float32(-1000)) / np.float32(10000)
    )


def test_water_vapour_estimate_is_bounded_on_many_pixels_and_recovers_the_truth():
    lut = load_lut()
    rng = np.random.default_rng(3)
    n = 400_000
    surface = rng.uniform(0.15, 0.4, n)  # flat between B8A and B09, the method's premise
    geometry = dict(sza=40.0, vza=6.0, raa=120.0)
    terms = lut.terms_for("S2A", ("B8A", "B09"), "continental", 0.2, wv=2.1, o3=0.33, **geometry)
    toa = physics.forward(np.stack([surface, surface]), terms)
    kwargs = dict(sensor="S2A", aerosol="continental", aot=0.2, o3=0.33, **geometry)
    tracemalloc.start()
    wv = water_vapour.retrieve_water_vapour(toa[0], toa[1], lut, **kwargs).wv
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert wv == pytest.approx(2.1, abs=0.05)
    # 49 candidates x 400k pixels in float64 would be 157 MB per array; bounded: a few (7 x 50k) arrays
    assert peak < 40 * 2**20, peak / 2**20
    # the same as the estimate on the evenly spread subsample it takes
    idx = np.linspace(0, n - 1, water_vapour.WV_MAX_SAMPLE).astype(np.int64)
    assert water_vapour.retrieve_water_vapour(toa[0][idx], toa[1][idx], lut, **kwargs).wv == wv


def test_gdal_cache_env_sets_megabytes_not_bytes():
    """Bug found: pipelines passed GDAL_CACHEMAX=128 to rasterio, which means 128 bytes of block cache."""
    from rasterio._env import get_gdal_config

    from eotwin.io.raster import gdal_cache_env

    with gdal_cache_env(128):
        assert int(get_gdal_config("GDAL_CACHEMAX")) == 128 * 2**20
