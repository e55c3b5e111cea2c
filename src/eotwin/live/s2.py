"""Windowed reads of Sentinel-2 assets (S3 or HTTPS through GDAL) and their mosaic onto one grid.

Only the window of each asset that covers the requested area is read (GDAL range requests on the
JP2/COG), never whole tiles. Reflectance follows the item's ``raster:scale`` / ``raster:offset``
(or, for items without them, the processing baseline: offset -0.1 from baseline 04.00).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window as RioWindow

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, transform_bounds
from eotwin.io.raster import geotiff_writer, grid_of, open_raster, write_geotiff
from eotwin.live.cache import Cache, request_key
from eotwin.live.credentials import Credentials, redact
from eotwin.live.endpoints import Endpoints
from eotwin.sentinel2.bands import TCI_BANDS
from eotwin.sentinel2.radiometry import baseline_scale_offset

LIVE_GDAL_CACHE_MB = 64


def gdal_path(href: str) -> str:
    """``s3://bucket/key`` -> ``/vsis3/bucket/key``; ``https://...`` -> ``/vsicurl/https://...``; files as they are."""
    if href.startswith("s3://"):
        return "/vsis3/" + href[len("s3://"):]
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    return href.removeprefix("file://")


def gdal_options(endpoints: Endpoints) -> dict:
    """GDAL configuration for CDSE's S3 (path-style) with retries on 429/5xx and a timeout (no credentials)."""
    options = {
        "AWS_S3_ENDPOINT": endpoints.s3_endpoint,
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_HTTPS": "YES" if endpoints.s3_https else "NO",
        "GDAL_HTTP_MAX_RETRY": str(endpoints.max_retries),
        "GDAL_HTTP_RETRY_DELAY": str(endpoints.backoff_s),
        "GDAL_HTTP_TIMEOUT": str(int(max(1, endpoints.timeout_s))),
        "GDAL_HTTP_CONNECTTIMEOUT": str(int(max(1, endpoints.timeout_s))),
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_USE_HEAD": "NO",
        "VSI_CACHE": "TRUE",
    }
    if not endpoints.gdal_block_cache:
        options["CPL_VSIL_CURL_NON_CACHED"] = "/vsis3/:/vsicurl/"
        options["VSI_CACHE"] = "FALSE"
    return options


def s3_session(endpoints: Endpoints, credentials: Credentials):
    """rasterio's AWS session: GDAL gets the keys from it (never from our logs or options)."""
    from rasterio.session import AWSSession

    if credentials.s3_access_key and credentials.s3_secret_key:
        return AWSSession(aws_access_key_id=credentials.s3_access_key.reveal(),
                          aws_secret_access_key=credentials.s3_secret_key.reveal(), region_name="us-east-1",
                          endpoint_url=endpoints.s3_endpoint)
    return AWSSession(aws_unsigned=True, endpoint_url=endpoints.s3_endpoint)


@contextlib.contextmanager
def gdal_env(endpoints: Endpoints, credentials: Credentials) -> Iterator[None]:
    """A rasterio environment for remote reads; GDAL errors come out with secrets scrubbed."""
    # each window is read once, whole: GDAL's block cache (by default 5 % of the machine's RAM, which in a
    # container is the host's) would only keep decoded blocks nobody reads again, and count against the limit
    cache = {"GDAL_CACHEMAX": LIVE_GDAL_CACHE_MB * 2**20}  # bytes: see eotwin.io.raster.gdal_cache_env
    try:
        with rasterio.Env(session=s3_session(endpoints, credentials), **gdal_options(endpoints), **cache):
            yield
    except EotwinError as exc:
        raise EotwinError(_explain(redact(str(exc), credentials.secrets()))) from None


def _explain(message: str) -> str:
    for code, meaning in (("401", "unauthorised: check the S3 keys"), ("403", "access denied: check the S3 keys"),
                          ("404", "not found")):
        if f"HTTP response code: {code}" in message or f" {code} " in message:
            return f"{message.split(':')[0]}: {meaning} (HTTP {code})"
    return message


# --- assets of an item -----------------------------------------------------------------------------
COLOUR_BANDS = TCI_BANDS


def _asset_band(asset: dict) -> str | None:
    bands = asset.get("bands") or asset.get("eo:bands") or []
    return bands[0].get("name") if len(bands) == 1 else None


def find_asset(item: dict, band: str) -> tuple[str, dict]:
    """The finest-resolution data asset of ``band`` (B04, SCL, ...) in an L1C or L2A item."""
    candidates = []
    for key, asset in item.get("assets", {}).items():
        name = _asset_band(asset) or key.split("_")[0]
        if name == band and "data" in asset.get("roles", ["data"]):
            candidates.append((float(asset.get("gsd", 10**6)), key, asset))
    if not candidates:
        raise EotwinError(f"item {item.get('id')} has no {band} asset")
    _, key, asset = min(candidates)
    return key, asset


def radiometry_of(item: dict, asset: dict) -> tuple[float, float]:
    """(scale, offset) to reflectance: the asset's raster:scale/offset, else from the processing baseline."""
    if "raster:scale" in asset or "raster:offset" in asset:
        return float(asset.get("raster:scale", 1e-4)), float(asset.get("raster:offset", 0.0))
    bands = asset.get("bands") or []
    if bands and ("raster:scale" in bands[0] or "raster:offset" in bands[0]):
        return float(bands[0].get("raster:scale", 1e-4)), float(bands[0].get("raster:offset", 0.0))
    version = str(item["properties"].get("processing:version") or item["properties"].get("s2:processing_baseline") or "")
    try:
        major = float(version)
    except ValueError:
        raise EotwinError(f"item {item.get('id')}: no raster:scale/offset and no processing baseline; cannot "
                          "convert digital numbers to reflectance") from None
    return baseline_scale_offset(major)


