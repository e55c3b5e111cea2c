"""Block readers for the point-cloud inputs: DEM, colour image and mask, all read onto one output grid.

Each source is opened once and then asked for windows of the *processing grid* (the overlap of the
inputs, on the chosen output grid). A source already on that grid is read directly; otherwise GDAL
warps only the requested window (``WarpedVRT``): bilinear for the DEM, nearest for colours and
classes so that colours stay exact image values.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window as RioWindow

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, Window
from eotwin.io.raster import grid_of, open_raster, read_errors_named
from eotwin.pointcloud.colour import Stretch, fixed_stretch, percentile_stretch
from eotwin.sentinel2.radiometry import dn_to_reflectance

# Sentinel-2 SCL classes that carry no honest ground colour: no data, saturated/defective, cloud
# shadow, cloud medium/high probability, thin cirrus.
DEFAULT_EXCLUDED_SCL = (0, 1, 3, 8, 9, 10)


def _same_grid(a: Grid, b: Grid, tol: float = 1e-6) -> tuple[int, int] | None:
    """If ``b`` is ``a`` shifted by whole pixels (same CRS and resolution), the (row, col) offset of b in a."""
    if a.crs != b.crs or not (a.is_rectilinear and b.is_rectilinear):
        return None
    ta, tb = a.transform, b.transform
    if abs(ta.a - tb.a) > tol * abs(ta.a) or abs(ta.e - tb.e) > tol * abs(ta.e):
        return None
    col = (tb.c - ta.c) / ta.a
    row = (tb.f - ta.f) / ta.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return (round(row), round(col))


def resampling_scale(source: Grid, target: Grid) -> tuple[float, float]:
    """Destination pixels per source pixel along x and y near the target's centre, capped at 1 (upsampling)."""
    from pyproj import Transformer

    to_source = Transformer.from_crs(target.crs, source.crs, always_xy=True)
    cx, cy = target.transform @ (target.width / 2, target.height / 2)
    (x0, x1, x2), (y0, y1, y2) = to_source.transform([cx, cx + target.res[0], cx], [cy, cy, cy + target.res[1]])
    sx = float(np.hypot(x1 - x0, y1 - y0) / source.res[0])  # source pixels per target pixel along x
    sy = float(np.hypot(x2 - x0, y2 - y0) / source.res[1])
    return (min(1.0, 1.0 / sx) if sx > 0 else 1.0, min(1.0, 1.0 / sy) if sy > 0 else 1.0)


