"""open_raster on remote paths: a header that lost its georeferencing in transit is worth another try."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.shutil import delete as rasterio_delete
from rasterio.transform import from_origin

from eotwin.errors import EotwinError
from eotwin.io.raster import RasterOpenError, open_raster


def _geotiff_without_crs(path: str) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8",
                       transform=from_origin(0, 8, 1, 1)) as ds:
        ds.write(np.zeros((1, 8, 8), np.uint8))


def test_a_remote_raster_without_crs_is_a_transient_error(tmp_path):
    """Under 20-40 % faults a CDSE SCL band opened without its CRS once in a few tiled builds (the tags' range
    came back cut short) and the tile failed as if the file had none; now the window read retries it."""
    remote = "/vsimem/eotwin-test/scl.tif"  # any /vsi path counts as remote
    _geotiff_without_crs(remote)
    try:
        with pytest.raises(RasterOpenError, match="no CRS") as caught, open_raster(remote):
            pass
        assert caught.value.transient
    finally:
        rasterio_delete(remote)


def test_a_local_raster_without_crs_is_a_user_error(tmp_path):
    local = tmp_path / "plain.tif"
    _geotiff_without_crs(str(local))
    with pytest.raises(EotwinError, match="raster has no CRS") as caught, open_raster(local):
        pass
    assert not getattr(caught.value, "transient", False)


def test_the_window_read_retries_a_transient_open(monkeypatch):
    from eotwin.sentinel2 import windows

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            error = RasterOpenError("/vsis3/x.tif: raster has no CRS (its header may have been cut short in transit)")
            error.transient = True
            raise error
        return "data"

    assert windows._with_retries(flaky, 3, 0.0, "SCL") == "data" and len(calls) == 3
