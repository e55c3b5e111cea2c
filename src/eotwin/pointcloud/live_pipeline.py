"""Bounding box + date -> STAC search -> windowed reads -> mosaic on one UTM grid -> EDH DEM -> point cloud.

The live sources are turned into small local rasters in a work directory (the mosaic of the bbox
window, the DEM slice), and the local point-cloud pipeline runs on them unchanged: the same
geometry, colours, masking and writers as for local files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pyproj import CRS
from rasterio.enums import Resampling

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, transform_bounds, utm_crs_for_lonlat
from eotwin.heap import release_free_memory
from eotwin.io.files import temporary_owned_dir
from eotwin.io.remote.cache import Cache, default_cache_dir, request_key
from eotwin.io.remote.credentials import Credentials, redact, strip_userinfo
from eotwin.io.remote.edh_dem import dem_slice
from eotwin.io.remote.endpoints import Endpoints
from eotwin.io.remote.gdal import gdal_env
from eotwin.io.remote.stac_api import search
from eotwin.pointcloud.live_items import ChosenItem, choose_items
from eotwin.pointcloud.live_mosaic import mosaic_to_file
from eotwin.progress import ProgressReporter, ensure_progress
from eotwin.sentinel2.windows import COLOUR_BANDS, read_asset_window


@dataclass(frozen=True)
class LiveRequest:
    bbox: tuple[float, float, float, float]
    datetime: str
    collection: str = "sentinel-2-l2a"
    max_cloud: float | None = 20.0
    crs: str | None = None
    resolution: float = 10.0
    use_scl: bool = True


@dataclass
class LiveScene:
    """Local rasters standing for the live sources of one request."""

    grid: Grid
    red: Path
    green: Path
    blue: Path
    scl: Path | None
    dem: Path
    chosen: list[ChosenItem] = field(default_factory=list)

    def provenance(self) -> dict:
        return {"items": [{"id": c.item["id"], "collection": c.item.get("collection"), "reason": c.reason,
                           "datetime": c.item["properties"].get("datetime"),
                           "eo:cloud_cover": c.item["properties"].get("eo:cloud_cover")} for c in self.chosen]}


# each window is read once, whole: GDAL's block cache (by default 5 % of the machine's RAM, which in a
# container is the host's) would only keep decoded blocks nobody reads again, and count against the limit
LIVE_GDAL_CACHE_MB = 64
# a full Sentinel-2 tile is 10980 x 10980 = 121 M pixels at 10 m: one build handles that in bounded memory;
# beyond it the work must be split into tiles, and the number of tiles (Dask tasks) stays sane
MAX_SINGLE_PIXELS = 150_000_000
MAX_TILES = 10_000
MIN_TILE_SIZE_M = 500.0


def target_grid(request: LiveRequest) -> Grid:
    west, south, east, north = request.bbox
    if request.crs:
        try:
            crs = CRS.from_user_input(request.crs)
        except Exception:
            raise EotwinError(f"--crs {request.crs!r} is not a CRS pyproj knows") from None
        unit = crs.axis_info[0].unit_name if crs.axis_info else ""
        if not crs.is_projected or unit not in ("metre", "meter"):
            raise EotwinError(f"--crs {request.crs} is not a projected CRS in metres (pixels are {request.resolution:g} "
                              "CRS units); use a UTM zone, e.g. EPSG:32632")
    else:
        crs = utm_crs_for_lonlat((west + east) / 2, (south + north) / 2)
    return Grid.from_bounds(transform_bounds(request.bbox, CRS.from_epsg(4326), crs), request.resolution, crs)


def check_size(grid: Grid, tile_size_m: float | None = None) -> None:
    """Refuse, before any request, work that cannot finish in bounded memory or time (estimated from the grid)."""
    pixels = grid.width * grid.height
    if tile_size_m is None:
        if pixels > MAX_SINGLE_PIXELS:
            raise EotwinError(f"the bbox makes {grid.width} x {grid.height} = {pixels / 1e6:,.0f} M pixels at "
                              f"{grid.res[0]:g} m, more than one build handles ({MAX_SINGLE_PIXELS / 1e6:.0f} M); "
                              "give --tile-size (e.g. 10000) or a smaller bbox")
        return
    if tile_size_m < MIN_TILE_SIZE_M:
        raise EotwinError(f"--tile-size {tile_size_m:g} m is below {MIN_TILE_SIZE_M:g} m (each tile is a task with "
                          "its own requests)")
    side = max(1, round(tile_size_m / grid.res[0]))
    tiles = -(-grid.width // side) * -(-grid.height // side)
    if tiles > MAX_TILES:
        raise EotwinError(f"the bbox makes {tiles:,} tiles of {tile_size_m:g} m, more than {MAX_TILES:,}; "
                          "use a larger --tile-size or a smaller bbox")


def cached_search(endpoints: Endpoints, request: LiveRequest, cache: Cache, workdir: Path) -> list[dict]:
    """STAC search, remembered per request so that a re-run of the same request works offline."""
    import json

    key = request_key(stac=endpoints.stac_url, collection=request.collection, bbox=list(request.bbox),
                      datetime=request.datetime, max_cloud=request.max_cloud)
    hit = cache.get("stac", key, ".json")
    if hit is not None:
        return json.loads(hit.read_text())
    items = search(endpoints, request.collection, request.bbox, request.datetime, request.max_cloud)
    if cache.enabled:
        local = workdir / f"search-{key}.json"
        local.write_text(json.dumps(items))
        cache.put("stac", key, local, ".json")
    return items


def fetch_scene(request: LiveRequest, endpoints: Endpoints, credentials: Credentials, cache: Cache, workdir: Path,
                progress: ProgressReporter | None = None, log=None, grid: Grid | None = None) -> LiveScene:
    """Search, choose, read the bbox windows and the DEM; write the local rasters into ``workdir``."""
    progress = ensure_progress(progress)
    items = cached_search(endpoints, request, cache, workdir)
    chosen = choose_items(items, request.bbox)
    if log:
        log(f"{len(items)} item(s) found; using {len(chosen)}:")
        for c in chosen:
            log(f"  {c.item['id']}: {c.reason}")
    grid = grid or target_grid(request)
    bands = list(COLOUR_BANDS) + (["SCL"] if request.use_scl and "l2a" in request.collection.lower() else [])
    secrets = credentials.secrets()
    paths: dict[str, Path] = {}
    # the windows are read with a margin in the items' own grids, then warped onto the output grid
    lonlat = transform_bounds(grid.bounds, grid.crs, CRS.from_epsg(4326))
    with progress.task("reading Sentinel-2 windows", total=len(bands) * len(chosen)) as task:
        try:
            with gdal_env(endpoints, credentials, block_cache_mb=LIVE_GDAL_CACHE_MB):
                for band in bands:
                    windows = []
                    for c in chosen:
                        win = read_asset_window(c.item, band, lonlat, cache, workdir, retries=endpoints.max_retries,
                                                backoff_s=endpoints.backoff_s)
                        if win is not None:
                            windows.append(win)
                        task.advance()
                    paths[band] = mosaic_to_file(windows, grid, workdir / f"{band}.tif", reflectance=band != "SCL",
                                                 resampling=Resampling.nearest, description=band)
        except EotwinError as exc:
            raise EotwinError(redact(str(exc), secrets)) from None
    with progress.task("reading the DEM", total=1) as task:
        dem = dem_slice(lonlat, endpoints, credentials, cache, workdir)
        task.advance()
    return LiveScene(grid, paths["B04"], paths["B03"], paths["B02"], paths.get("SCL"), dem, chosen)


def build_from_bbox(request: LiveRequest, output: Path, *, endpoints: Endpoints | None = None,
                    credentials: Credentials | None = None, cache: Cache | None = None, progress=None, log=None,
                    grid: Grid | None = None, **build_options):
    """The live-mode build: fetch the scene for ``request`` and run the local point-cloud pipeline on it."""
    from eotwin.pointcloud.pipeline import build_point_cloud, make_options

    endpoints = endpoints or Endpoints.from_env()
    credentials = credentials or Credentials()
    cache = cache or Cache(default_cache_dir())
    if grid is None:
        check_size(target_grid(request))
    # the fetched scene (GBs at full size) in a folder named with this process id: a run killed with -9
    # leaves it behind, and the next live build removes it
    with temporary_owned_dir("eotwin-live-") as tmp:
        scene = fetch_scene(request, endpoints, credentials, cache, Path(tmp), progress, log, grid)
        release_free_memory()  # the fetch's buffers are garbage now: give the pages back before the build
        options = make_options(dem=str(scene.dem), image=(str(scene.red), str(scene.green), str(scene.blue)),
                               output=output, mask=str(scene.scl) if scene.scl else None,
                               provenance=scene.provenance() | {"bbox": list(request.bbox), "datetime": request.datetime,
                                                                "stac": strip_userinfo(endpoints.stac_url)[0],
                                                                "dem": strip_userinfo(endpoints.dem_url)[0]},
                               **build_options)
        return build_point_cloud(options, progress=progress)
