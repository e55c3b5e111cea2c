"""COPC 1.0 writer: a LAZ 1.4 file whose variable-size chunks are the nodes of an octree.

Written to the specification (https://copc.io/copc-specification-1.0.pdf) with laspy's point
layout and lazrs' LAZ chunks (the LAZ writer's library): laspy only reads COPC, and ``copclib`` would
add a second LAZ implementation and take each node's points whole (docs/pointcloud.md). The layout:

* header (375 bytes, LAS 1.4, point format 7 with the compression bit, WKT global encoding);
* VLR 1: ``copc``/1, the info record (160 bytes), first, directly after the header as COPC demands;
* VLR 2: ``laszip encoded``/22204 with variable-size chunks; VLR 3: the WKT CRS (``LASF_Projection``/2112);
* the points: one LAZ chunk per octree node, then LASzip's chunk table (so plain LAZ readers read it too);
* EVLR: ``copc``/1000, the hierarchy: 32 bytes per node (key d, x, y, z; offset; byte size; point count).

Memory stays bounded: blocks are spilled, sorted by their octree column (a bucket), to a temporary
folder while the cloud streams; at the end each bucket is read back, cut into nodes and compressed
(chunks of a batch in parallel by lazrs), so at most one bucket and one batch are in memory.
"""

from __future__ import annotations

import io
import shutil
import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import CRS

from eotwin.errors import EotwinError
from eotwin.geo.pointdata import PointBlock
from eotwin.io.copc_octree import (
    NODE_SIDE_PIXELS,
    Cube,
    OctreeLayout,
    bucket_ids,
    cell_index,
    levels_from_tables,
    node_codes,
    plan_cube,
    plan_layout,
    row_levels,
    unpack_code,
    with_ancestors,
)
from eotwin.io.las_format import (
    CloudStats,
    evlr_record,
    las14_header,
    las_record,
    quantized,
    vlr_record,
    wkt_vlr,
)
from eotwin.progress import ProgressReporter, ensure_progress

EVLR_HEADER_SIZE = 60
INFO_SIZE = 160
ENTRY = struct.Struct("<iiiiQii")  # key (d, x, y, z), offset, byte size, point count
POINT_FORMAT = 7
NODE_SIDE = NODE_SIDE_PIXELS  # read at run time so a test can make deep trees from a small grid
POOL_MIN_POINTS = 4_000_000  # below this, buckets are compressed in-process (read at run time, like NODE_SIDE)


@dataclass(frozen=True)
class _Prepared:
    records: np.ndarray  # structured point-format-7 records, sorted by bucket
    levels: np.ndarray  # (n,) uint8
    buckets: np.ndarray  # bucket ids present, ascending
    counts: np.ndarray  # points per bucket


