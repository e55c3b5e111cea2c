"""Streaming point-cloud writers: LAS/LAZ 1.4 (point format 7) through laspy + lazrs, and binary PLY.

Writers take points block by block and never hold the whole cloud. Output goes to a temporary
name beside the target and is renamed only when the writer closes cleanly, so a failed run leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from pyproj import CRS

from eotwin.errors import EotwinError
from eotwin.io.files import atomic_path
from eotwin.pointcloud.core import PointBlock

FORMATS = ("laz", "las", "ply")


@dataclass
class CloudStats:
    """Count and bounds of what was written."""

    count: int = 0
    mins: np.ndarray = field(default_factory=lambda: np.full(3, np.inf))
    maxs: np.ndarray = field(default_factory=lambda: np.full(3, -np.inf))

    def grow(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
        if x.size == 0:
            return
        self.count += int(x.size)
        for axis, values in enumerate((x, y, z)):
            self.mins[axis] = min(self.mins[axis], float(values.min()))
            self.maxs[axis] = max(self.maxs[axis], float(values.max()))


class PointWriter(Protocol):
    """Writers split work in two so a pipeline can prepare the next block while the current one is written."""

    stats: CloudStats

    def prepare(self, block: PointBlock) -> object:
        """Pure numpy, safe to run in another thread: the block in the file's own layout."""
        ...

    def write_prepared(self, prepared: object) -> None: ...

    def write(self, block: PointBlock) -> None: ...


def xy_scale_for(crs: CRS) -> float:
    """0.01 m for projected CRSs; 1e-7 degrees (about 1 cm) for geographic ones."""
    return 1e-7 if crs.is_geographic else 0.01


def offsets_near(bounds_xy: tuple[float, float, float, float], scale: float) -> tuple[float, float]:
    """Round offsets close to the data's lower-left corner so that int32 coordinates stay small."""
    step = 1.0 if scale < 1e-3 else 1000.0
    return (float(np.floor(bounds_xy[0] / step) * step), float(np.floor(bounds_xy[1] / step) * step))


def _to_int32(values: np.ndarray, name: str, scale: float) -> np.ndarray:
    if values.size and (values.min() < -(2**31) or values.max() >= 2**31):
        raise EotwinError(f"coordinate {name} out of the LAS int32 range for scale {scale}")
    return values.astype(np.int32)


class LasWriter:
    """LAS 1.4 point format 7 (XYZ, RGB, GPS time), CRS as an OGC WKT VLR; LAZ via lazrs."""

    def __init__(self, handle, header) -> None:
        self._writer = handle
        self.stats = CloudStats()
        self._point_format = header.point_format
        self._scales = np.asarray(header.scales, dtype=np.float64)
        self._offsets = np.asarray(header.offsets, dtype=np.float64)

    def _scaled(self, table: np.ndarray, axis: int, name: str) -> np.ndarray:
        return _to_int32(np.rint((table - self._offsets[axis]) / self._scales[axis]), name, self._scales[axis])

    def prepare(self, block: PointBlock):
        import laspy

        n = len(block)
        record = laspy.ScaleAwarePointRecord.zeros(n, point_format=self._point_format, scales=self._scales,
                                                   offsets=self._offsets)
        if n == 0:
            return record
        array = record.array
        if block.is_rectilinear:  # integer tables per column and per row, gathered once through the mask
            array["X"] = block.per_column(self._scaled(block.column_centres(), 0, "x"))
            array["Y"] = block.per_row(self._scaled(block.row_centres(), 1, "y"))
        else:
            array["X"] = self._scaled(block.x, 0, "x")
            array["Y"] = self._scaled(block.y, 1, "y")
        z = block.z  # float64 metres x z scale, a fresh array
        z *= 1.0 / self._scales[2]
        z -= self._offsets[2] / self._scales[2]
        array["Z"] = _to_int32(np.rint(z, out=z), "z", self._scales[2])
        for band, name in enumerate(("red", "green", "blue")):
            channel = block.channel(band).astype(np.uint16)
            channel *= np.uint16(257)  # 8-bit to 16-bit: 255 -> 65535 exactly
            array[name] = channel
        return record

    def write_prepared(self, record) -> None:
        if len(record):
            self._writer.write_points(record)
            self.stats.count += len(record)

    def write(self, block: PointBlock) -> None:
        self.write_prepared(self.prepare(block))

    def finish(self) -> None:
        header = self._writer.header
        if self.stats.count:
            self.stats.mins, self.stats.maxs = np.asarray(header.mins, float), np.asarray(header.maxs, float)


