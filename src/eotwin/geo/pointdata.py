"""Point-cloud and mesh data types (pure data, no I/O): what the point-cloud pipeline makes and io/ writes.

A :class:`PointBlock` is one window of the output grid kept as rasters plus a mask rather than as point
arrays, so that a writer can build exactly the columns it stores (LAS wants scaled integers, PLY float64)
with one masked gather each: coordinates come from per-row and per-column tables, never from a float64
array per point that would then be converted again. A :class:`TerrainMesh` is a coloured triangle mesh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from affine import Affine

from eotwin.geo.grid import Window


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


@dataclass(frozen=True)
class TerrainMesh:
    vertices: np.ndarray  # (n, 3) float64, grid CRS units
    faces: np.ndarray  # (m, 3) uint32, counter-clockwise seen from above
    colours: np.ndarray  # (n, 3) uint8
    normals: np.ndarray  # (n, 3) float32, unit length

    @property
    def origin(self) -> np.ndarray:
        """A local origin (the vertices' minimum) so float32 coordinates keep centimetres."""
        return self.vertices.min(axis=0) if len(self.vertices) else np.zeros(3)