class CopcWriter:
    """Streams blocks into spill files; :meth:`finish` writes the COPC file node by node."""

    def __init__(self, path: Path, crs: CRS, transform, width: int, height: int, bounds_xy, scales: np.ndarray,
                 offsets: np.ndarray, spill_dir: Path) -> None:
        import laspy
        import lazrs

        if transform.b != 0 or transform.d != 0:
            raise EotwinError("COPC output needs a grid without rotation (north-up); this grid is rotated")
        self.stats = CloudStats()
        self._path = path
        self._crs = crs
        self._point_format = laspy.PointFormat(POINT_FORMAT)
        self._scales = np.asarray(scales, dtype=np.float64)
        self._offsets = np.asarray(offsets, dtype=np.float64)
        left, _, _, top = bounds_xy
        self.layout: OctreeLayout = plan_layout(width, height, abs(transform.a), abs(transform.e), left, top, NODE_SIDE)
        self._vlr = lazrs.LazVlr.new_for_compression(POINT_FORMAT, 0, True)
        self._spill_dir = spill_dir
        self._records = open(spill_dir / "points.bin", "wb")  # noqa: SIM115 - closed in finish() or close()
        self._levels = open(spill_dir / "levels.bin", "wb")  # noqa: SIM115
        self._segments: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self._spilled = 0
        self._int_mins = np.full(3, np.iinfo(np.int64).max, dtype=np.int64)
        self._int_maxs = np.full(3, np.iinfo(np.int64).min, dtype=np.int64)
        self.nodes = 0

    # --- streaming ------------------------------------------------------------------------------
    def prepare(self, block: PointBlock) -> _Prepared:
        """The block's records with their level of detail, sorted by spill bucket (pure numpy)."""
        record = las_record(block, self._point_format, self._scales, self._offsets)
        array = record.array
        depth = self.layout.depth
        if len(block) == 0:
            return _Prepared(array, np.zeros(0, np.uint8), np.zeros(0, np.int32), np.zeros(0, np.int64))
        window = block.window
        row_tz = row_levels(np.arange(window.height) + window.row_off, depth)
        col_tz = row_levels(np.arange(window.width) + window.col_off, depth)
        levels = levels_from_tables(block.per_row(row_tz), block.per_column(col_tz), depth)
        # cells per column and per row (the grid is rectilinear), from the same int32 coordinates as the records
        n = 2**self.layout.depth
        x_cells = cell_index(quantized(block.column_centres(), 0, self._scales, self._offsets, "x") * self._scales[0]
                             + self._offsets[0], self.layout.x0, self.layout.cell, n)
        y_cells = cell_index(quantized(block.row_centres(), 1, self._scales, self._offsets, "y") * self._scales[1]
                             + self._offsets[1], self.layout.y0, self.layout.cell, n)
        buckets = bucket_ids(block.per_column(x_cells), block.per_row(y_cells), levels, self.layout)
        order = np.argsort(buckets, kind="stable")  # int16 ids: a radix sort
        buckets = buckets[order]
        starts = np.r_[0, np.flatnonzero(np.diff(buckets)) + 1]
        counts = np.diff(np.r_[starts, len(buckets)])
        # gathered as raw rows: numpy copies structured records field by field, ten times slower
        rows = array.view(np.uint8).reshape(-1, array.dtype.itemsize)[order]
        return _Prepared(rows.reshape(-1).view(array.dtype), levels[order], buckets[starts], counts)

    def write_prepared(self, prepared: _Prepared) -> None:
        if not len(prepared.records):
            return
        self._records.write(memoryview(prepared.records))
        self._levels.write(memoryview(prepared.levels))
        start = self._spilled
        for bucket, count in zip(prepared.buckets.tolist(), prepared.counts.tolist(), strict=True):
            self._segments[bucket].append((start, count))
            start += count
        self._spilled = start
        self.stats.count += len(prepared.records)
        for axis, name in enumerate("XYZ"):
            values = prepared.records[name]
            self._int_mins[axis] = min(self._int_mins[axis], int(values.min()))
            self._int_maxs[axis] = max(self._int_maxs[axis], int(values.max()))

    # --- the file -------------------------------------------------------------------------------
    def close(self) -> None:
        self._records.close()
        self._levels.close()

    def finish(self, progress: ProgressReporter | None = None, workers: int | None = None) -> None:
        """Cut the spilled points into nodes, compress them and write header, VLRs, chunks and hierarchy.

        Buckets are cut and compressed by ``workers`` processes (default: one per CPU, but one inside a daemon
        process such as a Dask worker, which cannot have children; a tiled run is parallel across tiles instead).
        """
        import lazrs

        progress = ensure_progress(progress)
        self.close()
        if self.stats.count == 0:
            raise EotwinError("no points to write")
        self.stats.mins = self._int_mins * self._scales + self._offsets
        self.stats.maxs = self._int_maxs * self._scales + self._offsets
        cube = plan_cube(self.layout, float(self.stats.mins[2]), float(self.stats.maxs[2]))
        buckets = sorted(self._segments)  # the top levels (-1) first: the root's chunk opens the file
        jobs = [_BucketJob(self._spill_dir, self._segments[b], self.layout, cube, self._scales, self._offsets)
                for b in buckets]
        entries: dict[int, tuple[int, int, int]] = {}
        chunk_table: list[tuple[int, int]] = []
        with open(self._path, "wb") as out:
            out.write(self._header_and_vlrs(cube, 0, 0, 0, 0))
            out.write(b"\0" * 8)  # offset to the chunk table, patched below
            with progress.task("writing COPC nodes", total=len(jobs)) as task:
                for nodes, blob in _compressed_buckets(jobs, _worker_count(workers, len(jobs), self.stats.count)):
                    pos = out.tell()
                    for code, count, size in nodes:
                        entries[code] = (pos, size, count)
                        chunk_table.append((count, size))
                        pos += size
                    out.write(blob)
                    task.advance()
            chunk_table_offset = out.tell()
            lazrs.write_chunk_table(out, chunk_table, self._vlr)
            evlr_start = out.tell()
            hierarchy = self._hierarchy(entries)
            out.write(evlr_record("copc", 1000, hierarchy, "EPT hierarchy"))
            out.seek(0)
            out.write(self._header_and_vlrs(cube, evlr_start + EVLR_HEADER_SIZE, len(hierarchy), evlr_start, 1))
            out.write(struct.pack("<q", chunk_table_offset))
        self.nodes = len(entries)

    @staticmethod
    def _hierarchy(entries: dict[int, tuple[int, int, int]]) -> bytes:
        """One hierarchy page with every node; ancestors without points of their own have count 0."""
        keyed = {unpack_code(code): value for code, value in entries.items()}
        all_keys = sorted(with_ancestors(set(keyed)))
        return b"".join(ENTRY.pack(*key, *keyed.get(key, (0, 0, 0))) for key in all_keys)

    def _header_and_vlrs(self, cube, hierarchy_offset: int, hierarchy_size: int, evlr_start: int, n_evlrs: int) -> bytes:
        """The 375-byte LAS 1.4 header followed by the info, laszip and WKT VLRs."""
        info = struct.pack("<3dddQQdd11Q", *cube.center, cube.halfsize, cube.spacing, hierarchy_offset, hierarchy_size,
                           0.0, 0.0, *([0] * 11))
        assert len(info) == INFO_SIZE
        vlrs = (vlr_record("copc", 1, info, "COPC info")
                + vlr_record("laszip encoded", 22204, self._vlr.record_data(), "lazrs variable-size chunks")
                + wkt_vlr(self._crs))
        return las14_header(vlrs, 3, self.stats.count, self._point_format.size, self._scales, self._offsets,
                            self.stats.mins, self.stats.maxs, evlr_start, n_evlrs) + vlrs


