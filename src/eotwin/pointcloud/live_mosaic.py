"""The live point cloud's mosaic: windows of several items warped onto the output grid, block by block.

The first window that has data for a pixel wins (the items come least cloudy first). Memory follows one
block of target rows, never a whole band.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window as RioWindow

from eotwin.geo.grid import Grid
from eotwin.io.raster import geotiff_writer, open_raster
from eotwin.sentinel2.windows import WindowFile

MOSAIC_BLOCK_ROWS = 512  # target rows per step: a full tile's band is never held whole


def mosaic_to_file(windows: list[WindowFile], target: Grid, path: Path, *, reflectance: bool,
                   resampling: Resampling, description: str) -> Path:
    """Windows (first = preferred) warped onto ``target`` and written to ``path`` block by block: float32
    reflectance (NaN = none) or uint8 classes (0 = none).

    Each window is read through a GDAL warped view onto ``target``, one block of target rows at a time,
    so memory follows the block, not the bbox (a full tile's band as float32 is 480 MB). The stored DN
    are warped and then scaled: with nearest resampling that is the same as scaling first.
    """
    from rasterio.vrt import WarpedVRT

    dtype = np.float32 if reflectance else np.uint8
    fill = np.nan if reflectance else 0
    dst_crs = rasterio.crs.CRS.from_wkt(target.crs.to_wkt())
    with contextlib.ExitStack() as stack:
        views = []
        for win in windows:
            ds = stack.enter_context(open_raster(win.path))
            nodata = ds.nodata if ds.nodata is not None else (None if reflectance else 0)
            # without a no-data value an alpha band tells the window's footprint from the rest of the target
            vrt = stack.enter_context(WarpedVRT(ds, crs=dst_crs, transform=target.transform, width=target.width,
                                                height=target.height, resampling=resampling, src_nodata=nodata,
                                                nodata=nodata, add_alpha=nodata is None))
            views.append((win, vrt, nodata))
        with geotiff_writer(path, target, 1, np.dtype(dtype).name, nodata=fill, descriptions=[description]) as dst:
            for block in target.row_blocks(MOSAIC_BLOCK_ROWS):
                rio_window = RioWindow(block.col_off, block.row_off, block.width, block.height)
                out = np.full((block.height, block.width), fill, dtype=dtype)
                for win, vrt, nodata in views:
                    raw = vrt.read(1, window=rio_window)
                    have = raw != nodata if nodata is not None else vrt.read(2, window=rio_window) > 0
                    have &= np.isnan(out) if reflectance else out == 0
                    if reflectance:
                        out[have] = raw[have].astype(np.float32) * np.float32(win.scale) + np.float32(win.offset)
                    else:
                        out[have] = raw[have]
                dst.write(out, 1, window=rio_window)
    return path