@dataclass(frozen=True)
class WindowFile:
    path: Path
    item_id: str
    band: str
    scale: float
    offset: float


def _read_window(href: str, bounds_lonlat, margin_px: int, asset: dict):
    """(data, grid of the data, nodata) of the window of ``href`` covering ``bounds_lonlat``; None when disjoint."""
    from eotwin.geo.grid import Window

    with open_raster(gdal_path(href)) as ds:
        grid = grid_of(ds)
        window = grid.window_for_bounds(transform_bounds(bounds_lonlat, "EPSG:4326", grid.crs))
        if window is None:
            return None
        row0, col0 = max(0, window.row_off - margin_px), max(0, window.col_off - margin_px)
        row1 = min(grid.height, window.row_off + window.height + margin_px)
        col1 = min(grid.width, window.col_off + window.width + margin_px)
        padded = Window(row0, col0, row1 - row0, col1 - col0)
        data = ds.read(1, window=RioWindow(col0, row0, padded.width, padded.height))
        nodata = ds.nodata if ds.nodata is not None else asset.get("nodata")
    return data, grid.window_grid(padded), nodata


def _with_retries(fetch, retries: int, backoff_s: float, what: str):
    """GDAL retries HTTP statuses itself; a body cut short surfaces as a read error: retry the whole window."""
    import time

    from rasterio.errors import RasterioIOError

    from eotwin.io.raster import RasterOpenError

    delay = backoff_s
    for attempt in range(retries + 1):
        try:
            return fetch()
        except (RasterioIOError, RasterOpenError) as exc:
            if isinstance(exc, RasterOpenError) and not exc.transient:
                raise
            if attempt == retries:
                first = str(exc).splitlines()[0] if str(exc) else "read failed"
                raise EotwinError(f"reading {what} failed after {attempt + 1} attempts: {first}") from None
            time.sleep(delay)
            delay *= 2
    return None


def read_asset_window(item: dict, band: str, bounds_lonlat: tuple[float, float, float, float], cache: Cache,
                      workdir: Path, margin_px: int = 2, retries: int = 3, backoff_s: float = 0.5) -> WindowFile | None:
    """The window of ``band`` covering ``bounds_lonlat`` as a local GeoTIFF (cached); None when disjoint."""
    key_name, asset = find_asset(item, band)
    scale, offset = radiometry_of(item, asset)
    href = asset["href"]
    key = request_key(href=href, bounds=[round(v, 7) for v in bounds_lonlat], margin=margin_px,
                      checksum=asset.get("file:checksum"))
    cached = cache.get("s2", key)
    if cached is not None:
        return WindowFile(cached, item["id"], band, scale, offset)
    read = _with_retries(lambda: _read_window(href, bounds_lonlat, margin_px, asset), retries, backoff_s, band)
    if read is None:
        return None
    data, window_grid, nodata = read
    local = Path(tempfile.mkstemp(dir=workdir, suffix=f"_{band}.tif")[1])
    write_geotiff(local, data, window_grid, nodata=nodata)
    stored = cache.put("s2", key, local) if cache.enabled else local
    return WindowFile(stored, item["id"], band, scale, offset)


MOSAIC_BLOCK_ROWS = 512  # target rows per step: a full tile's band is never held whole


def mosaic_to_file(windows: list[WindowFile], target: Grid, path: Path, *, reflectance: bool,
                   resampling: Resampling, description: str) -> Path:
    """Windows (first = preferred) warped onto ``target`` and written to ``path`` block by block: float32
    reflectance (NaN = none) or uint8 classes (0 = none).

    Each window is read through a GDAL warped view onto ``target``, one block of target rows at a time,
    so memory follows the block, not the bbox (a full tile's band as float32 is 480 MB). The stored DN
    are warped and then scaled: with nearest resampling that is the same as scaling first.
    """
    from rasterio.vrt import WarpedVRT

    dtype = np.float32 if reflectance else np.uint8
    fill = np.nan if reflectance else 0
    dst_crs = rasterio.crs.CRS.from_wkt(target.crs.to_wkt())
    with contextlib.ExitStack() as stack:
        views = []
        for win in windows:
            ds = stack.enter_context(open_raster(win.path))
            nodata = ds.nodata if ds.nodata is not None else (None if reflectance else 0)
            # without a no-data value an alpha band tells the window's footprint from the rest of the target
            vrt = stack.enter_context(WarpedVRT(ds, crs=dst_crs, transform=target.transform, width=target.width,
                                                height=target.height, resampling=resampling, src_nodata=nodata,
                                                nodata=nodata, add_alpha=nodata is None))
            views.append((win, vrt, nodata))
        with geotiff_writer(path, target, 1, np.dtype(dtype).name, nodata=fill, descriptions=[description]) as dst:
            for block in target.row_blocks(MOSAIC_BLOCK_ROWS):
                rio_window = RioWindow(block.col_off, block.row_off, block.width, block.height)
                out = np.full((block.height, block.width), fill, dtype=dtype)
                for win, vrt, nodata in views:
                    raw = vrt.read(1, window=rio_window)
                    have = raw != nodata if nodata is not None else vrt.read(2, window=rio_window) > 0
                    have &= np.isnan(out) if reflectance else out == 0
                    if reflectance:
                        out[have] = raw[have].astype(np.float32) * np.float32(win.scale) + np.float32(win.offset)
                    else:
                        out[have] = raw[have]
                dst.write(out, 1, window=rio_window)
    return path
