"""Sentinel-2 metadata: MTD_MSIL1C / MTD_MSIL2A / MTD_TL parsing and the angle grids they carry.

- ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` give the quantification value and the radiometric offset of
  each band (``RADIO_ADD_OFFSET`` / ``BOA_ADD_OFFSET``, -1000 from processing baseline 04.00, absent
  before), the spacecraft and the band files;
- ``GRANULE/*/MTD_TL.xml`` gives the tile's CRS and the sun and viewing angle grids (5000 m, 23 x 23
  nodes, viewing angles per band and detector), merged here into one grid per band and interpolated
  per pixel by :class:`AngleGrid`.

The XML comes from untrusted products: it is parsed by defusedxml with DTDs refused.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, Window
from eotwin.sentinel2.bands import NATIVE_RESOLUTION, S2_BANDS, normalise_band, normalise_sensor


# ----------------------------------------------------------------------------- XML helpers
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(data: bytes, name: str) -> ElementTree.Element:
    """Parse untrusted product XML: no DTD, no entities (billion laughs, external files) are ever expanded."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        return fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise EotwinError(f"{name}: refused, the XML declares a DTD or entities ({type(exc).__name__})") from None
    except (ElementTree.ParseError, LookupError, ValueError) as exc:  # LookupError: an unknown declared encoding
        raise EotwinError(f"{name}: not valid XML ({str(exc)[:200]})") from None


def _find_all(root: ElementTree.Element, local_name: str) -> list[ElementTree.Element]:
    return [el for el in root.iter() if _local(el.tag) == local_name]


def _find_text(root: ElementTree.Element, local_name: str) -> str | None:
    for el in root.iter():
        if _local(el.tag) == local_name and el.text is not None:
            return el.text.strip()
    return None


def _child(el: ElementTree.Element, local_name: str) -> ElementTree.Element | None:
    return next((c for c in el if _local(c.tag) == local_name), None)


def _band_from_id(value: str | None, name: str) -> str:
    try:
        return S2_BANDS[int(str(value))]
    except (TypeError, ValueError, IndexError):
        raise EotwinError(f"{name}: bad band id {value!r}") from None


# ----------------------------------------------------------------------------- product metadata
@dataclass(frozen=True)
class ProductMetadata:
    """What ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` says about radiometry, spacecraft and band files."""

    level: str  # "L1C" or "L2A"
    product_uri: str
    spacecraft: str  # "S2A", "S2B" or "S2C"
    processing_baseline: str | None
    start_time: str | None
    quantification: float
    offsets: dict[str, float]  # per band: reflectance = (DN + offset) / quantification
    image_files: dict[
        tuple[str, int], str
    ]  # (band or "SCL"/"AOT"/..., resolution m) -> path in the SAFE, no suffix


def parse_product_metadata(data: bytes, name: str = "MTD_MSIL1C.xml") -> ProductMetadata:
    """Parse a Level-1C or Level-2A user-product metadata file (any processing baseline)."""
    root = _parse_xml(data, name)
    root_name = _local(root.tag)
    level = "L2A" if "2A" in root_name else "L1C" if "1C" in root_name else ""
    if not level:
        raise EotwinError(f"{name}: not a Sentinel-2 L1C or L2A product metadata file (root {root_name})")
    spacecraft_text = _find_text(root, "SPACECRAFT_NAME")
    if not spacecraft_text:
        raise EotwinError(f"{name}: no SPACECRAFT_NAME")
    if level == "L1C":
        quant_text = _find_text(root, "QUANTIFICATION_VALUE")
        offset_tag = "RADIO_ADD_OFFSET"
    else:
        quant_text = _find_text(root, "BOA_QUANTIFICATION_VALUE") or _find_text(root, "QUANTIFICATION_VALUE")
        offset_tag = "BOA_ADD_OFFSET"
    if quant_text is None:
        raise EotwinError(f"{name}: no quantification value")
    try:
        quantification = float(quant_text)
    except ValueError:
        raise EotwinError(f"{name}: bad quantification value {quant_text!r}") from None
    offsets = dict.fromkeys(S2_BANDS, 0.0)  # no offsets before processing baseline 04.00
    for el in _find_all(root, offset_tag):
        text = (el.text or "0").strip()
        try:
            value = float(text)
        except ValueError:
            raise EotwinError(f"{name}: {offset_tag} {text[:40]!r} is not a number") from None
        if not math.isfinite(value):
            raise EotwinError(f"{name}: {offset_tag} {text[:40]!r} is not finite")
        offsets[_band_from_id(el.get("band_id"), name)] = value
    image_files: dict[tuple[str, int], str] = {}
    for el in _find_all(root, "IMAGE_FILE"):
        rel = (el.text or "").strip()
        match = re.search(r"_(B\d[\dA]|TCI|SCL|AOT|WVP)(?:_(\d+)m)?$", rel)
        if not match:
            continue
        kind = match.group(1)
        band = normalise_band(kind) if kind.startswith("B") else kind
        res = int(match.group(2)) if match.group(2) else NATIVE_RESOLUTION.get(band, 10)
        image_files[(band, res)] = rel
    return ProductMetadata(
        level=level,
        product_uri=_find_text(root, "PRODUCT_URI") or Path(name).parent.name,
        spacecraft=normalise_sensor(spacecraft_text),
        processing_baseline=_find_text(root, "PROCESSING_BASELINE"),
        start_time=_find_text(root, "PRODUCT_START_TIME"),
        quantification=quantification,
        offsets=offsets,
        image_files=image_files,
    )


