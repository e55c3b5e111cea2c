"""Open a Sentinel-2 product: an L1C SAFE (folder or zip) or L1C GeoTIFF stack, an L2A reference.

In:
- a Level-1C SAFE product, as a folder or a zip (:mod:`eotwin.sentinel2.safe`): radiometry, spacecraft
  and band files from ``MTD_MSIL1C.xml``, angle grids from ``GRANULE/*/MTD_TL.xml``
  (:mod:`eotwin.sentinel2.metadata`), the ECMWF total ozone column from ``GRANULE/*/AUX_DATA/AUX_ECMWFT``
  when present (sen2cor's default, :mod:`eotwin.sentinel2.ecmwf`);
- an "L1C stack": one multi-band GeoTIFF whose band descriptions name the bands (B01 ... B12, B8A,
  B10 optional), TOA = (DN + RADIO_ADD_OFFSET) / 10000 with the offset in the dataset tag
  ``RADIO_ADD_OFFSET`` (0 when absent), mean angles in the tags ``SUN_ZENITH``, ``SUN_AZIMUTH``,
  ``VIEW_ZENITH``, ``VIEW_AZIMUTH`` (degrees) and ``SPACECRAFT``, optionally the total ozone column
  in ``OZONE`` (cm-atm);
- as references: a Level-2A SAFE (``MTD_MSIL2A.xml``, ``BOA_ADD_OFFSET``, SCL) or an L2A stack (tag
  ``BOA_ADD_OFFSET``, optional band ``SCL``).

A CDSE STAC item gives the same :class:`L1CProduct` (:mod:`eotwin.atmocorr.stac_input`). The bands are
read onto the product's grid by :class:`eotwin.sentinel2.reading.BandReader`.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from affine import Affine

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid
from eotwin.sentinel2.bands import L2A_BANDS, NATIVE_RESOLUTION, S2_BANDS, normalise_band, normalise_sensor
from eotwin.sentinel2.cams import CamsAerosol, from_stack_tags, read_cams
from eotwin.sentinel2.ecmwf import OZONE_RANGE_CM_ATM, read_total_ozone
from eotwin.sentinel2.metadata import AngleGrid, parse_product_metadata, parse_tile_metadata
from eotwin.sentinel2.radiometry import QUANTIFICATION
from eotwin.sentinel2.safe import SafeArchive

ANGLE_TAGS = ("SUN_ZENITH", "SUN_AZIMUTH", "VIEW_ZENITH", "VIEW_AZIMUTH")
OZONE_TAG_RANGE = OZONE_RANGE_CM_ATM  # the stack tag OZONE (cm-atm) must lie within


@dataclass(frozen=True)
class BandSource:
    """Where one band's DN are: a GDAL path and a 1-based band index in it."""

    path: str
    index: int = 1


@dataclass(frozen=True)
class L1CProduct:
    """An opened L1C product: its output grid, radiometry, angles and where each band is."""

    source: str
    kind: str  # "SAFE", "SAFE zip" or "stack"
    product_id: str
    spacecraft: str  # S2A / S2B / S2C
    grid: Grid  # the output grid (10 or 20 m)
    quantification: float
    offsets: dict[str, float]
    bands: dict[str, BandSource]
    angles: AngleGrid
    datetime: str | None = None
    processing_baseline: str | None = None
    extra: dict = field(default_factory=dict)
    ozone: float | None = None  # total ozone column (cm-atm) when the product carries one
    ozone_source: str | None = None  # where it came from ("ECMWF AUX_ECMWFT", "OZONE tag")
    cams: CamsAerosol | None = None  # the CAMS aerosol forecast the product carries (AUX_CAMSFO)

    @property
    def resolution(self) -> float:
        return float(self.grid.res[0])