@dataclass(frozen=True)
class _BucketJob:
    """One spill bucket to cut into nodes and compress (picklable: it may run in a worker process)."""

    spill_dir: Path
    segments: list[tuple[int, int]]
    layout: OctreeLayout
    cube: Cube
    scales: np.ndarray
    offsets: np.ndarray


def _worker_count(requested: int | None, jobs: int, points: int) -> int:
    """Worker processes for the buckets: one per CPU for large clouds, none (in-process, lazrs still parallel) for
    small ones, whose process start-up would cost more than it saves, and none inside daemon processes."""
    import multiprocessing
    import os

    if requested is not None:
        return max(1, min(requested, jobs))
    if points < POOL_MIN_POINTS or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(os.cpu_count() or 1, jobs))


def _compressed_buckets(jobs: list[_BucketJob], workers: int):
    """(nodes, chunk bytes) of each job, in the jobs' order, from ``workers`` processes at most two jobs ahead each."""
    if workers <= 1:
        for job in jobs:
            yield compress_bucket(job, parallel=True)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent has threads (progress, GDAL) and forking them is unsafe
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        queue = iter(jobs)
        pending = deque(pool.submit(compress_bucket, job, False) for _, job in zip(range(2 * workers), queue, strict=False))
        while pending:
            result = pending.popleft().result()
            following = next(queue, None)
            if following is not None:
                pending.append(pool.submit(compress_bucket, following, False))
            yield result


