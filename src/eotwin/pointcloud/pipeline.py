"""The point-cloud pipeline: sources -> overlap grid -> row blocks -> points -> streaming writer.

Memory is bounded by one block of rows (plus GDAL's block cache, capped here), whatever the size
of the inputs: nothing holds the whole raster or the whole cloud.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from eotwin import __version__
from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, intersect_bounds, transform_bounds
from eotwin.io.files import ensure_writable_dir, write_json_atomic
from eotwin.io.pointcloud_writer import CloudStats, open_point_writer
from eotwin.io.raster import gdal_cache_env
from eotwin.io.stac import item_dict
from eotwin.options import validated
from eotwin.pointcloud.core import block_points, validity
from eotwin.pointcloud.options import BuildOptions
from eotwin.pointcloud.sampling import StreamingSampler, target_count
from eotwin.pointcloud.sources import DemSource, ImageSource, MaskSource
from eotwin.progress import ProgressReporter, ensure_progress

T = TypeVar("T")
U = TypeVar("U")
MEDIA_TYPES = {"laz": "application/vnd.laszip", "copc": "application/vnd.laszip+copc", "las": "application/vnd.las",
               "ply": "application/x-ply"}
PREPARE_WORKERS = min(2, os.cpu_count() or 1)  # threads packing blocks into records
GDAL_CACHE_MB = 128  # GDAL's default (5 % of RAM) would let the block cache grow past a container's limit


@dataclass(frozen=True)
class BuildResult:
    output: Path
    metadata: Path
    viewer: Path | None
    preview: Path | None
    count: int
    valid_pixels: int | None  # known when sampling (counting pass)
    grid: Grid
    stats: CloudStats
    seconds: float


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` computed ahead in a background thread, at most ``depth`` waiting (bounded memory).

    An exception in the producer is re-raised in the consumer; if the consumer stops early the
    producer is told to stop and is joined.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((done, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            slots.put((done, exc))

    thread = threading.Thread(target=produce, name="eotwin-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.1)
        thread.join()


def map_ahead(fn: Callable[[T], U], items: Iterable[T], workers: int = 2) -> Iterator[U]:
    """``map(fn, items)`` in order, with ``workers`` calls running at once in threads.

    For numpy work that releases the GIL (packing, sorting, gathering records). At most ``workers``
    results are computed ahead (bounded memory); an exception in ``fn`` is re-raised here, and stopping
    early cancels the calls not yet started and waits for the running ones.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix="eotwin-prepare")
    pending: collections.deque = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def make_options(**kwargs) -> BuildOptions:
    """Build options from plain values, with validation errors as one-line :class:`EotwinError`."""
    return validated(BuildOptions, **kwargs)


def overlap_grid(base: Grid, others: list[Grid]) -> Grid:
    """The part of ``base`` covered by the bounding boxes of all ``others`` (in ``base``'s CRS)."""
    bounds = base.bounds
    for other in others:
        other_bounds = transform_bounds(other.bounds, other.crs, base.crs)
        overlap = intersect_bounds(bounds, other_bounds)
        if overlap is None:
            raise EotwinError("the DEM and the image do not overlap")
        bounds = overlap
    window = base.window_for_bounds(bounds)
    if window is None:
        raise EotwinError("the DEM and the image do not overlap")
    return base.window_grid(window)


def _refuse_overwriting_inputs(options: BuildOptions, output: Path) -> None:
    """``-o`` (or the metadata, viewer and preview beside it) must never replace one of the inputs."""
    inputs = [options.dem, *options.image, *([options.mask] if options.mask else [])]
    local = {Path(p).resolve() for p in inputs if "://" not in str(p) and not str(p).startswith("/vsi")}
    written = [output, Path(str(output) + ".json")]
    written += [output.with_suffix(".html")] if options.viewer else []
    written += [output.with_suffix(".png")] if options.preview else []
    for path in written:
        if path.resolve() in local:
            raise EotwinError(f"output {path} is one of the inputs; choose another -o")


