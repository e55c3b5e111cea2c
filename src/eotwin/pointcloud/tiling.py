"""Large areas: the output grid cut into tiles, each built as a Dask task into its own LAZ, indexed by a VPC.

Tiles partition the output grid exactly (no pixel in two tiles, none left out), so the tiles
together hold the same points as one big run. A tile is done when its LAZ and its STAC item exist
(both written atomically, the item last); a re-run skips finished tiles, so an interrupted run
resumes. The index is a QGIS Virtual Point Cloud (``.vpc``): a STAC ItemCollection of the tiles.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pyproj import CRS

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, transform_bounds
from eotwin.io.files import write_json_atomic
from eotwin.io.remote.cache import Cache, request_key
from eotwin.io.remote.credentials import Credentials, redact
from eotwin.io.remote.endpoints import Endpoints
from eotwin.pointcloud.live_pipeline import LiveRequest, build_from_bbox, check_size, target_grid


@dataclass(frozen=True)
class Tile:
    name: str
    grid: Grid
    bbox_lonlat: tuple[float, float, float, float]


@dataclass(frozen=True)
class TiledResult:
    vpc: Path
    tiles: list[Path]
    count: int
    skipped: int
    planned: int


def plan_tiles(grid: Grid, tile_size_m: float) -> list[Tile]:
    """Square tiles of ``tile_size_m`` (rounded to whole pixels) covering ``grid``, row-major."""
    if tile_size_m <= 0:
        raise EotwinError(f"--tile-size must be positive, got {tile_size_m}")
    side = max(1, round(tile_size_m / grid.res[0]))
    tiles = []
    for window in grid.tiles(side, side):
        sub = grid.window_grid(window)
        name = f"r{window.row_off // side:03d}_c{window.col_off // side:03d}"
        tiles.append(Tile(name, sub, transform_bounds(sub.bounds, sub.crs, CRS.from_epsg(4326))))
    return tiles


def tile_is_done(path: Path) -> bool:
    """Built (cloud and item present) or known to be empty (all clouds or outside the swath)."""
    return (path.exists() and Path(str(path) + ".json").exists()) or Path(str(path) + ".empty").exists()


def build_tile(tile: Tile, request: LiveRequest, output: Path, endpoints: Endpoints, credentials: Credentials,
               cache_root: str, cache_enabled: bool, options: dict) -> tuple[str, int]:
    """One tile (runs on a Dask worker): the live build restricted to the tile's grid."""
    tile_request = LiveRequest(tile.bbox_lonlat, request.datetime, request.collection, request.max_cloud,
                               request.crs, request.resolution, request.use_scl)
    try:
        result = build_from_bbox(tile_request, output, endpoints=endpoints, credentials=credentials,
                                 cache=Cache(Path(cache_root), enabled=cache_enabled), grid=tile.grid, **options)
    except EotwinError as exc:
        if "no valid pixels" in str(exc):  # a tile entirely under clouds or outside the swath: an empty tile
            from eotwin.io.files import write_text_atomic

            write_text_atomic(Path(str(output) + ".empty"), "no valid pixels\n")
            return tile.name, 0
        raise EotwinError(redact(f"tile {tile.name}: {exc}", credentials.secrets())) from None
    return tile.name, result.count


