"""COG writing with streamed overviews (:mod:`eotwin.io.cog`): GDAL's average overviews, computed as rows arrive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling

from eotwin.geo.grid import Grid, Window
from eotwin.io.cog import BlockWriter, halve_nodata_average, overview_count


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