def _grid_at(grid: Grid, resolution: float) -> Grid:
    """The same footprint at another resolution (Sentinel-2 grids nest: 10, 20, 60 m)."""
    left, bottom, right, top = grid.bounds
    width = max(1, round((right - left) / resolution))
    height = max(1, round((top - bottom) / resolution))
    return Grid(Affine(resolution, 0.0, left, 0.0, -resolution, top), width, height, grid.crs)


def _check_resolution(resolution: int | None) -> None:
    if resolution is not None and resolution not in (10, 20):
        raise EotwinError(f"--resolution must be 10 or 20 (metres), got {resolution}")


def open_l1c(path: str | Path, resolution: int | None = None) -> L1CProduct:
    """Open an L1C SAFE (folder or zip) or L1C GeoTIFF stack; ``resolution`` 10 or 20 m (default: 10 m
    for a SAFE, the stack's own grid for a stack). STAC items: :func:`eotwin.atmocorr.stac_input.open_input`."""
    _check_resolution(resolution)
    path = Path(path)
    if not path.exists():
        raise EotwinError(f"{path}: no such file or folder")
    if path.is_dir() or zipfile.is_zipfile(path):
        return _open_safe(path, resolution)
    return _open_stack(path, resolution)


def _open_safe(path: Path, resolution: int | None) -> L1CProduct:
    from eotwin.io.raster import grid_of, open_raster

    safe = SafeArchive(path)
    meta = parse_product_metadata(safe.read_bytes(safe.metadata_name), safe.metadata_name)
    if meta.level != "L1C":
        raise EotwinError(f"{path}: a Level-2A product; atmospheric correction needs Level-1C input")
    tl_name = safe.tile_metadata_name()
    tile = parse_tile_metadata(safe.read_bytes(tl_name), tl_name)
    bands: dict[str, BandSource] = {}
    for band in S2_BANDS:
        rel = meta.image_files.get((band, NATIVE_RESOLUTION[band]))
        found = safe.find_image(rel) if rel else None
        if found:
            bands[band] = BandSource(safe.gdal_path(found))
    missing = [b for b in L2A_BANDS if b not in bands]
    if missing:
        raise EotwinError(f"{path}: band files missing for {', '.join(missing)}")
    with open_raster(bands["B02"].path) as ds:
        grid10 = grid_of(ds)
        crs = ds.crs
    if crs is None or crs.to_epsg() is None or f"EPSG:{crs.to_epsg()}" != tile.crs_code:
        raise EotwinError(f"{path}: band CRS {crs} does not match the tile metadata's {tile.crs_code}")
    grid = _grid_at(grid10, resolution or 10)
    ozone = _safe_ozone(safe)
    cams = _safe_cams(safe)
    return L1CProduct(
        source=str(path),
        kind="SAFE zip" if safe.is_zip else "SAFE",
        product_id=meta.product_uri.removesuffix(".SAFE"),
        spacecraft=meta.spacecraft,
        grid=grid,
        quantification=meta.quantification,
        offsets=meta.offsets,
        bands=bands,
        angles=tile.angles.crop(grid),
        datetime=meta.start_time,
        processing_baseline=meta.processing_baseline,
        extra={"tile_crs": tile.crs_code, "mean_sun": tile.mean_sun},
        ozone=ozone,
        ozone_source=None if ozone is None else "ECMWF AUX_ECMWFT",
        cams=cams,
    )


def _safe_aux(safe: SafeArchive, aux_name: str) -> tuple[bytes, str] | None:
    """The bytes of the granule's ``AUX_DATA/<aux_name>`` and the name errors give it; None without one."""
    aux = sorted(n for n in safe.names() if re.search(rf"GRANULE/[^/]+/AUX_DATA/{aux_name}$", n))
    if not aux:
        return None
    return safe.read_bytes(aux[0]), f"{safe.path}/{aux[0]}" if not safe.is_zip else f"{safe.path}!{aux[0]}"


def _safe_ozone(safe: SafeArchive) -> float | None:
    """The ECMWF total ozone column (cm-atm) of the granule's ``AUX_DATA/AUX_ECMWFT``; None without one."""
    found = _safe_aux(safe, "AUX_ECMWFT")
    return None if found is None else read_total_ozone(found[0], name=found[1])


