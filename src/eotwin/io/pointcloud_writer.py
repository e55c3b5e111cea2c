"""Streaming point-cloud writers: LAS/LAZ 1.4 (point format 7) through laspy + lazrs, and binary PLY.

Writers take points block by block and never hold the whole cloud. Output goes to a temporary
name beside the target and is renamed only when the writer closes cleanly, so a failed run leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Protocol

import numpy as np
from pyproj import CRS

from eotwin.errors import EotwinError
from eotwin.geo.pointdata import PointBlock
from eotwin.io.files import atomic_path
from eotwin.io.las_format import (
    CloudStats,
    las14_header,
    las_record,
    vlr_record,
    wkt_vlr,
)
from eotwin.io.laz_child import ChildLazCompressor, child_fits

FORMATS = ("laz", "las", "ply", "copc")




class PointWriter(Protocol):
    """Writers split work in two so a pipeline can prepare the next block while the current one is written."""

    stats: CloudStats

    def prepare(self, block: PointBlock) -> object:
        """Pure numpy, safe to run in another thread: the block in the file's own layout."""
        ...

    def write_prepared(self, prepared: object) -> None: ...


def xy_scale_for(crs: CRS) -> float:
    """0.01 m for projected CRSs; 1e-7 degrees (about 1 cm) for geographic ones."""
    return 1e-7 if crs.is_geographic else 0.01


def offsets_near(bounds_xy: tuple[float, float, float, float], scale: float) -> tuple[float, float]:
    """Round offsets close to the data's lower-left corner so that int32 coordinates stay small."""
    step = 1.0 if scale < 1e-3 else 1000.0
    return (float(np.floor(bounds_xy[0] / step) * step), float(np.floor(bounds_xy[1] / step) * step))








# from this many points on, LAZ is compressed in a child process (its start-up costs about half a second);
# read at run time, so tests can lower it
CHILD_MIN_POINTS = 4_000_000


def _may_start_children() -> bool:
    """Several cores, and not inside a daemon process (a Dask worker), which cannot have children."""
    import multiprocessing

    return (os.cpu_count() or 1) > 1 and not multiprocessing.current_process().daemon


LASZIP_CHUNK_POINTS = 50_000  # LASzip's default chunk: the unit lazrs compresses in parallel










class LazWriter:
    """LAZ 1.4 point format 7 straight through lazrs, chunks compressed on every core (``ParLasZipCompressor``),
    in a child process for large clouds (:mod:`eotwin.io.laz_child`: lazrs holds the GIL while it compresses).

    laspy's own writer is not used for LAZ: per block it sorts the return numbers to count points by return
    (all zero here) and holds the GIL for it, a tenth of a full tile's build. The header is written last.
    """

    def __init__(self, handle, crs: CRS, scales: np.ndarray, offsets: np.ndarray) -> None:
        import laspy
        import lazrs

        self._fh = handle
        self.stats = CloudStats()
        self._point_format = laspy.PointFormat(7)
        self._scales, self._offsets = np.asarray(scales, np.float64), np.asarray(offsets, np.float64)
        vlr = lazrs.LazVlr.new_for_compression(7, 0)
        self._vlrs = vlr_record("laszip encoded", 22204, vlr.record_data(), "lazrs") + wkt_vlr(crs)
        handle.write(self._header())
        self._vlr = vlr
        self._compressor = None  # chosen once the cloud's size shows (see _start)
        self._pending: list[np.ndarray] = []
        self._pending_points = 0
        self._int_mins = np.full(3, np.iinfo(np.int64).max, dtype=np.int64)
        self._int_maxs = np.full(3, np.iinfo(np.int64).min, dtype=np.int64)

    def _header(self) -> bytes:
        mins, maxs = (self.stats.mins, self.stats.maxs) if self.stats.count else (np.zeros(3), np.zeros(3))
        return las14_header(self._vlrs, 2, self.stats.count, self._point_format.size, self._scales, self._offsets,
                            mins, maxs) + self._vlrs

    def prepare(self, block: PointBlock):
        return las_record(block, self._point_format, self._scales, self._offsets)

    def write_prepared(self, record) -> None:
        if not len(record):
            return
        array = record.array
        if self._compressor is None:
            self._pending.append(array.view(np.uint8))
            self._pending_points += len(array)
            if self._pending_points >= CHILD_MIN_POINTS and _may_start_children() and child_fits():
                self._start(in_child=True)
        else:
            self._compressor.compress_many(array.view(np.uint8))
        self.stats.count += len(array)
        for axis, name in enumerate("XYZ"):
            self._int_mins[axis] = min(self._int_mins[axis], int(array[name].min()))
            self._int_maxs[axis] = max(self._int_maxs[axis], int(array[name].max()))

    def _start(self, in_child: bool) -> None:
        """Start compressing: in a child process for large clouds on several cores, else here."""
        import lazrs

        self._fh.flush()
        if in_child:
            self._compressor = ChildLazCompressor(Path(self._fh.name), self._fh.tell())
        elif (os.cpu_count() or 1) > 1:
            self._compressor = lazrs.ParLasZipCompressor(self._fh, self._vlr)
        else:
            self._compressor = lazrs.LasZipCompressor(self._fh, self._vlr)
        for data in self._pending:
            self._compressor.compress_many(data)
        self._pending.clear()

    def close(self) -> None:
        """Stop a child compressor left running by a failure (the file itself is the caller's to discard)."""
        if hasattr(self._compressor, "close"):
            self._compressor.close()

    def finish(self) -> None:
        if self._compressor is None:
            self._start(in_child=False)
        self._compressor.done()
        if self.stats.count:
            self.stats.mins = self._int_mins * self._scales + self._offsets
            self.stats.maxs = self._int_maxs * self._scales + self._offsets
        self._fh.seek(0)
        self._fh.write(self._header())


