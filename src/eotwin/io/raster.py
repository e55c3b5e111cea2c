"""Thin, explicit raster I/O over rasterio.

Opening goes through :func:`open_raster`, which turns GDAL's errors into one-line
:class:`EotwinError` messages; writing goes through :func:`write_geotiff`, which is atomic.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid
from eotwin.io.files import atomic_path


@dataclass(frozen=True)
class RasterInfo:
    """What a pipeline needs to know about a raster before reading pixels."""

    path: str
    grid: Grid
    count: int
    dtypes: tuple[str, ...]
    nodata: float | None
    descriptions: tuple[str | None, ...]
    tags: Mapping[str, str]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]


def crs_of(dataset) -> CRS:
    if dataset.crs is None:
        raise EotwinError(f"{dataset.name}: raster has no CRS (georeference it first, e.g. gdal_edit.py -a_srs)")
    return CRS.from_wkt(dataset.crs.to_wkt())


def grid_of(dataset) -> Grid:
    return Grid(dataset.transform, dataset.width, dataset.height, crs_of(dataset))


class RasterOpenError(EotwinError):
    """A raster that did not open; ``transient`` when a network hiccup (worth a retry) is the cause."""

    transient: bool = False


# GDAL's words for a failure of the network rather than of the file (curl errors, server-side statuses)
_TRANSIENT = re.compile(r"CURL error|HTTP response code: (429|5\d\d)|Connection (reset|refused|timed out)|timed out|"
                        r"Empty reply|transfer closed", re.IGNORECASE)


@contextlib.contextmanager
def open_raster(path: str | Path, *, require_crs: bool = True) -> Iterator[rasterio.io.DatasetReader]:
    """Open a GDAL-readable raster with one-line errors for the common user mistakes."""
    name = str(path)
    is_remote = name.startswith(("/vsi", "http://", "https://", "s3://"))
    if not is_remote and not Path(name).exists():
        raise EotwinError(f"{name}: no such file")
    try:
        with warnings.catch_warnings():  # a missing georeference becomes our own one-line error below
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(name)
    except RasterioIOError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else "unreadable"
        error = RasterOpenError(f"{name}: not a readable raster ({first_line})")
        error.transient = is_remote and bool(_TRANSIENT.search(first_line))
        raise error from None
    try:
        if require_crs and is_remote and dataset.crs is None:
            # a remote header whose georeferencing tags were in a range that came back cut short opens without
            # them; GDAL says nothing. Worth another try before it is taken for a file without CRS.
            error = RasterOpenError(f"{name}: raster has no CRS (its header may have been cut short in transit)")
            error.transient = True
            raise error
        if require_crs:
            crs_of(dataset)
        yield dataset
    finally:
        dataset.close()


@contextlib.contextmanager
def read_errors_named(name: str) -> Iterator[None]:
    """Name the file when GDAL fails reading pixels of an opened raster (a truncated or corrupt file).

    GDAL's read errors ("Read failed. See previous exception for details.") do not say which of the
    inputs broke; a file whose header is intact but whose data was cut short opens fine and fails here.
    """
    try:
        yield
    except RasterioIOError as exc:
        first_line = " ".join(str(exc).split())[:300] or "unreadable"
        raise EotwinError(f"{name}: pixels could not be read ({first_line}); the file may be truncated or "
                          "corrupt") from None


def raster_info(path: str | Path) -> RasterInfo:
    with open_raster(path) as ds:
        return RasterInfo(
            path=str(path),
            grid=grid_of(ds),
            count=ds.count,
            dtypes=tuple(ds.dtypes),
            nodata=ds.nodata,
            descriptions=tuple(ds.descriptions),
            tags=dict(ds.tags()),
            scales=tuple(ds.scales),
            offsets=tuple(ds.offsets),
        )


def write_geotiff(
    target: str | Path,
    data: np.ndarray,
    grid: Grid,
    *,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    band_tags: Sequence[Mapping[str, str]] | None = None,
    compress: str = "deflate",
    cog: bool = False,
    photometric: str | None = None,
) -> Path:
    """Write ``data`` (bands, rows, cols) or (rows, cols) as a tiled GeoTIFF atomically.

    With ``cog`` the file is written through GDAL's COG driver (overviews, tiled, ordered IFDs).
    """
    arr = data[np.newaxis] if data.ndim == 2 else data
    if arr.shape[1:] != grid.shape:
        raise EotwinError(f"array shape {arr.shape[1:]} does not match grid {grid.shape}")
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "crs": rasterio.crs.CRS.from_wkt(grid.crs.to_wkt()),
        "transform": grid.transform,
        "nodata": nodata,
        "compress": compress,
    }
    if grid.width >= 256 and grid.height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if photometric:
        profile["photometric"] = photometric
    target = Path(target)
    with atomic_path(target) as tmp:
        plain = tmp if not cog else tmp.with_name(tmp.name + ".src.tif")
        try:
            with rasterio.open(plain, "w", **profile) as dst:
                dst.write(arr)
                if descriptions:
                    for i, desc in enumerate(descriptions, start=1):
                        dst.set_band_description(i, desc)
                if tags:
                    dst.update_tags(**{k: str(v) for k, v in tags.items()})
                if band_tags:
                    for i, btags in enumerate(band_tags, start=1):
                        dst.update_tags(i, **{k: str(v) for k, v in btags.items()})
            if cog:
                from rasterio.shutil import copy as rio_copy

                rio_copy(plain, tmp, driver="COG", compress=compress.upper(), overview_resampling="average")
        finally:
            if cog:
                plain.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def geotiff_writer(target: str | Path, grid: Grid, count: int, dtype: str, *, nodata: float | None = None,
                   descriptions: Sequence[str] | None = None, tags: Mapping[str, str] | None = None,
                   compress: str = "deflate", photometric: str | None = None):
    """An open tiled GeoTIFF to fill window by window (``dst.write(block, window=...)``), renamed onto ``target``
    only when the ``with`` block ends without error: for rasters too large to hold in memory."""
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": count, "dtype": dtype,
               "crs": rasterio.crs.CRS.from_wkt(grid.crs.to_wkt()), "transform": grid.transform, "nodata": nodata,
               "compress": compress}
    if grid.width >= 256 and grid.height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if photometric:
        profile["photometric"] = photometric
    with atomic_path(Path(target)) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for i, desc in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, desc)
        if tags:
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
        yield dst


def north_up_transform(left: float, top: float, res: float) -> Affine:
    return Affine(res, 0.0, left, 0.0, -res, top)


def gdal_cache_env(megabytes: int, **options: object):
    """A rasterio environment whose GDAL block cache holds ``megabytes`` MiB.

    rasterio hands an integer ``GDAL_CACHEMAX`` to ``GDALSetCacheMax64``, which counts bytes: passing
    the megabytes themselves (as GDAL's own config option reads them) gives a cache of a few hundred
    bytes, and every window read decodes its tiles again (a preview of a full tile took 12 s instead
    of 0.4 s). This helper is the one place that converts.
    """
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=int(megabytes) * 2**20, **options)
