"""The Copernicus DEM from Earth Data Hub (Zarr over HTTPS), read lazily: only the chunks under the bbox.

The store is opened with xarray's zarr engine and ``chunks={}`` (dask), the bbox slice is loaded,
and written as a small EPSG:4326 GeoTIFF that the point-cloud pipeline warps like any local DEM.
Dimension names differ between store versions (``lat``/``lon`` or ``latitude``/``longitude``;
``y``/``x`` for the UTM stores) and are detected. Transient failures (timeouts, 429, 5xx, truncated
bodies) are retried with exponential backoff; 401/403/404 are one-line errors.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

import numpy as np
from affine import Affine
from pyproj import CRS

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, transform_bounds
from eotwin.io.raster import write_geotiff
from eotwin.io.remote.cache import Cache, request_key
from eotwin.io.remote.credentials import Credentials, origin, redact, strip_userinfo, token_may_go_to
from eotwin.io.remote.endpoints import Endpoints
from eotwin.io.remote.retry import tries

_LAT_NAMES = ("lat", "latitude", "y")
_LON_NAMES = ("lon", "longitude", "x")
_VAR_NAMES = ("dsm", "dem", "elevation", "height")


def _dims(data_array) -> tuple[str, str]:
    lat = next((d for d in data_array.dims if d in _LAT_NAMES), None)
    lon = next((d for d in data_array.dims if d in _LON_NAMES), None)
    if lat is None or lon is None:
        raise EotwinError(f"DEM store has dimensions {tuple(data_array.dims)}; expected lat/lon, latitude/longitude or y/x")
    return lat, lon


def origin_bound_auth(url: str, user: str, token: str):
    """An aiohttp middleware adding basic auth to requests for ``url``'s origin only.

    A session-wide ``auth`` is re-applied to every request, redirects to other hosts included; this one
    checks each request (a redirect is a new request) and sends the token nowhere else.
    """
    import base64

    bound = origin(url)
    header = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()

    async def middleware(request, handler):
        if origin(str(request.url)) == bound:
            request.headers["Authorization"] = header
        else:
            request.headers.pop("Authorization", None)
        return await handler(request)

    return middleware


def retrying(retries: int, backoff_s: float):
    """An aiohttp middleware retrying one request (a Zarr chunk or metadata file) on transient failures.

    Statuses 429/5xx (Retry-After honoured, capped), dropped connections, timeouts and cut bodies are
    retried with exponential backoff; the body is read here so that a cut one is noticed and fetched again.
    Retrying per request, not per DEM slice, keeps a slice of many chunks finishing on a flaky network.
    """
    import asyncio

    import aiohttp

    from eotwin.io.remote.retry import RETRY_STATUSES, retry_after_wait

    async def middleware(request, handler):
        delay = backoff_s
        for attempt in range(retries + 1):
            last = attempt == retries
            try:
                response = await handler(request)
                if response.status in RETRY_STATUSES and not last:
                    wait = retry_after_wait(response.headers.get("Retry-After", ""), delay)
                    response.release()
                    await asyncio.sleep(wait)
                    delay *= 2
                    continue
                if response.status < 400:
                    await response.read()
                return response
            except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                if last:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    return middleware


def _open(url: str, credentials: Credentials, timeout_s: float, retries: int = 0, backoff_s: float = 0.5):
    import aiohttp
    import xarray as xr

    url, url_token = strip_userinfo(url)
    token = url_token or (credentials.edh_token.reveal() if credentials.edh_token else None)
    # per connect and per read, not in total: the retry middleware runs inside one session request
    client_kwargs: dict = {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)}
    remote = url.startswith(("http://", "https://"))
    middlewares = [retrying(retries, backoff_s)] if retries else []
    if token and remote:
        if not token_may_go_to(url):
            raise EotwinError(f"refusing to send the EDH token over plain http to {origin(url)[1]}; use https")
        middlewares.append(origin_bound_auth(url, "edh", token))  # innermost: every retry carries it
    if middlewares:
        client_kwargs["middlewares"] = tuple(middlewares)
    dataset = xr.open_dataset(url, engine="zarr", chunks={}, mask_and_scale=False, decode_coords="all",
                              storage_options={"client_kwargs": client_kwargs} if remote else None)
    name = next((v for v in _VAR_NAMES if v in dataset.data_vars), None)
    if name is None:
        raise EotwinError(f"DEM store {redact(url, credentials.secrets())} has no elevation variable (looked for {', '.join(_VAR_NAMES)})")
    return dataset[name]


def _classify(exc: BaseException) -> tuple[bool, str]:
    """(retry?, message) for an error raised while reading the store."""
    import aiohttp

    status = getattr(exc, "status", None)
    if isinstance(exc, aiohttp.ClientResponseError) and status is not None:
        if status in (401, 403):
            return False, f"Earth Data Hub refused access (HTTP {status}): check the EDH token"
        if status == 404:
            return False, "Earth Data Hub store not found (HTTP 404)"
        if status == 429 or status >= 500:
            return True, f"HTTP {status}"
        return False, f"HTTP {status}"
    if isinstance(exc, FileNotFoundError):
        return False, "Earth Data Hub store not found (HTTP 404)"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | aiohttp.ClientPayloadError | aiohttp.ClientConnectionError):
        return True, type(exc).__name__
    if isinstance(exc, ValueError | KeyError) and "decompress" in str(exc).lower():
        return True, "corrupt chunk"
    return False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def dem_slice(bbox_lonlat: tuple[float, float, float, float], endpoints: Endpoints, credentials: Credentials,
              cache: Cache, workdir: Path, margin_cells: int = 3) -> Path:
    """A GeoTIFF (in the store's CRS) of the DEM cells covering ``bbox_lonlat`` plus a margin, fetched or cached."""
    key = request_key(url=endpoints.dem_url, bbox=[round(v, 7) for v in bbox_lonlat], margin=margin_cells)
    cached = cache.get("dem", key)
    if cached is not None:
        return cached
    secrets = credentials.secrets()
    for attempt, final in tries(endpoints.max_retries, endpoints.backoff_s):
        try:
            values, grid = _load(endpoints.dem_url, credentials, endpoints.timeout_s, bbox_lonlat, margin_cells,
                                 endpoints.max_retries, endpoints.backoff_s)
            break
        except EotwinError:
            raise
        except Exception as exc:
            retry, last = _classify(exc)
            if not retry:
                raise EotwinError(redact(f"DEM read from {endpoints.dem_url} failed: {last}", secrets)) from None
            if final:
                raise EotwinError(redact(f"DEM read from {endpoints.dem_url} failed after {attempt + 1} attempts: {last}",
                                         secrets)) from None
    local = Path(tempfile.mkstemp(dir=workdir, suffix="_dem.tif")[1])
    write_geotiff(local, values.astype(np.float32), grid, nodata=float("nan"))
    return cache.put("dem", key, local) if cache.enabled else local


def store_crs(url: str, data_array) -> CRS:
    """EPSG:4326 for lat/lon stores; for x/y (UTM) stores the grid-mapping WKT, else the zone in the URL (``.../32N``)."""
    lat_name, _ = _dims(data_array)
    if lat_name != "y":
        return CRS.from_epsg(4326)
    for coord in data_array.coords.values():
        for attr in ("crs_wkt", "spatial_ref"):
            if attr in coord.attrs:
                return CRS.from_wkt(coord.attrs[attr])
    for attr in ("crs", "proj:code", "crs_wkt"):
        if attr in data_array.attrs:
            return CRS.from_user_input(data_array.attrs[attr])
    zone = re.search(r"/(\d{1,2})([NS])/?$", url)
    if zone:
        return CRS.from_epsg((32600 if zone.group(2) == "N" else 32700) + int(zone.group(1)))
    raise EotwinError("the DEM store has x/y dimensions but no CRS (no grid mapping, no zone in the URL)")


def _load(url: str, credentials: Credentials, timeout_s: float, bbox_lonlat, margin_cells: int, retries: int = 0,
          backoff_s: float = 0.5) -> tuple[np.ndarray, Grid]:
    data = _open(url, credentials, timeout_s, retries, backoff_s)
    lat_name, lon_name = _dims(data)
    crs = store_crs(url, data)
    west, south, east, north = transform_bounds(bbox_lonlat, CRS.from_epsg(4326), crs)
    ys, xs = data[lat_name].values, data[lon_name].values
    cell_x, cell_y = abs(float(xs[1] - xs[0])), abs(float(ys[1] - ys[0]))
    west, east = west - margin_cells * cell_x, east + margin_cells * cell_x
    south, north = south - margin_cells * cell_y, north + margin_cells * cell_y
    lat_sel = slice(north, south) if ys[0] > ys[-1] else slice(south, north)
    piece = data.sel({lat_name: lat_sel, lon_name: slice(west, east)})
    if piece.sizes[lat_name] < 2 or piece.sizes[lon_name] < 2:
        raise EotwinError(f"the DEM store does not cover the bbox {[round(v, 5) for v in bbox_lonlat]}")
    piece = piece.transpose(lat_name, lon_name)
    values = np.asarray(piece.values, dtype=np.float64)  # fetches only the chunks under the slice
    plat, plon = piece[lat_name].values, piece[lon_name].values
    res_x = float(plon[1] - plon[0])
    res_y = float(plat[1] - plat[0])
    transform = Affine(res_x, 0, float(plon[0]) - res_x / 2, 0, res_y, float(plat[0]) - res_y / 2)
    if res_y > 0:  # ascending latitude: flip to north-up
        values = values[::-1]
        transform = Affine(res_x, 0, float(plon[0]) - res_x / 2, 0, -res_y, float(plat[-1]) + res_y / 2)
    return values, Grid(transform, values.shape[1], values.shape[0], crs)
