"""An offline, self-contained WebGL viewer for a point cloud: one HTML file, no network.

Points are thinned to at most ``max_points`` (about a million keeps a browser responsive) and
embedded as base64 float32 coordinates relative to the cloud's centre, so the page works from a
file system, an e-mail attachment or a DeltaTwin output.
"""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path

import numpy as np

from eotwin.io.files import write_text_atomic
from eotwin.io.pointcloud_reader import PointSample, read_points


def crs_label(crs_wkt: str | None) -> str:
    if not crs_wkt:
        return "unknown"
    from pyproj import CRS

    crs = CRS.from_user_input(crs_wkt)
    epsg = crs.to_epsg()
    return f"{crs.name} (EPSG:{epsg})" if epsg else crs.name


def render_viewer_html(sample: PointSample, title: str) -> str:
    """The viewer page for an in-memory sample (pure: no file access)."""
    xyz = sample.xyz
    if len(xyz):
        lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    else:
        lo = hi = np.zeros(3)
    centre = (lo + hi) / 2.0
    local = (xyz - centre).astype("<f4")
    meta = {
        "total_points": int(sample.total_points),
        "crs": crs_label(sample.crs_wkt),
        "centre": [float(v) for v in centre],
        "extent": [float(v) for v in (hi - lo)],
    }
    template = resources.files("eotwin.pointcloud").joinpath("assets/viewer.html").read_text(encoding="utf-8")
    return (
        template.replace("__TITLE__", html.escape(title))
        .replace("__META__", json.dumps(meta).replace("</", "<\\/"))
        .replace("__XYZ__", base64.b64encode(np.ascontiguousarray(local).tobytes()).decode("ascii"))
        .replace("__RGB__", base64.b64encode(np.ascontiguousarray(sample.rgb, dtype=np.uint8).tobytes()).decode("ascii"))
    )


def write_viewer(cloud_path: str | Path, html_path: str | Path, max_points: int = 1_000_000, seed: int = 0,
                 title: str | None = None) -> Path:
    """Write the offline viewer for a LAS/LAZ/PLY file (decimated to ``max_points``) atomically."""
    sample = read_points(cloud_path, max_points=max_points, seed=seed)
    page = render_viewer_html(sample, title or Path(cloud_path).name)
    return write_text_atomic(html_path, page)