def compress_bucket(job: _BucketJob, parallel: bool) -> tuple[list[tuple[int, int, int]], bytes]:
    """Read one bucket from the spill, cut it into nodes and compress each node as one LAZ chunk.

    Returns ``[(node code, point count, chunk bytes)]`` and the chunks back to back. ``parallel`` compresses the
    chunks on every core (lazrs/rayon) when this runs alone; worker processes compress one chunk at a time.
    """
    import laspy
    import lazrs

    dtype = laspy.PointFormat(POINT_FORMAT).dtype()
    with open(job.spill_dir / "points.bin", "rb") as records, open(job.spill_dir / "levels.bin", "rb") as levels:
        points = _read_segments(records, job.segments, dtype)
        point_levels = _read_segments(levels, job.segments, np.dtype(np.uint8))
    layout, cube = job.layout, job.cube
    n = 2**layout.depth
    ix = cell_index(points["X"] * job.scales[0] + job.offsets[0], layout.x0, layout.cell, n)
    iy = cell_index(points["Y"] * job.scales[1] + job.offsets[1], layout.y0, layout.cell, n)
    iz = cell_index(points["Z"] * job.scales[2] + job.offsets[2], cube.z0, layout.cell, 2 ** (layout.depth + cube.shift))
    codes = node_codes(ix, iy, iz, point_levels, layout, cube.shift)
    del ix, iy, iz, point_levels
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    # gathered as raw 36-byte rows: numpy copies structured records field by field, ten times slower
    rows = points.view(np.uint8).reshape(-1, dtype.itemsize)[order]
    del points, order
    starts = np.flatnonzero(np.diff(codes)) + 1
    bounds = list(zip(np.r_[0, starts].tolist(), np.r_[starts, len(codes)].tolist(), strict=True))
    vlr = lazrs.LazVlr.new_for_compression(POINT_FORMAT, 0, True)
    buffer = io.BytesIO()
    if parallel:
        compressor = lazrs.ParLasZipCompressor(buffer, vlr)
        compressor.compress_chunks([rows[a:b].reshape(-1) for a, b in bounds])
    else:
        compressor = lazrs.LasZipCompressor(buffer, vlr)
        for i, (a, b) in enumerate(bounds):
            if i:  # done() ends the last chunk; ending it here too would add an empty one
                compressor.finish_current_chunk()
            compressor.compress_many(rows[a:b].reshape(-1))
    compressor.done()
    buffer.seek(0)
    table = lazrs.read_chunk_table(buffer, vlr)
    nodes = []
    for (a, b), (count, size) in zip(bounds, table, strict=True):
        if count != b - a:
            raise EotwinError(f"lazrs wrote a chunk of {count} points for a node of {b - a}")
        nodes.append((int(codes[a]), count, size))
    chunk_bytes = sum(size for _, _, size in nodes)
    return nodes, buffer.getbuffer()[8:8 + chunk_bytes].tobytes()


def _read_segments(handle, segments: list[tuple[int, int]], dtype: np.dtype) -> np.ndarray:
    """The records ``[start, start + count)`` of each segment of a spill file, concatenated."""
    out = np.empty(sum(count for _, count in segments), dtype=dtype)
    view = memoryview(out.view(np.uint8))
    pos = 0
    for start, count in segments:
        handle.seek(start * dtype.itemsize)
        size = count * dtype.itemsize
        if handle.readinto(view[pos:pos + size]) != size:
            raise EotwinError("the COPC spill file was cut short (was the disk full?)")
        pos += size
    return out


def spill_folder(beside: Path) -> Path:
    """A private temporary folder next to the output (same disk: a full tile spills about 4.5 GB).

    Its name carries the writer's process id; folders of writers of the same output that died (kill -9) are removed.
    """
    from eotwin.io.files import owned_scratch_dir

    return owned_scratch_dir(beside.parent, f".{beside.name}.copc-spill-")


def remove_spill(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