@dataclass
class _GridReader:
    """Reads bands of one dataset onto windows of a target grid, directly or through a warped VRT."""

    dataset: rasterio.io.DatasetReader
    target: Grid
    resampling: Resampling
    nodata: float | None = None
    _offset: tuple[int, int] | None = field(init=False, default=None)
    _vrt: WarpedVRT | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._offset = _same_grid(grid_of(self.dataset), self.target)
        if self._offset is None:
            extras = {}
            if self.resampling != Resampling.nearest:
                # GDAL estimates the resampling ratio per processing chunk, so a kernel can widen or not depending on
                # the window asked for: fix it once for the whole grid to make every window give the same values
                xscale, yscale = resampling_scale(grid_of(self.dataset), self.target)
                extras = {"XSCALE": xscale, "YSCALE": yscale}
            self._vrt = WarpedVRT(
                self.dataset,
                crs=rasterio.crs.CRS.from_wkt(self.target.crs.to_wkt()),
                transform=self.target.transform,
                width=self.target.width,
                height=self.target.height,
                resampling=self.resampling,
                src_nodata=self.nodata,
                nodata=self.nodata,
                # GDAL approximates the pixel transform to 0.125 px by default: a few metres on a 30 m DEM,
                # i.e. decimetres of height on slopes. 0.01 px keeps that below the LAS 1 cm scale.
                tolerance=0.01,
                **extras,
            )

    @property
    def warped(self) -> bool:
        return self._vrt is not None

    def _value_masks(self, indexes: Sequence[int]) -> bool:
        """Whether validity follows from the values alone (nodata value or all valid), sparing GDAL a second pass.

        ``read_masks`` on a warped VRT warps everything again, and on a file re-reads it: computing the
        mask from a known nodata value halves the cost of a block.
        """
        flags = [self.dataset.mask_flag_enums[i - 1] for i in indexes]
        simple = all(set(f) <= {MaskFlags.nodata, MaskFlags.all_valid} for f in flags)
        if self._vrt is not None:
            return simple and self.nodata is not None  # outside the source the VRT writes nodata
        return simple

    def _mask_from_values(self, data: np.ndarray) -> np.ndarray:
        if self.nodata is None:
            return np.ones(data.shape[1:], dtype=bool)
        bad = np.isnan(data) if np.isnan(self.nodata) else data == np.asarray(self.nodata).astype(data.dtype)
        return ~np.any(bad, axis=0) if data.shape[0] > 1 else ~bad[0]

    def values_carry_validity(self, indexes: Sequence[int]) -> bool:
        """True when nodata values alone mark invalid pixels and every read stays inside the source (warped)."""
        return self._vrt is not None and self._value_masks(list(indexes))

    def read_values(self, indexes: Sequence[int], window: Window) -> np.ndarray:
        rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
        with read_errors_named(self.dataset.name):
            return self._vrt.read(list(indexes), window=rio_window)

    def read(self, indexes: Sequence[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Values (bands, h, w) and validity (h, w): inside the source and not nodata in any band."""
        with read_errors_named(self.dataset.name):
            return self._read(list(indexes), window)

    def _read(self, indexes: list[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
        by_value = self._value_masks(indexes)
        if self._vrt is not None:
            rio_window = RioWindow(window.col_off, window.row_off, window.width, window.height)
            data = self._vrt.read(indexes, window=rio_window)
            if by_value:
                return data, self._mask_from_values(data)
            masks = self._vrt.read_masks(indexes, window=rio_window)
            return data, np.all(masks > 0, axis=0)
        row0, col0 = self._offset
        rio_window = RioWindow(window.col_off + col0, window.row_off + row0, window.width, window.height)
        inside = (rio_window.col_off >= 0 and rio_window.row_off >= 0
                  and rio_window.col_off + window.width <= self.dataset.width
                  and rio_window.row_off + window.height <= self.dataset.height)
        if inside:
            data = self.dataset.read(indexes, window=rio_window)
            if by_value:
                return data, self._mask_from_values(data)
            masks = self.dataset.read_masks(indexes, window=rio_window)
        else:
            data = self.dataset.read(indexes, window=rio_window, boundless=True, fill_value=self.nodata or 0)
            masks = self.dataset.read_masks(indexes, window=rio_window, boundless=True)
        return data, np.all(masks > 0, axis=0)

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()


class DemSource:
    """Heights in metres on the processing grid (bilinear), NaN outside the DEM or at its nodata."""

    def __init__(self, path: str, stack: contextlib.ExitStack) -> None:
        self.path = path
        self.dataset = stack.enter_context(open_raster(path))
        self.grid = grid_of(self.dataset)
        self.nodata = self.dataset.nodata
        self._reader: _GridReader | None = None

    def attach(self, target: Grid) -> None:
        self._reader = _GridReader(self.dataset, target, Resampling.bilinear, self.nodata)

    @property
    def warped(self) -> bool:
        return bool(self._reader and self._reader.warped)

    def read(self, window: Window) -> np.ndarray:
        nan_nodata = self.nodata is not None and np.isnan(self.nodata)
        if nan_nodata and self._reader.values_carry_validity([1]):
            # NaN already marks every invalid cell (outside the source too): no mask pass needed
            data = self._reader.read_values([1], window)
            return data[0].astype(np.float32, copy=False)
        data, valid = self._reader.read([1], window)
        z = data[0].astype(np.float32, copy=False)
        return np.where(valid, z, np.float32(np.nan))

    def close(self) -> None:
        if self._reader:
            self._reader.close()


@dataclass(frozen=True)
class Radiometry:
    """How the image's digital numbers become colour: 8-bit as is, or reflectance = DN x scale + offset."""

    kind: str  # "uint8" or "reflectance"
    scale: float = 1.0
    offset: float = 0.0
    source: str = ""  # where scale/offset came from, recorded in the output metadata


def _radiometry(dataset, band_index: int, scale: float | None, offset: float | None) -> Radiometry:
    dtype = dataset.dtypes[band_index - 1]
    if dtype == "uint8" and scale is None and offset is None:
        return Radiometry("uint8", source="8-bit true colour taken as is")
    if scale is not None or offset is not None:
        default_scale = 1e-4 if np.dtype(dtype).kind in "ui" else 1.0
        return Radiometry("reflectance", scale if scale is not None else default_scale, offset or 0.0, "command-line options")
    ds_scale, ds_offset = dataset.scales[band_index - 1], dataset.offsets[band_index - 1]
    if (ds_scale, ds_offset) != (1.0, 0.0):
        return Radiometry("reflectance", ds_scale, ds_offset, "raster scale/offset metadata")
    tags = dataset.tags()
    for key in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET"):
        if key in tags:
            quant = float(tags.get("BOA_QUANTIFICATION_VALUE", tags.get("QUANTIFICATION_VALUE", 10000)))
            return Radiometry("reflectance", 1.0 / quant, float(tags[key]) / quant, f"{key} tag")
    if np.dtype(dtype).kind in "ui":
        return Radiometry("reflectance", 1e-4, 0.0, "Sentinel-2 quantification 10000 (no offset metadata found)")
    return Radiometry("reflectance", 1.0, 0.0, "float reflectance")


_RGB_NAMES = (("B04", "B4", "RED"), ("B03", "B3", "GREEN"), ("B02", "B2", "BLUE"))


def _rgb_band_indexes(dataset) -> list[int]:
    """Red, green, blue band numbers of a multi-band image: by description, by colour interpretation, or 1-2-3."""
    descriptions = [(d or "").strip().upper() for d in dataset.descriptions]
    found = []
    for names in _RGB_NAMES:
        idx = next((i + 1 for i, d in enumerate(descriptions) if d in names), None)
        found.append(idx)
    if all(found):
        return found
    interp = [ci.name for ci in dataset.colorinterp]
    if all(name in interp for name in ("red", "green", "blue")):
        return [interp.index(n) + 1 for n in ("red", "green", "blue")]
    if dataset.count >= 3:
        return [1, 2, 3]
    raise EotwinError(f"{dataset.name}: needs 3 colour bands (or pass --image three times: red, green, blue), found {dataset.count}")


class ImageSource:
    """8-bit RGB on the processing grid (nearest), from one RGB/multiband raster or three single-band rasters."""

    def __init__(self, paths: Sequence[str], stack: contextlib.ExitStack, *, scale: float | None = None,
                 offset: float | None = None) -> None:
        if len(paths) not in (1, 3):
            raise EotwinError(f"--image takes one RGB/multi-band raster or three single-band rasters (R, G, B), got {len(paths)}")
        self.paths = list(paths)
        self.datasets = [stack.enter_context(open_raster(p)) for p in paths]
        if len(paths) == 1:
            self.bands = [(0, i) for i in _rgb_band_indexes(self.datasets[0])]
        else:
            self.bands = [(k, 1) for k in range(3)]
            first = grid_of(self.datasets[0])
            for path, ds in zip(paths[1:], self.datasets[1:], strict=True):
                if _same_grid(first, grid_of(ds)) != (0, 0) or (ds.width, ds.height) != (first.width, first.height):
                    raise EotwinError(f"{path}: the three colour rasters must share one grid")
        ds0, band0 = self.datasets[self.bands[0][0]], self.bands[0][1]
        self.grid = grid_of(ds0)
        self.radiometry = _radiometry(ds0, band0, scale, offset)
        self.stretch: Stretch | None = None
        self._readers: list[_GridReader] = []

    def attach(self, target: Grid, stretch: str = "fixed", low: float = 0.0, high: float = 0.3) -> None:
        self._readers = [_GridReader(ds, target, Resampling.nearest, ds.nodata) for ds in self.datasets]
        if self.radiometry.kind == "uint8":
            self.stretch = None
        elif stretch == "percentile":
            self.stretch = self._percentile_stretch(target)
        else:
            self.stretch = fixed_stretch(low, high)

    @property
    def warped(self) -> bool:
        return any(r.warped for r in self._readers)

    def _read_raw(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        if len(self.datasets) == 1:
            data, valid = self._readers[0].read([b for _, b in self.bands], window)
            return data, valid
        parts, valids = [], []
        for k, band in self.bands:
            data, valid = self._readers[k].read([band], window)
            parts.append(data[0])
            valids.append(valid)
        return np.stack(parts), np.logical_and.reduce(valids)

    def _to_reflectance(self, data: np.ndarray) -> np.ndarray:
        r = self.radiometry
        return dn_to_reflectance(data, r.scale, r.offset)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(3, h, w) uint8 colours and (h, w) validity."""
        data, valid = self._read_raw(window)
        if self.radiometry.kind == "uint8":
            return np.ascontiguousarray(data, dtype=np.uint8), valid
        refl = self._to_reflectance(data)
        valid &= np.all(np.isfinite(refl), axis=0)
        return self.stretch.apply(refl), valid

    def _percentile_stretch(self, target: Grid, max_side: int = 1024) -> Stretch:
        """Percentiles (2-98 %) per band over a decimated read of the processing grid: deterministic."""
        step = max(1, math.ceil(max(target.height, target.width) / max_side))
        rows = range(0, target.height, step)
        samples, valids = [], []
        for row in rows:
            data, valid = self._read_raw(Window(row, 0, 1, target.width))
            samples.append(self._to_reflectance(data)[:, 0, ::step])
            valids.append(valid[0, ::step])
        sample = np.stack(samples, axis=1)
        valid = np.stack(valids) & np.all(np.isfinite(sample), axis=0)
        return percentile_stretch(sample, valid)

    def close(self) -> None:
        for reader in self._readers:
            reader.close()


class MaskSource:
    """A class raster (for example Sentinel-2 SCL) read nearest; pixels of excluded classes make no point."""

    def __init__(self, path: str, stack: contextlib.ExitStack, excluded: Sequence[int] = DEFAULT_EXCLUDED_SCL) -> None:
        self.path = path
        self.dataset = stack.enter_context(open_raster(path))
        self.grid = grid_of(self.dataset)
        self.excluded = np.asarray(sorted(set(excluded)), dtype=np.int64)
        self._reader: _GridReader | None = None

    def attach(self, target: Grid) -> None:
        self._reader = _GridReader(self.dataset, target, Resampling.nearest, self.dataset.nodata)

    def read(self, window: Window) -> np.ndarray:
        data, valid = self._reader.read([1], window)
        return valid & ~np.isin(data[0], self.excluded)

    def close(self) -> None:
        if self._reader:
            self._reader.close()
