"""The raster grid: an affine transform, a shape and a CRS, and the geometry that follows from them.

A :class:`Grid` is the data model every pipeline agrees on: images, DEMs and outputs are values
on a grid, and a point of the cloud is the centre of one of its pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer

from eotwin.errors import EotwinError

Bounds = tuple[float, float, float, float]  # (left, bottom, right, top)


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: offsets and size, in rows and columns."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_slice(self) -> slice:
        return slice(self.row_off, self.row_off + self.height)

    @property
    def col_slice(self) -> slice:
        return slice(self.col_off, self.col_off + self.width)


@dataclass(frozen=True)
class Grid:
    """A georeferenced pixel grid. Pixel (row, col) covers ``transform * (col, row)`` to ``(col+1, row+1)``."""

    transform: Affine
    width: int
    height: int
    crs: CRS

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise EotwinError(f"grid has an empty shape ({self.height} x {self.width})")
        if not isinstance(self.crs, CRS):
            object.__setattr__(self, "crs", CRS.from_user_input(self.crs))

    # --- shape and extent -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def is_rectilinear(self) -> bool:
        return self.transform.b == 0 and self.transform.d == 0

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) as positive numbers."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> Bounds:
        xs, ys = [], []
        for col, row in ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height)):
            x, y = self.transform @ (col, row)
            xs.append(x)
            ys.append(y)
        return (min(xs), min(ys), max(xs), max(ys))

    # --- pixel centres ----------------------------------------------------------------------
    def pixel_centres(self, rows: slice | None = None, cols: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """X and Y (float64) of the pixel centres in ``rows`` x ``cols``, each shaped (nrows, ncols)."""
        r0, r1, _ = (rows or slice(0, self.height)).indices(self.height)
        c0, c1, _ = (cols or slice(0, self.width)).indices(self.width)
        col_idx = np.arange(c0, c1, dtype=np.float64) + 0.5
        row_idx = np.arange(r0, r1, dtype=np.float64) + 0.5
        t = self.transform
        if self.is_rectilinear:
            x = t.c + t.a * col_idx
            y = t.f + t.e * row_idx
            return np.broadcast_to(x, (row_idx.size, col_idx.size)), np.broadcast_to(y[:, None], (row_idx.size, col_idx.size))
        cc, rr = np.meshgrid(col_idx, row_idx)
        return t.c + t.a * cc + t.b * rr, t.f + t.d * cc + t.e * rr

    # --- sub-grids and blocks ---------------------------------------------------------------
    def window_grid(self, window: Window) -> Grid:
        """The grid of a window of this grid (same CRS and resolution)."""
        return Grid(self.transform @ Affine.translation(window.col_off, window.row_off), window.width, window.height, self.crs)

    def row_blocks(self, block_rows: int) -> Iterator[Window]:
        """Full-width windows of at most ``block_rows`` rows, top to bottom."""
        if block_rows <= 0:
            raise EotwinError("block_rows must be positive")
        for row in range(0, self.height, block_rows):
            yield Window(row, 0, min(block_rows, self.height - row), self.width)

    def tiles(self, tile_rows: int, tile_cols: int) -> Iterator[Window]:
        for row in range(0, self.height, tile_rows):
            for col in range(0, self.width, tile_cols):
                yield Window(row, col, min(tile_rows, self.height - row), min(tile_cols, self.width - col))

    def window_for_bounds(self, bounds: Bounds) -> Window | None:
        """The smallest window of whole pixels covering ``bounds`` (in this grid's CRS), clipped; None if disjoint."""
        if not self.is_rectilinear:
            raise EotwinError("window_for_bounds needs a north-up grid")
        inv = ~self.transform
        left, bottom, right, top = bounds
        c0, r0 = inv @ (left, top)
        c1, r1 = inv @ (right, bottom)
        c0, c1 = sorted((c0, c1))
        r0, r1 = sorted((r0, r1))
        eps = 1e-9
        col0 = max(0, math.floor(c0 + eps))
        row0 = max(0, math.floor(r0 + eps))
        col1 = min(self.width, math.ceil(c1 - eps))
        row1 = min(self.height, math.ceil(r1 - eps))
        if col1 <= col0 or row1 <= row0:
            return None
        return Window(row0, col0, row1 - row0, col1 - col0)

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def from_bounds(cls, bounds: Bounds, resolution: float, crs: CRS | str | int, *, snap: bool = True) -> Grid:
        """A north-up grid covering ``bounds`` at ``resolution``; edges snapped to multiples of it when ``snap``."""
        left, bottom, right, top = bounds
        if snap:
            left = math.floor(left / resolution) * resolution
            top = math.ceil(top / resolution) * resolution
            right = math.ceil(right / resolution) * resolution
            bottom = math.floor(bottom / resolution) * resolution
        width = max(1, round((right - left) / resolution))
        height = max(1, round((top - bottom) / resolution))
        return cls(Affine(resolution, 0, left, 0, -resolution, top), width, height, CRS.from_user_input(crs))


# --- CRS helpers ------------------------------------------------------------------------------
def utm_crs_for_lonlat(lon: float, lat: float) -> CRS:
    """The WGS 84 / UTM zone CRS containing (lon, lat) (EPSG:326xx north, 327xx south)."""
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise EotwinError(f"longitude/latitude out of range: {lon}, {lat}")
    zone = min(60, int((lon + 180) // 6) + 1)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def transform_bounds(bounds: Bounds, src: CRS, dst: CRS, densify: int = 21) -> Bounds:
    """Bounds of ``bounds`` reprojected from ``src`` to ``dst``, densified along the edges."""
    src, dst = CRS.from_user_input(src), CRS.from_user_input(dst)
    if src == dst:
        return bounds
    transformer = Transformer.from_crs(src, dst, always_xy=True)
    return transformer.transform_bounds(*bounds, densify_pts=densify)


def intersect_bounds(a: Bounds, b: Bounds) -> Bounds | None:
    left, bottom = max(a[0], b[0]), max(a[1], b[1])
    right, top = min(a[2], b[2]), min(a[3], b[3])
    if right <= left or top <= bottom:
        return None
    return (left, bottom, right, top)