# ----------------------------------------------------------------------------- angles
@dataclass(frozen=True)
class AngleGrid:
    """Sun and per-band viewing angles (degrees) on a regular node grid of the product's CRS.

    Node (0, 0) lies at (``x0``, ``y0``); columns go east and rows go south every ``step`` metres.
    Values between nodes are bilinear (azimuths through their sine and cosine, so 359 and 1 average
    to 0). A product with mean angles only gets a constant 2 x 2 grid.
    """

    x0: float
    y0: float
    step: float
    sun_zenith: np.ndarray
    sun_azimuth: np.ndarray
    view_zenith: dict[str, np.ndarray]
    view_azimuth: dict[str, np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        return self.sun_zenith.shape

    @classmethod
    def constant(
        cls, grid: Grid, sza: float, saa: float, vza: float, vaa: float, bands: Sequence[str] = S2_BANDS
    ) -> AngleGrid:
        """The same angles everywhere (an L1C stack with mean angles in its tags)."""
        left, bottom, right, top = grid.bounds
        step = max(right - left, top - bottom, 1.0)
        full = lambda v: np.full((2, 2), float(v))  # noqa: E731
        return cls(
            left,
            top,
            step,
            full(sza),
            full(saa),
            {b: full(vza) for b in bands},
            {b: full(vaa) for b in bands},
        )

    def weights(self, grid: Grid, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear weights (rows x ny, cols x nx) so that ``values_at = Wr @ node_values @ Wc.T``."""
        if not grid.is_rectilinear:
            raise EotwinError("angle interpolation needs a north-up grid")
        window = window or Window(0, 0, grid.height, grid.width)
        res_x, res_y = grid.transform.a, grid.transform.e
        cols = grid.transform.c + (window.col_off + np.arange(window.width) + 0.5) * res_x
        rows = grid.transform.f + (window.row_off + np.arange(window.height) + 0.5) * res_y
        ny, nx = self.shape
        return _hat_weights((self.y0 - rows) / self.step, ny), _hat_weights((cols - self.x0) / self.step, nx)

    def resampled(self, x0: float, y0: float, step: float, shape: tuple[int, int]) -> AngleGrid:
        """The same angles on another node grid (bilinear, azimuths through sine and cosine)."""
        ny, nx = shape
        xs, ys = x0 + step * np.arange(nx), y0 - step * np.arange(ny)
        wr = _hat_weights((self.y0 - ys) / self.step, self.shape[0])
        wc = _hat_weights((xs - self.x0) / self.step, self.shape[1])
        at = lambda v: (wr @ np.asarray(v, dtype=np.float64)) @ wc.T  # noqa: E731
        return AngleGrid(
            x0, y0, step, at(self.sun_zenith), interpolate_azimuth(self.sun_azimuth, wr, wc).astype(np.float64),
            {b: at(v) for b, v in self.view_zenith.items()},
            {b: interpolate_azimuth(v, wr, wc).astype(np.float64) for b, v in self.view_azimuth.items()},
        )

    def crop(self, grid: Grid) -> AngleGrid:
        """Only the nodes around ``grid`` (so a small image does not carry the whole tile's grid)."""
        left, bottom, right, top = grid.bounds
        ny, nx = self.shape
        c0 = int(np.clip(math.floor((left - self.x0) / self.step), 0, nx - 2))
        c1 = int(np.clip(math.ceil((right - self.x0) / self.step), c0 + 1, nx - 1))
        r0 = int(np.clip(math.floor((self.y0 - top) / self.step), 0, ny - 2))
        r1 = int(np.clip(math.ceil((self.y0 - bottom) / self.step), r0 + 1, ny - 1))
        sl = (slice(r0, r1 + 1), slice(c0, c1 + 1))
        return AngleGrid(
            self.x0 + c0 * self.step,
            self.y0 - r0 * self.step,
            self.step,
            self.sun_zenith[sl],
            self.sun_azimuth[sl],
            {b: v[sl] for b, v in self.view_zenith.items()},
            {b: v[sl] for b, v in self.view_azimuth.items()},
        )

    def means(self) -> dict[str, float]:
        """Scene-mean angles (azimuths as circular means, view angles averaged over bands)."""
        vz = np.stack(list(self.view_zenith.values()))
        va = np.stack(list(self.view_azimuth.values()))
        return {
            "sun_zenith": float(np.mean(self.sun_zenith)),
            "sun_azimuth": _circular_mean(self.sun_azimuth),
            "view_zenith": float(np.mean(vz)),
            "view_azimuth": _circular_mean(va),
        }


def _hat_weights(u: np.ndarray, n: int) -> np.ndarray:
    """Linear-interpolation weights of positions ``u`` (in node units) over ``n`` nodes, clamped at the ends."""
    i0 = np.clip(np.floor(u).astype(np.int64), 0, n - 2)
    t = np.clip(u - i0, 0.0, 1.0)
    w = np.zeros((u.size, n), dtype=np.float64)
    w[np.arange(u.size), i0] = 1.0 - t
    w[np.arange(u.size), i0 + 1] += t
    return w


def interpolate_nodes(values: np.ndarray, wr: np.ndarray, wc: np.ndarray) -> np.ndarray:
    """Separable bilinear interpolation of a node grid: two small matrix products (float32 result).

    A constant grid (a stack's mean angles) gives a 1 x 1 array that broadcasts, at no cost per pixel.
    """
    values = np.asarray(values, dtype=np.float64)
    if np.all(values == values.flat[0]):
        return np.full((1, 1), values.flat[0], dtype=np.float32)
    return (wr @ values).astype(np.float32) @ wc.T.astype(np.float32)


def interpolate_azimuth(values: np.ndarray, wr: np.ndarray, wc: np.ndarray) -> np.ndarray:
    rad = np.radians(values)
    s = interpolate_nodes(np.sin(rad), wr, wc)
    c = interpolate_nodes(np.cos(rad), wr, wc)
    return np.mod(np.degrees(np.arctan2(s, c)), 360.0)


def _circular_mean(values: np.ndarray) -> float:
    rad = np.radians(np.asarray(values, dtype=np.float64))
    return float(np.mod(np.degrees(np.arctan2(np.nanmean(np.sin(rad)), np.nanmean(np.cos(rad)))), 360.0))


def _values_grid(el: ElementTree.Element, name: str) -> np.ndarray:
    values_list = _child(el, "Values_List")
    if values_list is None:
        raise EotwinError(f"{name}: angle grid without Values_List")
    try:
        rows = [[float(v) for v in (row.text or "").split()] for row in values_list]
        arr = np.array(rows, dtype=np.float64)
    except ValueError:
        raise EotwinError(f"{name}: unreadable angle values") from None
    if arr.ndim != 2 or arr.size == 0:
        raise EotwinError(f"{name}: angle grid rows have different lengths")
    return arr


def _grid_step(el: ElementTree.Element, name: str) -> float:
    steps = {
        _local(c.tag): float((c.text or "nan").strip())
        for c in el
        if _local(c.tag) in ("COL_STEP", "ROW_STEP")
    }
    if steps.get("COL_STEP") != steps.get("ROW_STEP") or not steps:
        raise EotwinError(f"{name}: angle grids with different or missing row/column steps are not supported")
    return steps["COL_STEP"]


def _fill_nearest(arr: np.ndarray) -> np.ndarray:
    """Nodes outside the swath (NaN) take the value of the nearest valid node."""
    bad = ~np.isfinite(arr)
    if not bad.any():
        return arr
    from scipy import ndimage

    _, (ri, ci) = ndimage.distance_transform_edt(bad, return_distances=True, return_indices=True)
    return arr[ri, ci]


@dataclass(frozen=True)
class TileMetadata:
    """What ``MTD_TL.xml`` says: tile CRS, sizes and origins per resolution, and the angle grids."""

    crs_code: str
    sizes: dict[int, tuple[int, int]]  # resolution -> (rows, cols)
    origins: dict[int, tuple[float, float]]  # resolution -> (ulx, uly)
    angles: AngleGrid
    mean_sun: tuple[float, float]  # zenith, azimuth
    mean_view: dict[str, tuple[float, float]]
    detectors: dict[str, int]  # band -> number of detector grids merged


def parse_tile_metadata(data: bytes, name: str = "MTD_TL.xml") -> TileMetadata:
    """Parse the tile metadata: merge the per-detector viewing grids of each band into one grid per band.

    Detector grids overlap at their borders (averaged there; azimuths circularly); nodes no detector
    sees (outside the swath) take the nearest seen node's value.
    """
    root = _parse_xml(data, name)
    crs_code = _find_text(root, "HORIZONTAL_CS_CODE")
    if not crs_code:
        raise EotwinError(f"{name}: no HORIZONTAL_CS_CODE (not a Sentinel-2 tile metadata file?)")
    sizes: dict[int, tuple[int, int]] = {}
    for el in _find_all(root, "Size"):
        sizes[int(el.get("resolution", "0"))] = (
            int(_find_text(el, "NROWS") or 0),
            int(_find_text(el, "NCOLS") or 0),
        )
    origins: dict[int, tuple[float, float]] = {}
    for el in _find_all(root, "Geoposition"):
        origins[int(el.get("resolution", "0"))] = (
            float(_find_text(el, "ULX") or "nan"),
            float(_find_text(el, "ULY") or "nan"),
        )
    if 10 not in origins:
        raise EotwinError(f"{name}: no 10 m Geoposition (ULX/ULY)")
    sun = _find_all(root, "Sun_Angles_Grid")
    view = _find_all(root, "Viewing_Incidence_Angles_Grids")
    if not sun or not view:
        raise EotwinError(
            f"{name}: no sun or viewing angle grids (Sun_Angles_Grid, Viewing_Incidence_Angles_Grids)"
        )
    zen_el, az_el = _child(sun[0], "Zenith"), _child(sun[0], "Azimuth")
    if zen_el is None or az_el is None:
        raise EotwinError(f"{name}: Sun_Angles_Grid lacks Zenith or Azimuth")
    step = _grid_step(zen_el, name)
    sun_zenith, sun_azimuth = _values_grid(zen_el, name), _values_grid(az_el, name)
    if sun_zenith.shape != sun_azimuth.shape or not np.isfinite(sun_zenith).all():
        raise EotwinError(f"{name}: incomplete sun angle grid")
    per_band: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for el in view:
        band = _band_from_id(el.get("bandId"), name)
        z, a = _child(el, "Zenith"), _child(el, "Azimuth")
        if z is None or a is None:
            continue
        zg, ag = _values_grid(z, name), _values_grid(a, name)
        if zg.shape != sun_zenith.shape or ag.shape != sun_zenith.shape:
            raise EotwinError(
                f"{name}: viewing grid of {band} has shape {zg.shape}, sun grid {sun_zenith.shape}"
            )
        per_band.setdefault(band, []).append((zg, ag))
    view_zenith: dict[str, np.ndarray] = {}
    view_azimuth: dict[str, np.ndarray] = {}
    for band, grids in per_band.items():
        zs = np.stack([g[0] for g in grids])
        az = np.radians(np.stack([g[1] for g in grids]))
        with np.errstate(invalid="ignore"), _quiet_nanmean():
            zen = np.nanmean(zs, axis=0)
            azi = np.degrees(np.arctan2(np.nanmean(np.sin(az), axis=0), np.nanmean(np.cos(az), axis=0)))
        if not np.isfinite(zen).any():
            continue
        view_zenith[band] = _fill_nearest(zen)
        view_azimuth[band] = np.mod(_fill_nearest(azi), 360.0)
    if not view_zenith:
        raise EotwinError(f"{name}: viewing angle grids hold no values")
    # a band without its own grid takes the mean over the bands that have one
    mean_z = np.mean(np.stack(list(view_zenith.values())), axis=0)
    az_stack = np.radians(np.stack(list(view_azimuth.values())))
    mean_a = np.mod(np.degrees(np.arctan2(np.sin(az_stack).mean(0), np.cos(az_stack).mean(0))), 360.0)
    for band in S2_BANDS:
        view_zenith.setdefault(band, mean_z)
        view_azimuth.setdefault(band, mean_a)
    mean_sun_el = _find_all(root, "Mean_Sun_Angle")
    mean_sun = (
        (
            float(_find_text(mean_sun_el[0], "ZENITH_ANGLE") or "nan"),
            float(_find_text(mean_sun_el[0], "AZIMUTH_ANGLE") or "nan"),
        )
        if mean_sun_el
        else (float(sun_zenith.mean()), _circular_mean(sun_azimuth))
    )
    mean_view = {
        _band_from_id(el.get("bandId"), name): (
            float(_find_text(el, "ZENITH_ANGLE") or "nan"),
            float(_find_text(el, "AZIMUTH_ANGLE") or "nan"),
        )
        for el in _find_all(root, "Mean_Viewing_Incidence_Angle")
    }
    ulx, uly = origins[10]
    angles = AngleGrid(ulx, uly, step, sun_zenith, np.mod(sun_azimuth, 360.0), view_zenith, view_azimuth)
    return TileMetadata(
        crs_code, sizes, origins, angles, mean_sun, mean_view, {b: len(g) for b, g in per_band.items()}
    )


@contextlib.contextmanager
def _quiet_nanmean() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice" outside the swath
        yield