class LasWriter:
    """Uncompressed LAS 1.4 point format 7 (XYZ, RGB, GPS time) through laspy, CRS as an OGC WKT VLR."""

    def __init__(self, handle, header) -> None:
        self._writer = handle
        self.stats = CloudStats()
        self._point_format = header.point_format
        self._scales = np.asarray(header.scales, dtype=np.float64)
        self._offsets = np.asarray(header.offsets, dtype=np.float64)

    def prepare(self, block: PointBlock):
        return las_record(block, self._point_format, self._scales, self._offsets)

    def write_prepared(self, record) -> None:
        if len(record):
            self._writer.write_points(record)
            self.stats.count += len(record)

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

    def finish(self) -> None:
        self._fh.seek(self._count_pos)
        self._fh.write(f"{self.stats.count:0{self._COUNT_WIDTH}d}".encode("ascii"))


@contextlib.contextmanager
def open_point_writer(path: str | Path, fmt: str, crs: CRS, bounds_xy: tuple[float, float, float, float],
                      z_offset: float = 0.0, grid=None, progress=None):
    """Yield a writer for ``path``; the file appears at ``path`` only if the block exits without error.

    ``grid`` (the output :class:`~eotwin.geo.grid.Grid`) is needed by COPC, whose octree levels follow the pixels.
    """
    if fmt not in FORMATS:
        raise EotwinError(f"unknown point-cloud format {fmt!r} (choose from {', '.join(FORMATS)})")
    path = Path(path)
    if path.is_dir():
        raise EotwinError(f"output {path} is a directory")
    scale = xy_scale_for(crs)
    scales = np.array([scale, scale, 0.01])
    offsets = np.array([*offsets_near(bounds_xy, scale), z_offset])
    with atomic_path(path) as tmp:
        if fmt == "ply":
            with open(tmp, "wb") as fh:
                writer = PlyWriter(fh, crs)
                yield writer
                writer.finish()
        elif fmt == "copc":
            from eotwin.io.copc_writer import CopcWriter, remove_spill, spill_folder

            if grid is None:
                raise EotwinError("COPC output needs the output grid")
            spill = spill_folder(path)
            try:
                copc = CopcWriter(tmp, crs, grid.transform, grid.width, grid.height, bounds_xy, scales, offsets, spill)
                try:
                    yield copc
                finally:
                    copc.close()
                copc.finish(progress)
            finally:
                remove_spill(spill)
        elif fmt == "laz":
            with open(tmp, "wb") as fh:
                laz = LazWriter(fh, crs, scales, offsets)
                try:
                    yield laz
                    laz.finish()
                finally:
                    laz.close()
        else:
            import laspy

            header = laspy.LasHeader(point_format=7, version="1.4")
            header.scales = scales
            header.offsets = offsets
            header.add_crs(crs)
            header.generating_software = "eotwin"
            header.system_identifier = "eotwin point cloud"
            with laspy.open(tmp, mode="w", header=header, do_compress=False) as handle:
                writer = LasWriter(handle, header)
                yield writer
            writer.finish()  # after close: laspy has grown the header bounds
