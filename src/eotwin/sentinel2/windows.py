"""Windowed reads of Sentinel-2 assets (S3 or HTTPS through GDAL), each kept as a small local GeoTIFF (cached).

Only the window of each asset that covers the requested area is read (GDAL range requests on the
JP2/COG), never whole tiles. Reflectance follows the item's ``raster:scale`` / ``raster:offset``
(or, for items without them, the processing baseline: offset -0.1 from baseline 04.00). Reads run
inside :func:`eotwin.io.remote.gdal.gdal_env`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from rasterio.windows import Window as RioWindow

from eotwin.errors import EotwinError
from eotwin.geo.grid import transform_bounds
from eotwin.io.raster import grid_of, open_raster, write_geotiff
from eotwin.io.remote.cache import Cache, request_key
from eotwin.io.remote.gdal import gdal_path
from eotwin.io.remote.retry import tries
from eotwin.sentinel2.bands import TCI_BANDS
from eotwin.sentinel2.radiometry import baseline_scale_offset

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
    from rasterio.errors import RasterioIOError

    from eotwin.io.raster import RasterOpenError

    for attempt, last in tries(retries, backoff_s):
        try:
            return fetch()
        except (RasterioIOError, RasterOpenError) as exc:
            if isinstance(exc, RasterOpenError) and not exc.transient:
                raise
            if last:
                first = str(exc).splitlines()[0] if str(exc) else "read failed"
                raise EotwinError(f"reading {what} failed after {attempt + 1} attempts: {first}") from None
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