def build_tiled(request: LiveRequest, output: Path, tile_size_m: float, *, endpoints: Endpoints, credentials: Credentials,
                cache: Cache, scheduler: str | None = None, workers: int = 2, progress=None, log=None,
                **options) -> TiledResult:
    """Build every unfinished tile as a Dask task, then write the ``.vpc`` index next to ``output``."""
    from dask.distributed import Client, LocalCluster, as_completed

    from eotwin.progress import ensure_progress

    progress = ensure_progress(progress)
    output = Path(output)
    grid = target_grid(request)
    check_size(grid, tile_size_m)
    fmt, stem, extension = tile_naming(output, options.get("format"))
    tiles_dir = output.parent / f"{stem}_tiles"
    tiles_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_tiles(tiles_dir)  # held until this function returns (the file object closes with it)
    for stale in tiles_dir.glob(".*.part.*"):  # left by a run that was killed mid-write (atomic writes never finished)
        stale.unlink(missing_ok=True)
    key = request_key(bbox=list(request.bbox), datetime=request.datetime, collection=request.collection,
                      max_cloud=request.max_cloud, crs=request.crs, resolution=request.resolution,
                      use_scl=request.use_scl, tile_size=tile_size_m, format=fmt, stem=stem,
                      options={k: options[k] for k in sorted(options)}, stac=endpoints.stac_url)
    _forget_other_runs(tiles_dir, stem, key, log)
    tiles = plan_tiles(grid, tile_size_m)
    paths = {t.name: tiles_dir / f"{stem}_{t.name}{extension}" for t in tiles}
    todo = [t for t in tiles if not tile_is_done(paths[t.name])]
    skipped = len(tiles) - len(todo)
    if log:
        log(f"{len(tiles)} tiles of {tile_size_m:g} m; {skipped} already built, {len(todo)} to build")
    options = dict(options) | {"viewer": False, "preview": False}
    failures: list[str] = []
    if todo:
        cluster = None
        if scheduler:
            client = Client(scheduler)
        else:
            # one thread per worker process: GDAL and the writer are not shared between tiles; memory per worker is
            # bounded like a local build (a few row blocks), so the limit follows the DeltaTwin container size
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit="2GiB",
                                   dashboard_address=None, silence_logs=40)
            client = Client(cluster)
        try:
            futures = [client.submit(build_tile, t, request, paths[t.name], endpoints, credentials, str(cache.root),
                                     cache.enabled, options, key=f"eotwin-tile-{stem}-{t.name}", pure=False)
                       for t in todo]
            with progress.task("building tiles", total=len(futures)) as task:
                for future in as_completed(futures):
                    try:
                        future.result()
                    except Exception as exc:  # reported together below: the other tiles still finish
                        failures.append(redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                                               credentials.secrets()))
                    task.advance()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    if failures:
        raise EotwinError(f"{len(failures)} of {len(todo)} tiles failed (finished tiles are kept; re-run to resume): "
                          f"{failures[0]}")
    built = [paths[t.name] for t in tiles if paths[t.name].exists()]
    vpc = write_vpc(output.parent / f"{stem}.vpc", built)
    count = sum(json.loads(Path(str(p) + ".json").read_text())["properties"]["pc:count"] for p in built)
    lock.close()
    return TiledResult(vpc, built, count, skipped, len(tiles))


def tile_naming(output: Path, fmt: str | None) -> tuple[str, str, str]:
    """(format, stem, extension) of the tiles of ``output``: ``area.copc.laz`` makes ``area_r000_c000.copc.laz`` tiles
    and ``area.vpc``, like ``area.laz`` makes ``area_r000_c000.laz`` and ``area.vpc``."""
    name = output.name
    named_copc = name.lower().endswith(".copc.laz")
    if fmt == "copc" and output.suffix.lower() != ".laz":
        raise EotwinError(f"--format copc writes LAZ: output {name!r} must end in .copc.laz")
    if named_copc and fmt not in (None, "copc"):
        raise EotwinError(f"output {name!r} is named as COPC but --format is {fmt}; use --format copc or another name")
    if fmt == "copc" or named_copc:
        return "copc", name[: -len(".copc.laz")] if named_copc else output.stem, ".copc.laz"
    fmt = fmt or output.suffix.lstrip(".").lower() or "laz"
    return fmt, output.stem, f".{fmt}"


RUN_FILE = "run.json"  # the request that made the tiles in this folder


def _lock_tiles(tiles_dir: Path):
    """An exclusive lock on the tiles folder: a second run on the same output stops instead of racing the first."""
    import fcntl

    handle = open(tiles_dir / ".lock", "a")  # noqa: SIM115 - closed when the run ends (or the process dies)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise EotwinError(f"another run is writing {tiles_dir}; wait for it or choose another -o") from None
    return handle


def _forget_other_runs(tiles_dir: Path, stem: str, key: str, log) -> None:
    """Tiles made by another request (bbox, dates, options) are never taken as done: they are removed first."""
    import re

    record = tiles_dir / RUN_FILE
    try:
        previous = json.loads(record.read_text()).get("key") if record.exists() else None
    except (OSError, ValueError, AttributeError):
        previous = "unreadable"
    if previous == key:
        return
    ours = re.compile(rf"^{re.escape(stem)}_r\d+_c\d+(\.copc)?\.[a-z]+(\.json|\.empty)?$")
    removed = [p for p in tiles_dir.iterdir() if p.is_file() and ours.match(p.name)]
    for path in removed:
        path.unlink()
    if removed and log:
        log(f"{len(removed)} files of an earlier run with another request removed from {tiles_dir}")
    write_json_atomic(record, {"key": key})


def write_vpc(path: Path, clouds: list[Path]) -> Path:
    """A QGIS Virtual Point Cloud: a STAC ItemCollection of the tiles' items, hrefs relative to the .vpc."""
    features = []
    for cloud in clouds:
        item = json.loads(Path(str(cloud) + ".json").read_text())
        item["assets"]["data"]["href"] = "./" + os.path.relpath(cloud, path.parent)
        features.append(item)
    return write_json_atomic(path, {"type": "FeatureCollection", "features": features})
