"""Reading Sentinel-2 bands onto one grid, block by block: raw DN, TOA reflectance, retried remote reads.

All bands are read onto one output grid (10 or 20 m) through GDAL warped views, block by block, so a
full 10980 x 10980 tile never sits in memory. DN 0 is no data.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, Window
from eotwin.sentinel2.products import BandSource, L1CProduct

T = TypeVar("T")
# a remote read refused for good (keys, a missing object): trying again cannot help
_PERMANENT_REMOTE = re.compile(r"HTTP response code: 4(?!29)\d\d|\b(401|403|404)\b|AccessDenied|NoSuchKey|"
                               r"InvalidAccessKeyId|SignatureDoesNotMatch|does not exist|No such file", re.IGNORECASE)


def _worth_retrying(message: str) -> bool:
    """Whether a failed remote open or read may succeed when tried again (not a refusal, not a missing file)."""
    return not _PERMANENT_REMOTE.search(message)


def retry_remote(attempt: Callable[[], T], *, retries: int, backoff_s: float, what: str,
                 before_retry: Callable[[], None] | None = None) -> T:
    """``attempt()``, tried again up to ``retries`` times with a doubling delay while it fails with an
    :class:`EotwinError` worth retrying; ``before_retry`` runs before each new try (reopen what failed)."""
    import time

    delay = backoff_s
    for tries in range(retries + 1):
        try:
            if tries and before_retry is not None:
                before_retry()
            return attempt()
        except EotwinError as exc:
            if tries == retries or not _worth_retrying(str(exc)):
                if tries:
                    raise EotwinError(f"{exc} ({what}: {tries + 1} attempts)") from None
                raise
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


class BandReader:
    """Reads named bands of one or more files onto a target grid, window by window.

    A band already on the target grid is read directly; any other goes through a GDAL warped view
    (bilinear up-sampling, averaging down-sampling) that treats DN 0 as no data, so swath edges are
    not smeared. Returns raw DN as float32 with no data as NaN.
    """

    def __init__(
        self, sources: Mapping[str, BandSource], grid: Grid, *, categorical: Sequence[str] = (),
        retries: int = 0, backoff_s: float = 0.5,
    ) -> None:
        self.sources = dict(sources)
        self.grid = grid
        self.categorical = set(categorical)
        # remote bands (an item's /vsis3/, /vsicurl/): a body cut short reaches us as a decoder error
        # ("No code-stream"), which GDAL does not retry; the open or the block read is tried again afresh
        self.retries, self.backoff_s = max(0, int(retries)), float(backoff_s)
        self._stack = contextlib.ExitStack()
        self._views: dict[str, tuple[object, int]] = {}

    def __enter__(self) -> BandReader:
        return self._retrying(self._open, "opening the bands", reopen=False)

    def _retrying(self, attempt: Callable[[], T], what: str, *, reopen: bool = True) -> T:
        """``attempt()``, tried again ``retries`` times (every dataset reopened) when a remote read fails."""

        def afresh() -> None:
            self._stack.close()
            self._stack, self._views = contextlib.ExitStack(), {}
            if reopen:
                self._open()

        return retry_remote(attempt, retries=self.retries, backoff_s=self.backoff_s, what=what, before_retry=afresh)

    def _open(self) -> BandReader:
        import rasterio
        from rasterio.crs import CRS as RioCRS
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        from eotwin.io.raster import open_raster

        opened: dict[str, object] = {}
        target_crs = RioCRS.from_wkt(self.grid.crs.to_wkt())
        try:
            for band, src in self.sources.items():
                if src.path not in opened:
                    opened[src.path] = self._stack.enter_context(open_raster(src.path))
                ds = opened[src.path]
                same = (
                    ds.width == self.grid.width
                    and ds.height == self.grid.height
                    and ds.transform.almost_equals(self.grid.transform)
                    and ds.crs == target_crs
                )
                if src.index > ds.count:
                    raise EotwinError(f"{src.path}: has {ds.count} bands, band {src.index} requested")
                if same:
                    self._views[band] = (ds, src.index)
                    continue
                coarser = abs(ds.transform.a) > abs(self.grid.transform.a) + 1e-9
                resampling = (
                    Resampling.nearest
                    if band in self.categorical
                    else Resampling.bilinear
                    if coarser
                    else Resampling.average
                )
                vrt = self._stack.enter_context(
                    WarpedVRT(
                        ds,
                        crs=target_crs,
                        transform=self.grid.transform,
                        width=self.grid.width,
                        height=self.grid.height,
                        resampling=resampling,
                        src_nodata=0,
                        nodata=0,
                        dtype="float32",
                    )
                )
                self._views[band] = (vrt, src.index)
        except rasterio.errors.RasterioError as exc:
            self._stack.close()
            raise EotwinError(f"cannot open bands: {exc}") from None
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def read(
        self,
        bands: Sequence[str],
        window: Window | None = None,
        out_shape: tuple[int, int] | None = None,
        resampling: str = "average",
        *,
        step: int = 1,
        scaling: Sequence[tuple[float, float]] | None = None,
    ) -> np.ndarray:
        """DN of ``bands`` (float32, NaN where DN is 0) in ``window`` of the target grid, optionally
        decimated to ``out_shape`` with ``resampling`` (categorical bands: always nearest).

        ``step`` keeps every step-th row and column of the window (taken from the DN, before any
        conversion); ``scaling`` gives per band (offset, divisor) to return (DN + offset) / divisor
        instead, computed in float32 in place (the same values as converting afterwards).
        """
        return self.to_float(self.read_dn(bands, window, out_shape, resampling, step=step), scaling)

    def read_dn(
        self,
        bands: Sequence[str],
        window: Window | None = None,
        out_shape: tuple[int, int] | None = None,
        resampling: str = "average",
        *,
        step: int = 1,
    ) -> RawBlock:
        """The stored values of ``bands`` as read (uint16 for a stack: half the memory of float32), for
        :meth:`to_float`; a read-ahead thread holds these rather than the converted block."""
        return self._retrying(lambda: self._read_dn(bands, window, out_shape, resampling, step=step),
                              "reading a block")

    def _read_dn(
        self,
        bands: Sequence[str],
        window: Window | None,
        out_shape: tuple[int, int] | None,
        resampling: str,
        *,
        step: int,
    ) -> RawBlock:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.windows import Window as RioWindow

        window = window or Window(0, 0, self.grid.height, self.grid.width)
        rw = RioWindow(window.col_off, window.row_off, window.width, window.height)
        read_shape = out_shape or (window.height, window.width)
        step = max(1, int(step))
        shape = (-(-read_shape[0] // step), -(-read_shape[1] // step))
        # bands of one dataset are read in one call: a pixel-interleaved stack decodes each tile once
        groups: dict[int, list[int]] = {}
        for k, band in enumerate(bands):
            if band not in self._views:
                raise EotwinError(f"band {band} is not available")
            groups.setdefault(id(self._views[band][0]), []).append(k)
        parts: list[tuple[list[int], np.ndarray]] = []
        for ks in groups.values():
            ds = self._views[bands[ks[0]]][0]
            categorical = any(bands[k] in self.categorical for k in ks)
            method = Resampling.nearest if out_shape is None or categorical else Resampling[resampling]
            try:
                dn = ds.read(
                    [self._views[bands[k]][1] for k in ks], window=rw, out_shape=(len(ks), *read_shape),
                    resampling=method,
                )
            except rasterio.errors.RasterioError as exc:
                names = ", ".join(bands[k] for k in ks)
                raise EotwinError(f"cannot read band {names}: {str(exc).splitlines()[0]}") from None
            parts.append((ks, dn[:, ::step, ::step] if step > 1 else dn))
        return RawBlock(len(bands), shape, parts)

    @staticmethod
    def to_float(raw: RawBlock, scaling: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
        """float32 (bands, rows, cols) of a :meth:`read_dn` block, NaN where DN is 0, optionally scaled."""
        out = np.empty((raw.count, *raw.shape), dtype=np.float32)
        for ks, dn in raw.parts:
            for j, k in enumerate(ks):
                band_out = out[k]
                np.copyto(band_out, dn[j], casting="unsafe")
                if scaling is not None:
                    offset, divisor = scaling[k]
                    if offset:
                        band_out += np.float32(offset)
                    band_out /= np.float32(divisor)
                np.copyto(band_out, np.float32(np.nan), where=dn[j] == 0)
        return out


@dataclass(frozen=True)
class RawBlock:
    """Values of some bands as stored, grouped by the dataset they came from (see :meth:`BandReader.read_dn`)."""

    count: int
    shape: tuple[int, int]
    parts: list[tuple[list[int], np.ndarray]]  # (band positions, their values)


def toa_scaling(product: L1CProduct, bands: Sequence[str]) -> list[tuple[float, float]]:
    """Per band (RADIO_ADD_OFFSET, QUANTIFICATION_VALUE): TOA = (DN + offset) / quantification."""
    return [(product.offsets.get(b, 0.0), product.quantification) for b in bands]


def read_toa(
    reader: BandReader,
    product: L1CProduct,
    bands: Sequence[str],
    window: Window | None = None,
    out_shape: tuple[int, int] | None = None,
    resampling: str = "average",
    step: int = 1,
) -> np.ndarray:
    """TOA reflectance (float32, NaN for no data): (DN + RADIO_ADD_OFFSET) / QUANTIFICATION_VALUE.

    ``step``: every step-th row and column of the window only (a decimated view read at full resolution).
    """
    return reader.read(bands, window, out_shape, resampling, step=step, scaling=toa_scaling(product, bands))

