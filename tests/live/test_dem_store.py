"""The EDH DEM reader on the store layouts: lat/lon (GLO-30), latitude/longitude, and the UTM x/y variant."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
from pyproj import CRS, Transformer

from eotwin.io.remote.cache import Cache
from eotwin.io.remote.credentials import Credentials
from eotwin.io.remote.edh_dem import dem_slice
from eotwin.io.remote.endpoints import Endpoints
from eotwin.sample.scene import elevation_at


def utm_store(path, zone_dir: str = "32N", with_grid_mapping: bool = False):
    """A store laid out like EDH's GLO-30-UTM: variable ``dem`` on y/x, 20 m, EPSG:32632."""
    x = 366000.0 + 10.0 + 20.0 * np.arange(300)
    y = 5067000.0 - 10.0 - 20.0 * np.arange(250)
    xx, yy = np.meshgrid(x, y)
    ds = xr.Dataset({"dem": (("y", "x"), elevation_at(xx, yy).astype(np.float32))}, coords={"y": y, "x": x})
    if with_grid_mapping:
        ds["spatial_ref"] = xr.DataArray(0, attrs={"crs_wkt": CRS.from_epsg(32632).to_wkt()})
        ds["dem"].attrs["grid_mapping"] = "spatial_ref"
    store = path / zone_dir
    ds.to_zarr(store, mode="w", zarr_format=2, consolidated=True, encoding={"dem": {"chunks": (64, 64)}})
    return store, xx, yy


@pytest.mark.parametrize("grid_mapping", [False, True])
def test_utm_store_slice_is_in_its_own_crs(tmp_path, grid_mapping):
    store, xx, yy = utm_store(tmp_path / ("gm" if grid_mapping else "url"), with_grid_mapping=grid_mapping)
    bbox = Transformer.from_crs(32632, 4326, always_xy=True).transform_bounds(368000, 5063000, 369000, 5064000)
    path = dem_slice(bbox, Endpoints(dem_url=str(store)), Credentials(), Cache(tmp_path / "c", enabled=False), tmp_path)
    with rasterio.open(path) as ds:
        assert CRS.from_wkt(ds.crs.to_wkt()).to_epsg() == 32632
        data = ds.read(1)
        left, bottom, right, top = ds.bounds
        assert left <= 368000 - 60 and right >= 369000 + 60 and bottom <= 5063000 - 60 and top >= 5064000 + 60
        cols = ((np.arange(ds.width) + 0.5) * 20 + left)
        rows = (top - (np.arange(ds.height) + 0.5) * 20)
        cx, cy = np.meshgrid(cols, rows)
        np.testing.assert_allclose(data, elevation_at(cx, cy), atol=1e-3)


def test_store_without_crs_is_a_clear_error(tmp_path):
    store, _, _ = utm_store(tmp_path, zone_dir="nozone")
    with pytest.raises(Exception, match="no CRS"):
        dem_slice((7.3, 45.72, 7.31, 45.73), Endpoints(dem_url=str(store)), Credentials(),
                  Cache(tmp_path / "c", enabled=False), tmp_path)
