"""Points from one block of aligned rasters (pure: arrays in, arrays out).

A block is a window of the output grid with, for every pixel, the DEM height, the colour and a
validity mask. Every valid pixel becomes one point at its pixel centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eotwin.geo.grid import Grid, Window


@dataclass(frozen=True)
class PointBlock:
    x: np.ndarray  # float64
    y: np.ndarray  # float64
    z: np.ndarray  # float64, metres x z_scale
    rgb: np.ndarray  # (n, 3) uint8

    def __len__(self) -> int:
        return int(self.x.size)


def block_points(grid: Grid, window: Window, z: np.ndarray, rgb: np.ndarray, valid: np.ndarray,
                 z_scale: float = 1.0, keep: np.ndarray | None = None) -> PointBlock:
    """Points for the valid pixels of ``window`` (optionally only the ``keep``-th valid ones).

    ``z`` is (h, w) float, ``rgb`` (3, h, w) uint8, ``valid`` (h, w) bool, ``keep`` sorted indices
    into the flattened valid pixels (row-major), from :class:`~eotwin.pointcloud.sampling.StreamingSampler`.
    """
    flat = np.flatnonzero(valid)
    if keep is not None:
        flat = flat[keep]
    rows, cols = np.divmod(flat, window.width)
    t = grid.transform
    col_c = cols.astype(np.float64) + (window.col_off + 0.5)
    row_c = rows.astype(np.float64) + (window.row_off + 0.5)
    x = t.c + t.a * col_c + t.b * row_c
    y = t.f + t.d * col_c + t.e * row_c
    zz = z.reshape(-1)[flat].astype(np.float64) * z_scale
    colours = rgb.reshape(3, -1)[:, flat].T
    return PointBlock(x, y, zz, np.ascontiguousarray(colours))


def validity(z: np.ndarray, z_nodata: float | None, rgb_valid: np.ndarray, mask_valid: np.ndarray | None) -> np.ndarray:
    """A pixel makes a point only with a finite DEM height, a valid colour and not masked out."""
    ok = np.isfinite(z) & rgb_valid
    if z_nodata is not None and not np.isnan(z_nodata):
        ok &= z != z_nodata
    if mask_valid is not None:
        ok &= mask_valid
    return ok
