"""The COPC octree of a raster-born cloud (pure: arrays in, arrays out).

Every point comes from a pixel of a regular grid, so its level of detail can be decided from its
pixel's row and column alone, while the cloud streams by: level ``d`` holds the pixels on the
lattice of stride ``2**(depth - d)`` that are not on a coarser one. Level 0 is then an evenly
spread 1-in-``4**depth`` subset of the whole extent, each level adds the pixels halfway between the
previous ones, and the deepest level holds the rest; every point is in exactly one level.

The cube is anchored at the grid's top-left corner and its depth-``depth`` cells are a whole
number of pixels wide, so node boundaries fall on pixel edges (never through a pixel centre). A
point of level ``d`` lives in the depth-``d + shift`` node that contains it; ``shift`` is non-zero
only when the heights span more than the grid's width, and the cube must grow upwards to hold them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NODE_SIDE_PIXELS = 256  # lattice points per node side and level: nodes of about 50 000 points (a LAZ chunk)
BUCKET_LEVELS = 3  # spill buckets are the cells BUCKET_LEVELS above the deepest level (64 leaf nodes each)
MAX_BUCKET_DEPTH = 7  # 4**7 bucket ids fit an int16 (sorted by radix); only grids over 250 000 px wide reach it
MAX_DEPTH = 19  # keys packed as level (5 bits) and x, y, z (19 bits each) in one int64


@dataclass(frozen=True)
class OctreeLayout:
    """Where the octree's cells lie in x and y, decided from the grid before any point is read."""

    depth: int  # the level whose lattice is every pixel
    cell: float  # side of a depth-``depth`` cell, CRS units, a whole number of pixels
    x0: float  # min x of the cube
    y0: float  # min y of the cube (the grid's top minus the cube's side)
    bucket_depth: int  # spill buckets: the cells of this depth (levels below it form the 'top' bucket)
    res_x: float  # pixel width: level 0 has a point every ``2**depth`` pixels

    @property
    def side(self) -> float:
        return self.cell * 2**self.depth

    @property
    def buckets_per_axis(self) -> int:
        return 2**self.bucket_depth


@dataclass(frozen=True)
class Cube:
    """The COPC root cube, known once the heights are: centre, half side, and the depth shift of the levels."""

    center: tuple[float, float, float]
    halfsize: float
    z0: float
    shift: int
    spacing: float  # distance between the root's points (halves per level)


def plan_layout(width: int, height: int, res_x: float, res_y: float, left: float, top: float,
                node_side: int = NODE_SIDE_PIXELS) -> OctreeLayout:
    """Depth and cell size so that each node holds at most ``node_side**2`` points of its level."""
    if width < 1 or height < 1 or res_x <= 0 or res_y <= 0:
        raise ValueError("the grid must have positive size and resolution")
    longest = max(width * res_x, height * res_y)
    depth = max(0, math.ceil(math.log2(max(width, height) / node_side)))
    cell = math.ceil(longest / 2**depth / res_x - 1e-9) * res_x  # whole pixels: cell edges on pixel edges
    side = cell * 2**depth
    bucket_depth = min(MAX_BUCKET_DEPTH, max(0, depth - BUCKET_LEVELS))
    return OctreeLayout(depth, cell, float(left), float(top) - side, bucket_depth, float(res_x))


def trailing_zeros(values: np.ndarray, cap: int) -> np.ndarray:
    """Number of trailing zero bits of each non-negative integer, at most ``cap`` (zero counts as ``cap``)."""
    values = np.asarray(values, dtype=np.int64)
    lowest = values & -values  # the lowest set bit (0 for 0)
    out = np.full(values.shape, cap, dtype=np.int64)
    nonzero = lowest > 0
    out[nonzero] = np.minimum(np.log2(lowest[nonzero]).astype(np.int64), cap)
    return out


def row_levels(rows: np.ndarray, depth: int) -> np.ndarray:
    """Trailing zeros of pixel rows (or columns), capped at ``depth``: the level of a pixel is
    ``depth - min(row_levels(row), row_levels(col))``."""
    return trailing_zeros(rows, depth).astype(np.uint8)


def levels_from_tables(row_tz: np.ndarray, col_tz: np.ndarray, depth: int) -> np.ndarray:
    """Level of each point from its row's and column's trailing-zero counts (both (n,) uint8)."""
    return (depth - np.minimum(row_tz, col_tz)).astype(np.uint8)


def cell_index(values: np.ndarray, origin: float, cell: float, count: int) -> np.ndarray:
    """Index of the depth-``depth`` cell holding each coordinate, clipped into the cube."""
    index = np.floor((np.asarray(values, dtype=np.float64) - origin) / cell).astype(np.int64)
    return np.clip(index, 0, count - 1)


def bucket_ids(ix: np.ndarray, iy: np.ndarray, levels: np.ndarray, layout: OctreeLayout) -> np.ndarray:
    """Spill bucket of each point: its depth-``bucket_depth`` column of the cube, or -1 for the top levels."""
    drop = layout.depth - layout.bucket_depth
    ids = (ix >> drop) * layout.buckets_per_axis + (iy >> drop)
    ids[levels < layout.bucket_depth] = -1
    return ids.astype(np.int16)


def plan_cube(layout: OctreeLayout, zmin: float, zmax: float) -> Cube:
    """The root cube once the heights are known: it grows (and the levels move down) while it is thinner than them."""
    shift = 0
    while layout.side * 2**shift < (zmax - zmin) * (1 + 1e-12):
        shift += 1
    if layout.depth + shift > MAX_DEPTH:
        raise ValueError(f"the octree would need {layout.depth + shift} levels (at most {MAX_DEPTH})")
    halfsize = layout.side * 2**shift / 2
    zc = (zmin + zmax) / 2
    center = (layout.x0 + halfsize, layout.y0 + halfsize, zc)
    spacing = layout.res_x * 2 ** (layout.depth + shift)  # level 0 (at depth ``shift``): every 2**depth pixels
    return Cube(center, halfsize, zc - halfsize, shift, spacing)


def node_codes(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, levels: np.ndarray, layout: OctreeLayout,
               shift: int) -> np.ndarray:
    """One sortable int64 per point naming its node: (depth, x, y, z) packed, depth = level + shift."""
    drop = (layout.depth - levels.astype(np.int64))
    depth = levels.astype(np.int64) + shift
    kx, ky, kz = ix >> drop, iy >> drop, iz >> drop
    return (((depth << 19 | kx) << 19 | ky) << 19) | kz


def unpack_code(code: int) -> tuple[int, int, int, int]:
    """(depth, x, y, z) of a node code."""
    mask = (1 << 19) - 1
    return code >> 57, (code >> 38) & mask, (code >> 19) & mask, code & mask


def with_ancestors(keys: set[tuple[int, int, int, int]]) -> set[tuple[int, int, int, int]]:
    """Every node's ancestors up to the root: a COPC reader walks down from the root, so none may be missing."""
    out = set(keys)
    for d, x, y, z in keys:
        while d > 0:
            d, x, y, z = d - 1, x >> 1, y >> 1, z >> 1
            if (d, x, y, z) in out:
                break
            out.add((d, x, y, z))
    return out
