"""A smoothed AOT map from dark dense vegetation, as sen2cor makes one, instead of one AOT per scene (pure).

Haze is not uniform over a 110 km tile. Once the scene retrieval (``dark_vegetation.estimate_aot_ddv``)
has found dark dense vegetation, chosen the aerosol model and checked that the dark pixels agree,
the same per-pixel AOTs are gathered into cells of ``CELL_M`` metres: a cell with at least
``MIN_CELL_PIXELS`` agreeing dark pixels gets their median. The cell values are then smoothed by
normalised convolution (a Gaussian of ``SMOOTH_CELLS`` cells over the cells that have a value,
divided by the same Gaussian over their weights), so cells without dark vegetation take their
neighbours' AOT, and cells far from any take the scene AOT. A cell's own value is capped by its
darkest pixels (their surface may not turn negative), as the scene value is by the scene's. The map is defined at cell centres and read bilinearly between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eotwin.atmocorr import dark_object, dark_vegetation
from eotwin.atmocorr.lut import SixSLut
from eotwin.atmocorr.retrieval import AotRetrieval

CELL_M = 3000.0  # map cell size in metres
MIN_CELL_PIXELS = 10  # agreeing dark pixels a cell needs to hold its own AOT
SMOOTH_CELLS = 1.0  # Gaussian sigma of the smoothing, in cells
MIN_CELLS_WITH_DDV = 4  # below this the map says nothing the scene value does not: no map
CHUNK_PIXELS = 250_000  # overview pixels classified at a time (bounded memory on a full tile)


@dataclass(frozen=True)
class AotMap:
    """AOT at 550 nm at cell centres: ``values[i, j]`` at ``(x0 + j * step, y0 - i * step)`` in the product CRS."""

    x0: float
    y0: float
    step: float
    values: np.ndarray  # (ny, nx) float64
    own_cells: int  # cells holding their own dark pixels' median (the rest are filled)
    scene_aot: float

    def summary(self) -> dict[str, float | int]:
        return {"aot_map_cells": int(self.values.size), "aot_map_cells_with_ddv": self.own_cells,
                "aot_map_min": round(float(self.values.min()), 4), "aot_map_max": round(float(self.values.max()), 4)}


def _gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with zero padding (the caller normalises by the blurred weights)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    # zero padding by the radius, then a "valid" convolution: the shape stays whatever the kernel's length
    blur = lambda r: np.convolve(np.pad(r, radius), kernel, mode="valid")  # noqa: E731
    return np.apply_along_axis(blur, 1, np.apply_along_axis(blur, 0, values))


def smooth_cells(medians: np.ndarray, scene_aot: float, cap: float, sigma: float = SMOOTH_CELLS) -> np.ndarray:
    """Cells with a value (finite) spread into their neighbours; cells far from any take ``scene_aot``."""
    have = np.isfinite(medians)
    weight = _gaussian_smooth(have.astype(np.float64), sigma)
    spread = _gaussian_smooth(np.where(have, medians, 0.0), sigma)
    # a cell's own Gaussian weight is 1: below 0.1 of it the neighbours are too far to speak for the cell
    trust = np.clip(weight / 0.1, 0.0, 1.0)
    filled = np.where(weight > 1e-9, spread / np.maximum(weight, 1e-9), scene_aot)
    return np.minimum(trust * filled + (1.0 - trust) * scene_aot, cap)


def cell_medians(aot: np.ndarray, cell_px: int, min_pixels: int = MIN_CELL_PIXELS) -> np.ndarray:
    """Median of the finite values of ``aot`` (h, w) in cells of ``cell_px`` pixels; NaN with too few."""
    h, w = aot.shape
    ny, nx = -(-h // cell_px), -(-w // cell_px)
    out = np.full((ny, nx), np.nan)
    for i in range(ny):
        for j in range(nx):
            cell = aot[i * cell_px:(i + 1) * cell_px, j * cell_px:(j + 1) * cell_px]
            finite = cell[np.isfinite(cell)]
            if finite.size >= min_pixels:
                out[i, j] = float(np.median(finite))
    return out


def ddv_aot_map(
    overview: np.ndarray,
    bands: tuple[str, ...] | list[str],
    lut: SixSLut,
    retrieval: AotRetrieval,
    *,
    pixel_size: float,
    origin: tuple[float, float],
    sensor: str,
    sza: float,
    vza: float,
    raa: float,
    wv: float,
    o3: float,
    cell_m: float = CELL_M,
) -> AotMap | None:
    """The AOT map of a scene whose DDV retrieval succeeded, from its decimated view ``overview`` (bands, h, w).

    ``pixel_size`` is the overview's pixel in metres and ``origin`` its upper-left corner (x, y).
    None when the retrieval fell back to its default or too few cells hold dark vegetation.
    """
    if retrieval.fallback or retrieval.swir_range is None:
        return None
    names = dark_vegetation.ddv_input_bands(bands)
    _, h, w = overview.shape
    flat = overview.reshape(overview.shape[0], -1)[[list(bands).index(b) for b in names]]
    geometry = dict(sza=sza, vza=vza, raa=raa, wv=wv, o3=o3)
    low, high = retrieval.swir_range
    aot = np.full(h * w, np.nan)
    not_cloud = np.zeros(h * w, dtype=bool)
    # in chunks of pixels: a full tile's overview holds millions, and the AOT search holds candidates x pixels
    for start in range(0, h * w, CHUNK_PIXELS):
        part = flat[:, start:start + CHUNK_PIXELS].astype(np.float64)
        index = np.flatnonzero(np.isfinite(part).all(axis=0))
        rc, ndvi, cloud, water, shadow = dark_vegetation.aerosol_free_classes(part[:, index], names, lut, sensor=sensor,
                                                                        **geometry)
        not_cloud[start + index[~cloud]] = True
        dark = ~(cloud | water | shadow) & (rc["B12"] >= low) & (rc["B12"] <= high) & (ndvi > dark_vegetation.DDV_MIN_NDVI)
        for sub in np.array_split(index[dark], max(1, int(dark.sum()) // dark_vegetation.DDV_MAX_SAMPLE + 1)):
            if sub.size == 0:
                continue
            red, blue = dark_vegetation.ddv_pixel_aots(part[[0, 1, 3]][:, sub], lut, sensor=sensor,
                                                 aerosol=retrieval.aerosol, **geometry)
            agree = np.abs(red - blue) <= dark_vegetation.DDV_PIXEL_AGREEMENT
            aot[start + sub[agree]] = 0.5 * (red[agree] + blue[agree])
    cell_px = max(1, round(cell_m / pixel_size))
    medians = cell_medians(aot.reshape(h, w), cell_px)
    own = int(np.isfinite(medians).sum())
    if own < MIN_CELLS_WITH_DDV:
        return None
    # each cell's own darkest pixels bound its AOT (the scene's bound is set by its clearest part)
    visible = flat[:2].reshape(2, h, w)
    clear = not_cloud.reshape(h, w)
    for i, j in zip(*np.nonzero(np.isfinite(medians)), strict=True):
        rows, cols = slice(i * cell_px, (i + 1) * cell_px), slice(j * cell_px, (j + 1) * cell_px)
        pixels = visible[:, rows, cols][:, clear[rows, cols]].astype(np.float64)
        dark_toa = dark_object.percentile_toa(pixels, dark_object.DOS_PERCENTILE)
        if np.isfinite(dark_toa).all():
            cap = dark_object.dark_object_aot(dark_toa, ("B02", "B04"), lut, dark_vegetation.DDV_CAP_SURFACE, sensor=sensor,
                                             aerosol=retrieval.aerosol, **geometry)
            medians[i, j] = min(medians[i, j], cap)
    values = smooth_cells(medians, retrieval.aot, float(lut.axes["aot"][-1]))
    step = cell_px * pixel_size
    return AotMap(origin[0] + step / 2, origin[1] - step / 2, step, values, own, retrieval.aot)
