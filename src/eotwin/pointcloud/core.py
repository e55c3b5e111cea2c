"""Points from one block of aligned rasters (pure: arrays in, arrays out).

A block is a window of the output grid with, for every pixel, the DEM height, the colour and a
mask of the pixels that become points. Every kept pixel becomes one point at its pixel centre; the
block travels as a :class:`~eotwin.geo.pointdata.PointBlock`.
"""

from __future__ import annotations

import numpy as np

from eotwin.geo.grid import Grid, Window
from eotwin.geo.pointdata import PointBlock


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
