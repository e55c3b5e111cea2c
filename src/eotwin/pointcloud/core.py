"""Points from one block of aligned rasters (pure: arrays in, arrays out).

A block is a window of the output grid with, for every pixel, the DEM height, the colour and a
mask of the pixels that become points. Every kept pixel becomes one point at its pixel centre.

The block is kept as rasters plus a mask rather than as point arrays, so that a writer can build
exactly the columns it stores (LAS wants scaled integers, PLY float64) with one masked gather each:
coordinates come from per-row and per-column tables, never from a float64 array per point that would
then be converted again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from affine import Affine

from eotwin.geo.grid import Grid, Window


@dataclass(frozen=True)
class PointBlock:
    """The points of one window: pixels where ``mask`` is true, in row-major order."""

    transform: Affine  # of the whole grid
    window: Window
    mask: np.ndarray  # (h, w) bool
    heights: np.ndarray  # (h, w) float, metres
    colours: np.ndarray  # (3, h, w) uint8
    z_scale: float = 1.0
    count: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "count", int(np.count_nonzero(self.mask)))

    def __len__(self) -> int:
        return self.count

    # --- coordinate tables ----------------------------------------------------------------
    @property
    def is_rectilinear(self) -> bool:
        return self.transform.b == 0 and self.transform.d == 0

    def column_centres(self) -> np.ndarray:
        """X of the pixel centres of each column of the window (rectilinear grids)."""
        cols = np.arange(self.window.width, dtype=np.float64) + (self.window.col_off + 0.5)
        return self.transform.c + self.transform.a * cols

    def row_centres(self) -> np.ndarray:
        """Y of the pixel centres of each row of the window (rectilinear grids)."""
        rows = np.arange(self.window.height, dtype=np.float64) + (self.window.row_off + 0.5)
        return self.transform.f + self.transform.e * rows

    @property
    def full(self) -> bool:
        """Every pixel of the window is a point (the common case inside a scene): no gather needed."""
        return self.count == self.mask.size

    def per_column(self, table: np.ndarray) -> np.ndarray:
        """``table[col]`` for every point (a value per window column, gathered through the mask)."""
        if self.full:
            return np.tile(table, self.window.height)
        return np.broadcast_to(table, self.mask.shape)[self.mask]

    def per_row(self, table: np.ndarray) -> np.ndarray:
        if self.full:
            return np.repeat(table, self.window.width)
        return np.broadcast_to(table[:, None], self.mask.shape)[self.mask]

    def _masked(self, raster: np.ndarray) -> np.ndarray:
        return raster.reshape(-1) if self.full else raster[self.mask]

    # --- point arrays -----------------------------------------------------------------------
    @property
    def x(self) -> np.ndarray:
        if self.is_rectilinear:
            return self.per_column(self.column_centres())
        rows, cols = self._rows_cols()
        t = self.transform
        return t.c + t.a * cols + t.b * rows

    @property
    def y(self) -> np.ndarray:
        if self.is_rectilinear:
            return self.per_row(self.row_centres())
        rows, cols = self._rows_cols()
        t = self.transform
        return t.f + t.d * cols + t.e * rows

    @property
    def z(self) -> np.ndarray:
        """Heights of the points, float64 metres times the z scale."""
        return self._masked(self.heights).astype(np.float64) * self.z_scale

    @property
    def rgb(self) -> np.ndarray:
        """(n, 3) uint8 colours."""
        return np.ascontiguousarray(self.colours[:, self.mask].T)

    def channel(self, band: int) -> np.ndarray:
        """One colour channel (n,) uint8, without building the (n, 3) array."""
        return self._masked(self.colours[band])

    def _rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = np.nonzero(self.mask)
        return rows + (self.window.row_off + 0.5), cols + (self.window.col_off + 0.5)


def block_points(grid: Grid, window: Window, z: np.ndarray, rgb: np.ndarray, valid: np.ndarray,
                 z_scale: float = 1.0, keep: np.ndarray | None = None) -> PointBlock:
    """The points of the valid pixels of ``window`` (optionally only the ``keep``-th valid ones).

    ``z`` is (h, w) float, ``rgb`` (3, h, w) uint8, ``valid`` (h, w) bool, ``keep`` sorted indices
    into the flattened valid pixels (row-major), from :class:`~eotwin.pointcloud.sampling.StreamingSampler`.
    """
    mask = valid
    if keep is not None:
        flat = np.flatnonzero(valid)[keep]
        mask = np.zeros(valid.size, dtype=bool)
        mask[flat] = True
        mask = mask.reshape(valid.shape)
    return PointBlock(grid.transform, window, mask, z, rgb, z_scale)


def validity(z: np.ndarray, z_nodata: float | None, rgb_valid: np.ndarray, mask_valid: np.ndarray | None) -> np.ndarray:
    """A pixel makes a point only with a finite DEM height, a valid colour and not masked out."""
    ok = np.isfinite(z)
    ok &= rgb_valid
    if z_nodata is not None and not np.isnan(z_nodata):
        ok &= z != z_nodata
    if mask_valid is not None:
        ok &= mask_valid
    return ok