def _safe_cams(safe: SafeArchive) -> CamsAerosol | None:
    """The CAMS aerosol forecast of the granule's ``AUX_DATA/AUX_CAMSFO`` (baseline 04.00 on); None without one."""
    found = _safe_aux(safe, "AUX_CAMSFO")
    return None if found is None else read_cams(found[0], name=found[1])


def band_names_from_descriptions(descriptions: Sequence[str | None], name: str) -> dict[str, int]:
    """Band name -> 1-based index from GeoTIFF band descriptions (``B1``/``B01``/``b8a`` all accepted)."""
    found: dict[str, int] = {}
    for i, desc in enumerate(descriptions, start=1):
        if not desc:
            continue
        text = desc.strip()
        if text.upper() in ("SCL", "AOT", "WVP"):
            found[text.upper()] = i
            continue
        try:
            band = normalise_band(text)
        except EotwinError:
            continue
        if band in found:
            raise EotwinError(f"{name}: band {band} appears twice in the band descriptions")
        found[band] = i
    return found


def _float_tag(tags: Mapping[str, str], key: str, name: str, default: float | None = None) -> float:
    if key not in tags:
        if default is None:
            raise EotwinError(f"{name}: tag {key} is missing")
        return default
    try:
        value = float(tags[key])
    except ValueError:
        raise EotwinError(f"{name}: tag {key}={tags[key]!r} is not a number") from None
    if not math.isfinite(value):
        raise EotwinError(f"{name}: tag {key} is not finite")
    return value


def _open_stack(path: Path, resolution: int | None) -> L1CProduct:
    from eotwin.io.raster import raster_info

    info = raster_info(path)
    name = str(path)
    bands_idx = band_names_from_descriptions(info.descriptions, name)
    missing = [b for b in L2A_BANDS if b not in bands_idx]
    if missing:
        raise EotwinError(
            f"{name}: L1C stack lacks bands {', '.join(missing)} (band descriptions must name B01 ... B12, B8A)"
        )
    dtypes = {info.dtypes[i - 1] for b, i in bands_idx.items() if b in S2_BANDS}
    if any(not np.issubdtype(np.dtype(d), np.integer) for d in dtypes):
        raise EotwinError(
            f"{name}: L1C stack must hold integer DN (uint16), found {', '.join(sorted(dtypes))}"
        )
    absent = [t for t in ANGLE_TAGS if t not in info.tags]
    if absent:
        raise EotwinError(f"{name}: no angles: tags {', '.join(absent)} missing (degrees)")
    angles = {t: _float_tag(info.tags, t, name) for t in ANGLE_TAGS}
    for tag in ("SUN_ZENITH", "VIEW_ZENITH"):
        if not 0.0 <= angles[tag] < 90.0:
            raise EotwinError(f"{name}: tag {tag}={angles[tag]:g} must be in [0, 90) degrees")
    if "SPACECRAFT" not in info.tags:
        raise EotwinError(f"{name}: tag SPACECRAFT is missing (Sentinel-2A, Sentinel-2B or Sentinel-2C)")
    offset = _float_tag(info.tags, "RADIO_ADD_OFFSET", name, 0.0)
    quantification = _float_tag(info.tags, "QUANTIFICATION_VALUE", name, QUANTIFICATION)
    if quantification <= 0:
        raise EotwinError(f"{name}: QUANTIFICATION_VALUE must be positive")
    native = info.grid
    if not native.is_rectilinear:
        raise EotwinError(f"{name}: the stack must be on a north-up grid")
    grid = native if resolution is None else _grid_at(native, float(resolution))
    present = [b for b in S2_BANDS if b in bands_idx]
    ozone = None
    if "OZONE" in info.tags:
        ozone = _float_tag(info.tags, "OZONE", name)
        if not OZONE_TAG_RANGE[0] <= ozone <= OZONE_TAG_RANGE[1]:
            raise EotwinError(
                f"{name}: tag OZONE={ozone:g} is outside [{OZONE_TAG_RANGE[0]:g}, {OZONE_TAG_RANGE[1]:g}] "
                "(the total ozone column in cm-atm, e.g. 0.3)"
            )
    return L1CProduct(
        source=name,
        kind="stack",
        product_id=info.tags.get("PRODUCT_ID", path.stem),
        spacecraft=normalise_sensor(info.tags["SPACECRAFT"]),
        grid=grid,
        quantification=quantification,
        offsets=dict.fromkeys(S2_BANDS, offset),
        bands={b: BandSource(name, bands_idx[b]) for b in present},
        angles=AngleGrid.constant(
            grid,
            angles["SUN_ZENITH"],
            angles["SUN_AZIMUTH"],
            angles["VIEW_ZENITH"],
            angles["VIEW_AZIMUTH"],
            present,
        ),
        datetime=info.tags.get("DATETIME") or info.tags.get("TIFFTAG_DATETIME"),
        processing_baseline=info.tags.get("PROCESSING_BASELINE"),
        ozone=ozone,
        ozone_source=None if ozone is None else "OZONE tag",
        cams=from_stack_tags(dict(info.tags), name),
    )