class PlyWriter:
    """Binary little-endian PLY: float64 x, y, z and uchar red, green, blue; the vertex count is patched at the end."""

    _COUNT_WIDTH = 15

    def __init__(self, handle, crs: CRS) -> None:
        self._fh = handle
        self.stats = CloudStats()
        header = (
            "ply\nformat binary_little_endian 1.0\ncomment generated by eotwin\n"
            f"comment crs EPSG:{crs.to_epsg() or 'unknown'}\n"
            "comment origin 0 0 0\n"
            f"element vertex {0:0{self._COUNT_WIDTH}d}\n"
            "property double x\nproperty double y\nproperty double z\n"
            "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
        )
        self._count_pos = header.index("element vertex ") + len("element vertex ")
        self._fh.write(header.encode("ascii"))
        self._dtype = np.dtype([("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])

    def prepare(self, block: PointBlock) -> np.ndarray:
        out = np.empty(len(block), dtype=self._dtype)
        if len(block):
            out["x"], out["y"], out["z"] = block.x, block.y, block.z
            for band, name in enumerate(("red", "green", "blue")):
                out[name] = block.channel(band)
        return out

    def write_prepared(self, vertices: np.ndarray) -> None:
        if len(vertices):
            self._fh.write(vertices.tobytes())
            self.stats.grow(vertices["x"], vertices["y"], vertices["z"])

    def write(self, block: PointBlock) -> None:
        self.write_prepared(self.prepare(block))

    def finish(self) -> None:
        self._fh.seek(self._count_pos)
        self._fh.write(f"{self.stats.count:0{self._COUNT_WIDTH}d}".encode("ascii"))


@contextlib.contextmanager
def open_point_writer(path: str | Path, fmt: str, crs: CRS, bounds_xy: tuple[float, float, float, float],
                      z_offset: float = 0.0):
    """Yield a writer for ``path``; the file appears at ``path`` only if the block exits without error."""
    if fmt not in FORMATS:
        raise EotwinError(f"unknown point-cloud format {fmt!r} (choose from {', '.join(FORMATS)})")
    path = Path(path)
    if path.is_dir():
        raise EotwinError(f"output {path} is a directory")
    with atomic_path(path) as tmp:
        if fmt == "ply":
            with open(tmp, "wb") as fh:
                writer = PlyWriter(fh, crs)
                yield writer
                writer.finish()
        else:
            import laspy

            header = laspy.LasHeader(point_format=7, version="1.4")
            scale = xy_scale_for(crs)
            header.scales = np.array([scale, scale, 0.01])
            ox, oy = offsets_near(bounds_xy, scale)
            header.offsets = np.array([ox, oy, z_offset])
            header.add_crs(_rasterio_free_crs(crs))
            header.generating_software = "eotwin"
            header.system_identifier = "eotwin point cloud"
            backend = laspy.LazBackend.LazrsParallel if (os.cpu_count() or 1) > 1 else laspy.LazBackend.Lazrs
            with laspy.open(tmp, mode="w", header=header, do_compress=(fmt == "laz"),
                            laz_backend=backend if fmt == "laz" else None) as handle:
                writer = LasWriter(handle, header)
                yield writer
            writer.finish()  # after close: laspy has grown the header bounds


def _rasterio_free_crs(crs: CRS) -> CRS:
    """laspy wants a pyproj CRS; normalise whatever we were given."""
    return CRS.from_user_input(crs)
