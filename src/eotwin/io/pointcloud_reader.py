"""Read a point cloud back (LAS/LAZ through laspy, binary PLY through numpy), decimated and chunked.

Viewers and previews need a bounded, uniform subset of a possibly huge file: points are read in
chunks and each chunk is thinned with a fixed probability, so memory stays proportional to the
subset, not to the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eotwin.errors import EotwinError

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2", "ushort": "u2",
    "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}


@dataclass(frozen=True)
class PointSample:
    """A subset of a cloud: float64 coordinates, uint8 colours, and how it relates to the whole."""

    xyz: np.ndarray  # (n, 3) float64
    rgb: np.ndarray  # (n, 3) uint8
    total_points: int
    crs_wkt: str | None


def read_points(path: str | Path, max_points: int | None = None, seed: int = 0, chunk_size: int = 2_000_000) -> PointSample:
    """Read at most ``max_points`` points (uniformly thinned) from a LAS, LAZ or binary PLY file."""
    path = Path(path)
    if not path.exists():
        raise EotwinError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".las", ".laz"):
        return _read_las(path, max_points, seed, chunk_size)
    if suffix == ".ply":
        return _read_ply(path, max_points, seed, chunk_size)
    raise EotwinError(f"{path}: unsupported point-cloud format '{suffix}' (expected .las, .laz or .ply)")


def _keep_probability(total: int, max_points: int | None) -> float:
    if max_points is None or total <= max_points:
        return 1.0
    return max_points / total


def _read_las(path: Path, max_points: int | None, seed: int, chunk_size: int) -> PointSample:
    import laspy

    rng = np.random.default_rng(seed)
    try:
        reader = laspy.open(str(path))
    except Exception as exc:  # laspy raises several types for corrupt headers
        raise EotwinError(f"{path}: not a readable LAS/LAZ file ({exc})") from None
    with reader:
        header = reader.header
        total = int(header.point_count)
        keep = _keep_probability(total, max_points)
        xyz_parts, rgb_parts = [], []
        has_rgb = "red" in header.point_format.dimension_names
        for chunk in reader.chunk_iterator(chunk_size):
            n = len(chunk)
            sel = slice(None) if keep >= 1.0 else rng.random(n) < keep
            xyz = np.column_stack([np.asarray(chunk.x)[sel], np.asarray(chunk.y)[sel], np.asarray(chunk.z)[sel]])
            if has_rgb:
                rgb = np.column_stack([np.asarray(chunk.red)[sel], np.asarray(chunk.green)[sel], np.asarray(chunk.blue)[sel]])
                rgb = (rgb // 257 if rgb.max(initial=0) > 255 else rgb).astype(np.uint8)
            else:
                rgb = np.full((xyz.shape[0], 3), 200, np.uint8)
            xyz_parts.append(xyz)
            rgb_parts.append(rgb)
        crs = header.parse_crs()
        crs_wkt = crs.to_wkt() if crs is not None else None
    xyz = np.concatenate(xyz_parts) if xyz_parts else np.zeros((0, 3))
    rgb = np.concatenate(rgb_parts) if rgb_parts else np.zeros((0, 3), np.uint8)
    return PointSample(xyz.astype(np.float64), rgb, total, crs_wkt)


MAX_PLY_HEADER_BYTES = 1 << 20  # our headers are < 1 KB; a header that never ends is not a point cloud


def parse_ply_header(path: Path) -> tuple[int, np.dtype, int, list[str]]:
    """(vertex count, vertex dtype, byte offset of the data, comments) of a binary little-endian PLY.

    Nothing in the header is trusted: sizes are checked against the file before any data is mapped.
    """
    with path.open("rb") as fh:
        if fh.readline(16).strip() != b"ply":
            raise EotwinError(f"{path}: not a PLY file")
        fmt, count, fields, comments, element = None, None, [], [], None
        while True:
            line = fh.readline(MAX_PLY_HEADER_BYTES)
            if not line:
                raise EotwinError(f"{path}: truncated PLY header")
            if fh.tell() > MAX_PLY_HEADER_BYTES:
                raise EotwinError(f"{path}: PLY header longer than {MAX_PLY_HEADER_BYTES:,} bytes")
            words = line.decode("ascii", "replace").split()
            if not words:
                continue
            try:
                if words[0] == "format":
                    fmt = words[1]
                elif words[0] == "comment":
                    comments.append(" ".join(words[1:]))
                elif words[0] == "element":
                    element = words[1]
                    if element == "vertex":
                        count = int(words[2])
                elif words[0] == "property" and element == "vertex":
                    if words[1] == "list":
                        raise EotwinError(f"{path}: list properties on vertices are not supported")
                    if words[1] not in _PLY_TYPES:
                        raise EotwinError(f"{path}: unknown PLY property type {words[1][:20]!r}")
                    fields.append((words[2], "<" + _PLY_TYPES[words[1]]))
                elif words[0] == "end_header":
                    offset = fh.tell()
                    break
            except (IndexError, ValueError):
                raise EotwinError(f"{path}: malformed PLY header line {line[:60]!r}") from None
    if fmt != "binary_little_endian":
        raise EotwinError(f"{path}: only binary_little_endian PLY is supported (found {fmt})")
    if count is None or count < 0:
        raise EotwinError(f"{path}: PLY header has no valid vertex count")
    names = [name for name, _ in fields]
    if not fields or len(set(names)) != len(names):
        raise EotwinError(f"{path}: PLY vertex properties are missing or repeated")
    dtype = np.dtype(fields)
    needed = offset + count * dtype.itemsize
    size = path.stat().st_size
    if size < needed:
        raise EotwinError(f"{path}: PLY header declares {count:,} vertices ({needed:,} bytes) but the file has "
                          f"{size:,} bytes (truncated or corrupt)")
    return count, dtype, offset, comments


def ply_origin(comments: list[str]) -> tuple[float, float, float]:
    """A local origin written as ``comment origin X Y Z`` (0, 0, 0 when absent)."""
    for comment in comments:
        words = comment.split()
        if len(words) == 4 and words[0].lower() == "origin":
            try:
                origin = (float(words[1]), float(words[2]), float(words[3]))
            except ValueError:
                raise EotwinError(f"malformed PLY origin comment {comment[:80]!r}") from None
            if not all(np.isfinite(origin)):
                raise EotwinError(f"PLY origin comment is not finite: {comment[:80]!r}")
            return origin
    return (0.0, 0.0, 0.0)


def _read_ply(path: Path, max_points: int | None, seed: int, chunk_size: int) -> PointSample:
    count, dtype, offset, comments = parse_ply_header(path)
    for name in ("x", "y", "z"):
        if name not in dtype.names:
            raise EotwinError(f"{path}: PLY vertices have no '{name}' property")
    data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))
    rng = np.random.default_rng(seed)
    keep = _keep_probability(count, max_points)
    origin = np.array(ply_origin(comments))
    colour_names = next((names for names in (("red", "green", "blue"), ("r", "g", "b")) if all(n in dtype.names for n in names)), None)
    xyz_parts, rgb_parts = [], []
    for start in range(0, count, chunk_size):
        chunk = data[start:start + chunk_size]
        if keep < 1.0:
            chunk = chunk[rng.random(len(chunk)) < keep]
        xyz_parts.append(np.column_stack([chunk["x"], chunk["y"], chunk["z"]]).astype(np.float64) + origin)
        if colour_names:
            rgb_parts.append(np.column_stack([chunk[n] for n in colour_names]).astype(np.uint8))
        else:
            rgb_parts.append(np.full((len(chunk), 3), 200, np.uint8))
    crs_wkt = None
    sidecar = path.with_suffix(path.suffix + ".json")
    for candidate in (sidecar, path.with_suffix(".json")):
        if candidate.exists():
            try:
                meta = json.loads(candidate.read_text())
            except (ValueError, UnicodeDecodeError):
                raise EotwinError(f"{candidate}: not valid JSON (the PLY's CRS sidecar)") from None
            if not isinstance(meta, dict):
                raise EotwinError(f"{candidate}: not a JSON object (the PLY's CRS sidecar)")
            crs_wkt = (meta.get("crs_wkt") or meta.get("crs") or meta.get("proj:wkt2")
                       or meta.get("properties", {}).get("proj:wkt2"))
            if isinstance(crs_wkt, dict):
                crs_wkt = json.dumps(crs_wkt)
            break
    xyz = np.concatenate(xyz_parts) if xyz_parts else np.zeros((0, 3))
    rgb = np.concatenate(rgb_parts) if rgb_parts else np.zeros((0, 3), np.uint8)
    return PointSample(xyz, rgb, count, crs_wkt)