@dataclass(frozen=True)
class L2AReference:
    """An L2A product used as reference: where its bands are, its radiometry and its scene classification."""

    source: str
    kind: str
    quantification: float
    offsets: dict[str, float]
    bands: dict[str, BandSource]  # the L2A bands it has, plus "SCL" when available


def open_l2a_reference(path: str | Path, resolution: int = 10) -> L2AReference:
    """Open an L2A SAFE (folder or zip) or L2A GeoTIFF stack (tag BOA_ADD_OFFSET, 0 when absent)."""
    path = Path(path)
    if not path.exists():
        raise EotwinError(f"{path}: no such file or folder")
    if path.is_dir() or zipfile.is_zipfile(path):
        safe = SafeArchive(path)
        meta = parse_product_metadata(safe.read_bytes(safe.metadata_name), safe.metadata_name)
        if meta.level != "L2A":
            raise EotwinError(f"{path}: the reference must be a Level-2A product")
        bands: dict[str, BandSource] = {}
        for band in (*L2A_BANDS, "SCL"):
            options = sorted(
                (r for (b, r) in meta.image_files if b == band), key=lambda r: (r < resolution, r)
            )
            for res in options:  # the finest resolution not finer than the output grid, else the finest one
                found = safe.find_image(meta.image_files[(band, res)])
                if found:
                    bands[band] = BandSource(safe.gdal_path(found))
                    break
        missing = [b for b in L2A_BANDS if b not in bands]
        if len(missing) == len(L2A_BANDS):
            raise EotwinError(f"{path}: no band files found in the L2A reference")
        return L2AReference(str(path), "SAFE", meta.quantification, meta.offsets, bands)
    from eotwin.io.raster import raster_info

    info = raster_info(path)
    idx = band_names_from_descriptions(info.descriptions, str(path))
    bands = {b: BandSource(str(path), i) for b, i in idx.items() if b in L2A_BANDS or b == "SCL"}
    if not any(b in L2A_BANDS for b in bands):
        raise EotwinError(f"{path}: no L2A bands named in the band descriptions (B01 ... B12, B8A)")
    offset = _float_tag(info.tags, "BOA_ADD_OFFSET", str(path), 0.0)
    quant = _float_tag(info.tags, "BOA_QUANTIFICATION_VALUE", str(path), QUANTIFICATION)
    return L2AReference(str(path), "stack", quant, dict.fromkeys(S2_BANDS, offset), bands)


def with_grid(product: L1CProduct, grid: Grid) -> L1CProduct:
    """The same product read onto another grid (tests and previews)."""
    return replace(product, grid=grid, angles=product.angles.crop(grid))