def build_point_cloud(options: BuildOptions, progress: ProgressReporter | None = None) -> BuildResult:
    """Write the coloured point cloud described by ``options``; return what was written."""
    progress = ensure_progress(progress)
    started = time.perf_counter()
    output = Path(options.output)
    ensure_writable_dir(output.parent if str(output.parent) else Path("."))
    _refuse_overwriting_inputs(options, output)
    fmt = options.resolved_format
    with gdal_cache_env(GDAL_CACHE_MB), contextlib.ExitStack() as stack:
        dem = DemSource(options.dem, stack)
        image = ImageSource(options.image, stack, scale=options.reflectance_scale, offset=options.reflectance_offset)
        mask = MaskSource(options.mask, stack, options.mask_exclude) if options.mask else None
        base = image.grid if options.grid == "image" else dem.grid
        others = [dem.grid if options.grid == "image" else image.grid] + ([mask.grid] if mask else [])
        grid = overlap_grid(base, others)
        dem.attach(grid)
        image.attach(grid, options.stretch, *options.stretch_range)
        if mask:
            mask.attach(grid)
        for source in (dem, image, mask):
            if source is not None:
                stack.callback(source.close)
        blocks = list(grid.row_blocks(options.block_rows))

        def block_validity(window):
            z = dem.read(window)
            rgb, rgb_valid = image.read(window)
            valid = validity(z, None, rgb_valid, mask.read(window) if mask else None)
            return z, rgb, valid

        sampler, counts, valid_total = None, None, None
        if options.sampled_fraction < 1.0:
            counts = []
            with progress.task("counting valid pixels", total=len(blocks)) as task:
                for window in blocks:
                    counts.append(int(block_validity(window)[2].sum()))
                    task.advance()
            valid_total = sum(counts)
            sampler = StreamingSampler(valid_total, target_count(options.sampled_fraction, valid_total), options.seed)

        left, bottom, right, top = grid.bounds
        with open_point_writer(output, fmt, grid.crs, (left, bottom, right, top), grid=grid, progress=progress) as writer, \
                progress.task(f"writing {fmt.upper()} points", total=len(blocks)) as task:

            def point_blocks():  # in order, in one thread: the sources' datasets are not thread-safe
                for i, window in enumerate(blocks):
                    z, rgb, valid = block_validity(window)
                    keep = None
                    if sampler is not None:
                        n_valid = int(np.count_nonzero(valid))
                        if n_valid != counts[i]:
                            raise EotwinError("the inputs changed while the cloud was being built")
                        keep = sampler.pick(n_valid)
                    yield block_points(grid, window, z, rgb, valid, options.z_scale, keep)

            # reading and warping the next blocks (a thread; GDAL releases the GIL), packing them into the
            # file's records (PREPARE_WORKERS threads; numpy releases the GIL), and compressing and writing
            # the current one all overlap
            prepared_blocks = map_ahead(writer.prepare, prefetch(point_blocks(), depth=2), PREPARE_WORKERS)
            for prepared in prepared_blocks:
                writer.write_prepared(prepared)
                task.advance()
            if writer.stats.count == 0:  # inside the writer's block: the temporary file goes, a previous output stays
                raise EotwinError("no valid pixels in the overlap of the DEM and the image (all nodata or masked)")
        stats = writer.stats
        radiometry = image.radiometry
        stretch = image.stretch
        warped = {"dem": dem.warped, "image": image.warped}

    seconds = time.perf_counter() - started
    metadata_path = Path(str(output) + ".json")
    write_json_atomic(metadata_path, stac_item(options, fmt, grid, stats, radiometry, stretch, warped, valid_total, seconds))
    viewer = preview = None
    if options.viewer:
        from eotwin.pointcloud.viewer import write_viewer

        with progress.task("writing viewer", total=1) as task:
            viewer = write_viewer(output, output.with_suffix(".html"))
            task.advance()
    if options.preview:
        from eotwin.pointcloud.preview import render_preview

        with progress.task("rendering preview", total=1) as task:
            preview = render_preview(output, output.with_suffix(".png"))
            task.advance()
    return BuildResult(output, metadata_path, viewer, preview, stats.count, valid_total, grid, stats, seconds)


def stac_item(options: BuildOptions, fmt: str, grid: Grid, stats: CloudStats, radiometry, stretch, warped: dict,
              valid_total: int | None, seconds: float) -> dict:
    """A STAC item (projection + point-cloud extensions) describing the written cloud."""
    from pyproj import CRS

    lon_lat = transform_bounds(tuple(stats.mins[:2]) + tuple(stats.maxs[:2]), grid.crs, CRS.from_epsg(4326))
    west, south, east, north = lon_lat
    output = Path(options.output)
    return item_dict(
        output.stem,
        extensions=("projection", "pointcloud"),
        bbox=[west, south, float(stats.mins[2]), east, north, float(stats.maxs[2])],
        geometry={"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]]},
        datetime=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        properties={
            "proj:epsg": grid.crs.to_epsg(),
            "proj:wkt2": grid.crs.to_wkt(),
            "proj:bbox": [*map(float, stats.mins), *map(float, stats.maxs)],
            "proj:shape": [grid.height, grid.width],
            "proj:transform": list(grid.transform)[:6],
            "pc:count": stats.count,
            "pc:type": "eopc",  # electro-optical point cloud
            "pc:encoding": {"laz": "LASzip", "copc": "LASzip (COPC 1.0)", "las": "LAS", "ply": "binary_little_endian PLY"}[fmt],
            "pc:schemas": [{"name": n, "size": s, "type": t} for n, s, t in (
                ("X", 8, "floating"), ("Y", 8, "floating"), ("Z", 8, "floating"),
                ("Red", 2 if fmt != "ply" else 1, "unsigned"), ("Green", 2 if fmt != "ply" else 1, "unsigned"),
                ("Blue", 2 if fmt != "ply" else 1, "unsigned"))],
            "eotwin:version": __version__,
            "eotwin:sources": options.provenance or {"dem": options.dem, "image": list(options.image), "mask": options.mask},
            "eotwin:parameters": {
                "sampled_fraction": options.sampled_fraction, "seed": options.seed, "grid": options.grid,
                "z_scale": options.z_scale, "mask_exclude": list(options.mask_exclude) if options.mask else None,
                "stretch": options.stretch if stretch is not None else "none (8-bit input)",
                "stretch_low": list(stretch.low) if stretch is not None else None,
                "stretch_high": list(stretch.high) if stretch is not None else None,
                "radiometry": {"kind": radiometry.kind, "scale": radiometry.scale, "offset": radiometry.offset,
                               "from": radiometry.source},
                "resampling": {"dem": "bilinear" if warped["dem"] else "none (same grid)",
                               "image": "nearest" if warped["image"] else "none (same grid)"},
            },
            "eotwin:valid_pixels": valid_total,
            "eotwin:origin": [0.0, 0.0, 0.0],
            "eotwin:seconds": round(seconds, 3),
        },
        assets={"data": {"href": output.name, "type": MEDIA_TYPES[fmt], "roles": ["data"]}},
        key_order=("type", "stac_version", "stac_extensions", "id", "bbox", "geometry", "properties", "assets", "links"),
    )
