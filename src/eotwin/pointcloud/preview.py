"""A headless PNG preview of a point cloud: an oblique view with eye-dome lighting.

Rendering is plain numpy (project, z-buffer, shade) so it runs in any container without a display
or a GPU; only the final PNG encoding uses matplotlib.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eotwin.io.files import atomic_path
from eotwin.io.pointcloud_reader import read_points


def render_oblique(xyz: np.ndarray, rgb: np.ndarray, *, width: int = 1200, height: int = 800, azimuth_deg: float = 20.0,
                   elevation_deg: float = 40.0, z_exaggeration: float = 1.0, point_px: int | None = None,
                   background: tuple[int, int, int] = (16, 20, 24)) -> np.ndarray:
    """Render points to an (height, width, 3) uint8 image seen from ``azimuth``/``elevation`` (pure)."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = background
    if len(xyz) == 0:
        return image
    p = xyz - (xyz.min(axis=0) + xyz.max(axis=0)) / 2.0
    p = p * np.array([1.0, 1.0, z_exaggeration])
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    # camera looks from direction (az, el): rotate about z, then tilt
    x1 = p[:, 0] * np.cos(az) - p[:, 1] * np.sin(az)
    y1 = p[:, 0] * np.sin(az) + p[:, 1] * np.cos(az)
    screen_x = x1
    screen_y = y1 * np.sin(el) + p[:, 2] * np.cos(el)
    depth = y1 * np.cos(el) - p[:, 2] * np.sin(el)  # larger = farther
    span = max(np.ptp(screen_x), np.ptp(screen_y) * width / height, 1e-9)
    scale = (width - 20) / span
    cols = np.round((screen_x - screen_x.min()) * scale + (width - np.ptp(screen_x) * scale) / 2).astype(np.int64)
    rows = np.round((screen_y.max() - screen_y) * scale + (height - np.ptp(screen_y) * scale) / 2).astype(np.int64)
    if point_px is None:  # splat size from the mean point spacing on screen, so surfaces look closed
        footprint = max(np.ptp(p[:, 0]) * np.ptp(p[:, 1]), 1e-9)
        point_px = int(np.clip(np.ceil(1.6 * np.sqrt(footprint / len(p)) * scale), 1, 8))
    zbuf = np.full((height, width), np.inf)
    order = np.argsort(-depth)  # far to near: nearer points overwrite
    for dr in range(point_px):
        for dc in range(point_px):
            r, c = rows[order] + dr, cols[order] + dc
            ok = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            image[r[ok], c[ok]] = rgb[order][ok]
            zbuf[r[ok], c[ok]] = depth[order][ok]
    return _eye_dome_lighting(image, zbuf, strength=6.0 / max(np.ptp(depth), 1e-9) * 50)


def _eye_dome_lighting(image: np.ndarray, zbuf: np.ndarray, strength: float) -> np.ndarray:
    """Darken pixels nearer-looking neighbours hide: the standard EDL shading of point renderers."""
    filled = np.isfinite(zbuf)
    if not filled.any():
        return image
    z = np.where(filled, np.log1p(zbuf - zbuf[filled].min()), 0.0)
    response = np.zeros_like(z)
    for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        neighbour = np.roll(np.roll(z, dr, axis=0), dc, axis=1)
        n_filled = np.roll(np.roll(filled, dr, axis=0), dc, axis=1)
        response += np.where(n_filled, np.maximum(0.0, z - neighbour), 0.0)
    shade = np.exp(-strength * response)
    out = image.astype(np.float32)
    out[filled] *= shade[filled][:, None]
    return np.clip(out, 0, 255).astype(np.uint8)


def render_preview(cloud_path: str | Path, png_path: str | Path, max_points: int = 300_000, seed: int = 0, **view) -> Path:
    """Write an oblique shaded PNG of a LAS/LAZ/PLY file (decimated to ``max_points``) atomically."""
    from eotwin.report.plotting import pyplot

    plt = pyplot()

    sample = read_points(cloud_path, max_points=max_points, seed=seed)
    image = render_oblique(sample.xyz, sample.rgb, **view)
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        plt.imsave(tmp, image, format="png")
    return png_path
