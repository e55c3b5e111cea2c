"""Summary of a point-cloud file (count, bounds, CRS, format, colour range), like ``pdal info --summary``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from eotwin.errors import EotwinError
from eotwin.io.pointcloud_reader import parse_ply_header, ply_origin


def cloud_info(path: str | Path, chunk_size: int = 2_000_000) -> dict:
    """Count, bounds, CRS, point format and colour range, computed by streaming the file in chunks."""
    path = Path(path)
    if not path.exists():
        raise EotwinError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".las", ".laz"):
        return _las_info(path, chunk_size)
    if suffix == ".ply":
        return _ply_info(path, chunk_size)
    raise EotwinError(f"{path}: unsupported point-cloud format '{suffix}' (expected .las, .laz or .ply)")


def _crs_summary(crs) -> dict:
    if crs is None:
        return {"epsg": None, "name": None, "wkt": None}
    return {"epsg": crs.to_epsg(), "name": crs.name, "wkt": crs.to_wkt()}


@contextlib.contextmanager
def _corrupt_points_are_errors(path: Path) -> Iterator[None]:
    """A truncated or corrupt point block (lazrs/laspy errors) is the file's fault: one line, and laspy's own
    ERROR log lines (printed before the exception) are held back."""
    import logging

    logger = logging.getLogger("laspy")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    except EotwinError:
        raise
    except Exception as exc:  # lazrs.LazrsError, laspy.LaspyException, ValueError from a short buffer
        raise EotwinError(f"{path}: corrupt or truncated point data ({type(exc).__name__}: {exc})") from None
    finally:
        logger.setLevel(level)


def _las_info(path: Path, chunk_size: int) -> dict:
    import laspy

    try:
        reader_cm = laspy.open(path)
    except Exception as exc:  # laspy raises several types for a non-LAS file
        raise EotwinError(f"{path}: not a readable LAS/LAZ file ({exc})") from None
    with reader_cm as reader, _corrupt_points_are_errors(path):
        header = reader.header
        rgb_min = np.full(3, np.iinfo(np.uint16).max, dtype=np.int64)
        rgb_max = np.zeros(3, dtype=np.int64)
        has_rgb = "red" in header.point_format.dimension_names
        if has_rgb:
            for chunk in reader.chunk_iterator(chunk_size):
                colours = np.stack([chunk.red, chunk.green, chunk.blue]).astype(np.int64)
                if colours.shape[1]:
                    rgb_min = np.minimum(rgb_min, colours.min(axis=1))
                    rgb_max = np.maximum(rgb_max, colours.max(axis=1))
        crs = header.parse_crs()
        copc = _copc_summary(path, header)
        return {
            "file": str(path),
            "format": "COPC" if copc else "LAZ" if path.suffix.lower() == ".laz" else "LAS",
            "version": str(header.version),
            "point_format": header.point_format.id,
            "count": int(header.point_count),
            "bounds": {"min": [float(v) for v in header.mins], "max": [float(v) for v in header.maxs]},
            "scales": [float(v) for v in header.scales],
            "offsets": [float(v) for v in header.offsets],
            "crs": _crs_summary(crs),
            "colour": {"min": rgb_min.tolist(), "max": rgb_max.tolist(), "bits": 16} if has_rgb and header.point_count else None,
            "software": header.generating_software,
            "copc": copc,
        }


def _copc_summary(path: Path, header) -> dict | None:
    """Octree facts of a COPC file (its info VLR comes first), from the root hierarchy page; None for plain LAS/LAZ."""
    import struct

    from laspy.copc import CopcInfoVlr

    info = header.vlrs[0] if len(header.vlrs) else None
    if not isinstance(info, CopcInfoVlr):
        return None
    with open(path, "rb") as fh:
        fh.seek(info.hierarchy_root_offset)
        page = fh.read(info.hierarchy_root_size)
    if len(page) != info.hierarchy_root_size or len(page) % 32:
        raise EotwinError(f"{path}: COPC hierarchy page cut short or malformed")
    entries = [struct.unpack_from("<iiiiQii", page, i) for i in range(0, len(page), 32)]
    nodes = [e for e in entries if e[6] >= 0]
    return {"center": [float(v) for v in info.center], "halfsize": float(info.halfsize), "spacing": float(info.spacing),
            "nodes": len(nodes), "nodes_with_points": sum(1 for e in nodes if e[6] > 0),
            "depth": max((e[0] for e in nodes), default=0), "child_pages": len(entries) - len(nodes)}


def _ply_info(path: Path, chunk_size: int) -> dict:
    count, dtype, offset, comments = parse_ply_header(path)
    data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))
    origin = np.array(ply_origin(comments))
    mins, maxs = np.full(3, np.inf), np.full(3, -np.inf)
    rgb_min, rgb_max = np.full(3, 255, np.int64), np.zeros(3, np.int64)
    has_rgb = all(n in dtype.names for n in ("red", "green", "blue"))
    for start in range(0, count, chunk_size):
        chunk = data[start:start + chunk_size]
        xyz = np.stack([chunk["x"], chunk["y"], chunk["z"]]).astype(np.float64)
        mins = np.minimum(mins, xyz.min(axis=1))
        maxs = np.maximum(maxs, xyz.max(axis=1))
        if has_rgb:
            colours = np.stack([chunk["red"], chunk["green"], chunk["blue"]]).astype(np.int64)
            rgb_min, rgb_max = np.minimum(rgb_min, colours.min(axis=1)), np.maximum(rgb_max, colours.max(axis=1))
    crs = None
    sidecar = Path(str(path) + ".json")
    if sidecar.exists():
        from pyproj import CRS

        meta = json.loads(sidecar.read_text())
        wkt = meta.get("properties", {}).get("proj:wkt2") or meta.get("crs_wkt")
        crs = CRS.from_user_input(wkt) if wkt else None
    return {
        "file": str(path),
        "format": "PLY",
        "version": "1.0 binary_little_endian",
        "point_format": ", ".join(f"{n}:{dtype[n].str}" for n in dtype.names),
        "count": int(count),
        "bounds": {"min": (mins + origin).tolist(), "max": (maxs + origin).tolist()} if count else None,
        "scales": None,
        "offsets": origin.tolist(),
        "crs": _crs_summary(crs),
        "colour": {"min": rgb_min.tolist(), "max": rgb_max.tolist(), "bits": 8} if has_rgb and count else None,
        "software": next((c for c in comments if "eotwin" in c), None),
    }
