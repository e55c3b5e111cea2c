"""A DEM on the product's grid for the terrain-aware inversion: block reads with slope, and a scene elevation.

I/O edge of :mod:`eotwin.atmocorr.terrain`: the DEM (a GeoTIFF in any CRS, heights in metres) is
warped bilinearly onto the L1C grid window by window, one pixel of margin around each block so the
slope at a block's edge sees its neighbours.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine

from eotwin.atmocorr import terrain
from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, Window

OVERVIEW_SIDE = 512  # the scene elevation comes from the DEM averaged onto at most this many pixels per side


@dataclass(frozen=True)
class TerrainBlock:
    """Elevation (m), slope and aspect (radians) of one block; NaN where the DEM has no data."""

    elevation: np.ndarray
    slope: np.ndarray
    aspect: np.ndarray


class DemOnGrid:
    """Reads a DEM onto windows of ``grid``; ``scene_elevation`` summarises it for the scene-wide retrieval."""

    def __init__(self, path: str | Path, grid: Grid, stack: contextlib.ExitStack) -> None:
        from eotwin.pointcloud.sources import DemSource

        self.path = str(path)
        self.grid = grid
        self._source = DemSource(self.path, stack)
        self._source.attach(grid)
        stack.callback(self._source.close)

    def scene_elevation(self) -> tuple[float, float]:
        """Median elevation over the scene (m) and the share of the scene the DEM leaves without data."""
        import rasterio
        from rasterio.warp import Resampling, reproject

        step = max(1, int(np.ceil(max(self.grid.width, self.grid.height) / OVERVIEW_SIDE)))
        shape = (max(1, self.grid.height // step), max(1, self.grid.width // step))
        out = np.full(shape, np.nan, dtype=np.float32)
        src = self._source.dataset
        nodata = src.nodata
        reproject(
            rasterio.band(src, 1),
            out,
            src_nodata=nodata,
            dst_nodata=np.nan,
            dst_transform=self.grid.transform @ Affine.scale(step),
            dst_crs=rasterio.crs.CRS.from_wkt(self.grid.crs.to_wkt()),
            resampling=Resampling.average,
        )
        finite = np.isfinite(out)
        if not finite.any():
            raise EotwinError(f"{self.path}: the DEM does not cover the product (no height on its grid)")
        median = float(np.median(out[finite]))
        terrain.pressure_ratio(out[finite])  # refuses heights no ground has (feet, centimetres, garbage)
        return median, float(1.0 - finite.mean())

    def read(self, window: Window) -> TerrainBlock:
        """Elevation, slope and aspect of ``window`` (the slope uses one pixel of margin where there is one)."""
        top, left = max(0, window.row_off - 1), max(0, window.col_off - 1)
        bottom = min(self.grid.height, window.row_off + window.height + 1)
        right = min(self.grid.width, window.col_off + window.width + 1)
        z = self._source.read(Window(top, left, bottom - top, right - left)).astype(np.float64)
        if min(z.shape) < 2:  # a one-pixel strip has no slope: flat
            inner = z[: window.height, : window.width]
            return TerrainBlock(inner, np.zeros_like(inner), np.zeros_like(inner))
        res_x, res_y = self.grid.res
        slope, aspect = terrain.slope_aspect(z, abs(res_x), abs(res_y))
        rows = slice(window.row_off - top, window.row_off - top + window.height)
        cols = slice(window.col_off - left, window.col_off - left + window.width)
        return TerrainBlock(z[rows, cols], slope[rows, cols], aspect[rows, cols])
