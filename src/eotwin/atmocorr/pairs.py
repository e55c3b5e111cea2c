"""Real Sentinel-2 L1C/L2A pairs from the CDSE STAC API, written as pair folders (I/O and pipeline).

Users who want to judge (or fine-tune) a correction on their own area need sen2cor's L2A of exactly the
L1C they correct. This module finds both in the STAC API, reads the same window of both through the
object store, and writes one folder per pair::

    DIR/<pair_id>/l1c.tif    L1C stack as ``open_l1c`` reads it (uint16 DN, bands named B01 ... B12, B8A,
                             B10 when the item has it; tags SUN_*/VIEW_* scene means, SPACECRAFT,
                             RADIO_ADD_OFFSET, QUANTIFICATION_VALUE, DATETIME, PRODUCT_ID, PROCESSING_BASELINE,
                             OZONE from the L1C's ECMWF AUX_ECMWFT when the object store has it)
    DIR/<pair_id>/l2a.tif    L2A reference stack as ``open_l2a_reference`` reads it (the L2A bands + SCL;
                             tags BOA_ADD_OFFSET, BOA_QUANTIFICATION_VALUE), the same grid
    DIR/<pair_id>/pair.json  pair_id, source, l1c_id, l2a_id, datetime, bbox, notes (every approximation made)

Pairing rule: an L1C item and an L2A item are one pair when they share the spacecraft, the MGRS tile and the
datatake sensing time (to the second; the product names' first date), and their ``eopf:datatake_id`` when both
carry one. Among several products of one datatake and tile (reprocessings), the L1C of the newest processing
baseline is used, and the L2A of the same baseline if there is one, else the newest. Pairs are taken least
cloudy L1C first, then newest.

The grid: the L1C tile's own 10 m grid (its CRS), cut to the bbox and widened to whole 60 m pixels, so 10 m
bands are read as stored and 20/60 m bands and SCL are replicated onto it (nearest: DN never interpolated).
Both products are read through GDAL warped views of only that window (range requests on the JP2 files).
Radiometry and angles come from the items' metadata assets exactly as ``atmocorr run`` reads an L1C item
(:mod:`eotwin.atmocorr.stac_input`); the per-pixel angle grids become scene means over the window.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine

from eotwin.atmocorr.stac_input import (
    L1C_COLLECTION,
    _metadata_asset,
    _radiometry_from_item,
    asset_href,
    band_assets,
    open_stac_item,
    remote_env,
)
from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, Window, transform_bounds
from eotwin.io.files import publish_staged, staging_dir, write_json_atomic
from eotwin.io.remote.access import RemoteAccess
from eotwin.io.remote.gdal import gdal_path
from eotwin.io.remote.http import fetch_bytes
from eotwin.io.remote.stac_api import BBox, search
from eotwin.progress import ProgressReporter, ensure_progress
from eotwin.sentinel2.bands import L2A_BANDS, NATIVE_RESOLUTION, S2_BANDS, normalise_sensor
from eotwin.sentinel2.metadata import (
    AngleGrid,
    _circular_mean,
    interpolate_azimuth,
    interpolate_nodes,
    parse_product_metadata,
)
from eotwin.sentinel2.products import BandSource, L1CProduct, L2AReference
from eotwin.sentinel2.reading import BandReader

L2A_COLLECTION = "sentinel-2-l2a"
GRID_RES = 10.0
ALIGN_RES = 60.0  # the window is widened to whole pixels of the coarsest band
BLOCK_ROWS = 1024
ANGLE_SAMPLES = 200  # angle grids are evaluated on at most this many points per side of the window
_NAME = re.compile(r"^(S2[A-D])_MSIL(1C|2A)_(\d{8}T\d{6})_N(\d{4})_R(\d{3})_T(\d{2}[A-Z]{3})_(\d{8}T\d{6})")


# ----------------------------------------------------------------------------- pairing (pure: item dicts in)
@dataclass(frozen=True)
class ItemPair:
    """An L1C item and the L2A item of the same datatake and tile."""

    l1c: dict
    l2a: dict
    notes: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        return datatake_key(self.l1c)

    @property
    def pair_id(self) -> str:
        """``<spacecraft>_T<tile>_<sensing time>``, e.g. ``S2C_T31TEL_20250710T104041``."""
        spacecraft, tile, sensing = self.key
        return f"{spacecraft}_T{tile}_{sensing}"


def _name_parts(item: dict) -> re.Match | None:
    return _NAME.match(str(item.get("id", "")))


def _spacecraft(item: dict) -> str:
    platform = item.get("properties", {}).get("platform")
    if platform:
        return normalise_sensor(str(platform))
    parts = _name_parts(item)
    if parts is None:
        raise EotwinError(f"item {item.get('id')}: no platform property and not a Sentinel-2 product name")
    return parts.group(1)


def _tile(item: dict) -> str:
    code = str(item.get("properties", {}).get("grid:code") or "")
    if code.startswith("MGRS-"):
        return code.removeprefix("MGRS-")
    parts = _name_parts(item)
    if parts is None:
        raise EotwinError(f"item {item.get('id')}: no grid:code property and not a Sentinel-2 product name")
    return parts.group(6)


def _sensing(item: dict) -> str:
    """The datatake sensing start, ``YYYYMMDDTHHMMSS`` (the product name's, else the item's datetime)."""
    parts = _name_parts(item)
    if parts is not None:
        return parts.group(3)
    when = str(item.get("properties", {}).get("datetime") or "")
    digits = re.sub(r"[^0-9T]", "", when[:19])
    if len(digits) != 15:
        raise EotwinError(f"item {item.get('id')}: no datetime to pair it by")
    return digits


def datatake_key(item: dict) -> tuple[str, str, str]:
    """(spacecraft, MGRS tile, sensing time): what an L1C and its L2A share."""
    return _spacecraft(item), _tile(item), _sensing(item)


def _baseline(item: dict) -> str:
    version = item.get("properties", {}).get("processing:version")
    if version:
        return str(version)
    parts = _name_parts(item)
    return f"{parts.group(4)[:2]}.{parts.group(4)[2:]}" if parts else ""


def _processed(item: dict) -> str:
    props = item.get("properties", {})
    parts = _name_parts(item)
    return str(props.get("processing:datetime") or (parts.group(7) if parts else "") or props.get("created") or "")


def _cloud(item: dict) -> float:
    value = item.get("properties", {}).get("eo:cloud_cover")
    return float(value) if value is not None else 100.0


def match_pairs(l1c_items: Sequence[dict], l2a_items: Sequence[dict]) -> tuple[list[ItemPair], list[dict]]:
    """(pairs least cloudy first then newest, L1C items without an L2A partner); see the module docstring."""
    l1c_by_key: dict[tuple[str, str, str], list[dict]] = {}
    for item in l1c_items:
        l1c_by_key.setdefault(datatake_key(item), []).append(item)
    l2a_by_key: dict[tuple[str, str, str], list[dict]] = {}
    for item in l2a_items:
        l2a_by_key.setdefault(datatake_key(item), []).append(item)
    pairs: list[ItemPair] = []
    unpaired: list[dict] = []
    for key, group in l1c_by_key.items():
        l1c = max(group, key=lambda it: (_baseline(it), _processed(it)))
        take = l1c.get("properties", {}).get("eopf:datatake_id")
        partners = [it for it in l2a_by_key.get(key, [])
                    if not take or not it.get("properties", {}).get("eopf:datatake_id")
                    or it["properties"]["eopf:datatake_id"] == take]
        if not partners:
            unpaired.append(l1c)
            continue
        same = [it for it in partners if _baseline(it) == _baseline(l1c)]
        l2a = max(same or partners, key=lambda it: (_baseline(it), _processed(it)))
        notes: list[str] = []
        if len(group) > 1:
            notes.append(f"{len(group)} L1C products of this datatake and tile; used the newest processing "
                         f"({l1c['id']})")
        if len(partners) > 1:
            notes.append(f"{len(partners)} L2A products of this datatake and tile; used {l2a['id']}")
        if not same:
            notes.append(f"the L2A was processed with baseline {_baseline(l2a)}, the L1C with {_baseline(l1c)}")
        pairs.append(ItemPair(l1c, l2a, tuple(notes)))
    pairs.sort(key=lambda p: (_cloud(p.l1c), -_epoch(p.l1c)))
    return pairs, unpaired


def _epoch(item: dict) -> float:
    import datetime as dt

    text = str(item.get("properties", {}).get("datetime") or "1970-01-01T00:00:00Z").replace("Z", "+00:00")
    return dt.datetime.fromisoformat(text).timestamp()


# ----------------------------------------------------------------------------- the L2A item
def _item_url(item: dict, stac_url: str, collection: str) -> str:
    self_href = next((lk.get("href") for lk in item.get("links", []) if lk.get("rel") == "self"), None)
    return self_href or f"{stac_url.rstrip('/')}/collections/{collection}/items/{item.get('id')}"


def _finest_asset(item: dict, prefix: str) -> dict | None:
    """The finest data asset whose key is ``prefix`` or starts with ``prefix_`` (SCL_20m before SCL_60m)."""
    found = [(float(a.get("gsd") or 1e9), k, a) for k, a in item.get("assets", {}).items()
             if (k == prefix or k.startswith(prefix + "_")) and "data" in a.get("roles", ["data"])]
    return min(found, key=lambda t: (t[0], t[1]))[2] if found else None


def open_l2a_item(item: dict, source: str, access: RemoteAccess) -> tuple[L2AReference, list[str]]:
    """An L2A reference from a CDSE ``sentinel-2-l2a`` item (finest asset per band, SCL) and what was assumed."""
    item_id = str(item.get("id"))
    notes: list[str] = []
    assets = band_assets(item)
    missing = [b for b in L2A_BANDS if b not in assets]
    if missing:
        raise EotwinError(f"item {item_id}: no asset for band {', '.join(missing)} (an L2A item has B01 ... B12, B8A)")
    scl = _finest_asset(item, "SCL")
    if scl is None:
        raise EotwinError(f"item {item_id}: no SCL asset (sen2cor's scene classification)")

    def href(asset: dict, what: str) -> str:
        return asset_href(item_id, asset, what, source)

    product_asset = _metadata_asset(item, "product")
    if product_asset is not None:
        meta = parse_product_metadata(fetch_bytes(access, href(product_asset, "product_metadata"), "MTD_MSIL2A.xml"),
                                      "MTD_MSIL2A.xml")
        if meta.level != "L2A":
            raise EotwinError(f"item {item_id}: its product metadata is not Level-2A")
        quantification, offsets = meta.quantification, meta.offsets
    else:
        quantification, offsets = _radiometry_from_item(item, assets)
        notes.append("L2A radiometry from the items' raster:scale/raster:offset (no MTD_MSIL2A.xml asset)")
    bands = {b: BandSource(gdal_path(href(a, b))) for b, a in assets.items() if b in L2A_BANDS}
    bands["SCL"] = BandSource(gdal_path(href(scl, "SCL")))
    coarse = sorted(f"{b} at {float(a.get('gsd') or NATIVE_RESOLUTION[b]):g} m" for b, a in assets.items()
                    if b in L2A_BANDS and float(a.get("gsd") or NATIVE_RESOLUTION[b]) > GRID_RES)
    notes.append(f"L2A bands read at their finest resolution and replicated onto the 10 m grid (nearest, DN "
                 f"unchanged): {', '.join(coarse)}; SCL at {float(scl.get('gsd') or 20):g} m")
    return L2AReference(source, "STAC item", quantification, offsets, bands), notes


def aux_notes(product: L1CProduct) -> tuple[dict[str, str], list[str]]:
    """The L1C-stack tags of what the L1C's auxiliary data gave (:func:`open_stac_item` reads ``AUX_ECMWFT`` and
    ``AUX_CAMSFO`` beside its ``MTD_TL.xml``; CDSE items list no asset for them) and a note on each."""
    from eotwin.sentinel2.cams import stack_tags

    tags: dict[str, str] = {}
    if product.ozone is not None:
        tags["OZONE"] = f"{product.ozone:.5f}"
        notes = ["OZONE: the mean ECMWF total column ozone of the L1C's AUX_DATA/AUX_ECMWFT (sen2cor's source)"]
    else:
        notes = ["no OZONE tag: the L1C has no AUX_DATA/AUX_ECMWFT (the pipeline then uses its default)"]
    if product.cams is not None:
        tags.update(stack_tags(product.cams))
        notes.append(f"CAMS_*: the tile means of the L1C's AUX_DATA/AUX_CAMSFO ({product.cams.describe()})")
    else:
        notes.append("no CAMS tags: the L1C has no AUX_DATA/AUX_CAMSFO (older than processing baseline 04.00, or "
                     "not in the store)")
    return tags, notes


# ----------------------------------------------------------------------------- grid and angles
def pair_grid(tile: Grid, bbox: BBox) -> tuple[Grid, float] | None:
    """(the window of the L1C tile's 10 m grid covering ``bbox``, widened to whole 60 m pixels; the fraction of
    the bbox inside the tile); the bbox is lon/lat. None when the bbox misses the tile."""
    if abs(tile.res[0] - GRID_RES) > 1e-6 or not tile.is_rectilinear:
        raise EotwinError(f"the L1C tile grid is not a north-up 10 m grid (pixel size {tile.res[0]:g} m)")
    box = transform_bounds(bbox, "EPSG:4326", tile.crs)
    step = round(ALIGN_RES / GRID_RES)
    coarse = Grid(tile.transform @ Affine.scale(step), math.ceil(tile.width / step), math.ceil(tile.height / step),
                  tile.crs)
    window = coarse.window_for_bounds(box)
    if window is None:
        return None
    row0, col0 = window.row_off * step, window.col_off * step
    height = min(window.height * step, tile.height - row0)
    width = min(window.width * step, tile.width - col0)
    grid = tile.window_grid(Window(row0, col0, height, width))
    left, bottom, right, top = grid.bounds
    inside = max(0.0, min(right, box[2]) - max(left, box[0])) * max(0.0, min(top, box[3]) - max(bottom, box[1]))
    area = (box[2] - box[0]) * (box[3] - box[1])
    return grid, float(inside / area) if area > 0 else 1.0


def window_angles(angles: AngleGrid, grid: Grid, bands: Sequence[str]) -> dict[str, float]:
    """Scene means (degrees) over ``grid`` of the per-pixel angles the node grids give (azimuths circular, view
    angles averaged over ``bands``)."""
    left, bottom, right, top = grid.bounds
    res = max(grid.res[0], (right - left) / ANGLE_SAMPLES, (top - bottom) / ANGLE_SAMPLES)
    sample = Grid(Affine(res, 0, left, 0, -res, top), max(1, round((right - left) / res)),
                  max(1, round((top - bottom) / res)), grid.crs)
    wr, wc = angles.weights(sample)

    def full(values: np.ndarray) -> np.ndarray:
        return np.broadcast_to(values, sample.shape)

    view_z = np.stack([full(interpolate_nodes(angles.view_zenith[b], wr, wc)) for b in bands])
    view_a = np.stack([full(interpolate_azimuth(angles.view_azimuth[b], wr, wc)) for b in bands])
    return {
        "SUN_ZENITH": float(np.mean(full(interpolate_nodes(angles.sun_zenith, wr, wc)), dtype=np.float64)),
        "SUN_AZIMUTH": _circular_mean(full(interpolate_azimuth(angles.sun_azimuth, wr, wc))),
        "VIEW_ZENITH": float(np.mean(view_z, dtype=np.float64)),
        "VIEW_AZIMUTH": _circular_mean(view_a),
    }


# ----------------------------------------------------------------------------- writing one pair
@dataclass(frozen=True)
class PairRequest:
    bbox: BBox
    datetime: str  # a STAC interval, see eotwin.io.remote.stac_api.parse_date
    max_cloud: float | None = 20.0
    max_pairs: int = 5


@dataclass
class PairResult:
    pair_id: str
    path: Path
    l1c_id: str
    l2a_id: str
    datetime: str | None
    width: int
    height: int
    valid_fraction: float  # pixels with data in every L1C and L2A band
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"pair_id": self.pair_id, "path": str(self.path), "l1c_id": self.l1c_id, "l2a_id": self.l2a_id,
                "datetime": self.datetime, "width": self.width, "height": self.height,
                "valid_fraction": round(self.valid_fraction, 6), "notes": self.notes}


def _single(values: dict[str, float], bands: Sequence[str], what: str, item_id: str) -> float:
    found = {float(values.get(b, 0.0)) for b in bands}
    if len(found) != 1:
        raise EotwinError(f"item {item_id}: per-band {what} differ ({sorted(found)}); a stack holds one value")
    return found.pop()


def _write_stack(target: Path, reader: BandReader, names: Sequence[str], grid: Grid, tags: dict[str, object],
                 advance: Callable[[], None]) -> np.ndarray:
    """Write ``names`` read through ``reader`` as a uint16 GeoTIFF (atomic); the mask of pixels valid in all."""
    import rasterio

    from eotwin.io.files import atomic_path

    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": len(names), "dtype": "uint16",
               "crs": rasterio.crs.CRS.from_wkt(grid.crs.to_wkt()), "transform": grid.transform, "nodata": 0,
               "compress": "deflate", "predictor": 2, "interleave": "band"}
    if grid.width >= 256 and grid.height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    valid = np.ones(grid.shape, dtype=bool)
    with atomic_path(target) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
        dst.update_tags(**{k: str(v) for k, v in tags.items()})
        for window in grid.row_blocks(BLOCK_ROWS):
            for i, name in enumerate(names, start=1):
                raw = reader.read_dn([name], window)
                (_, values), = raw.parts
                dn = np.asarray(values[0])
                if np.issubdtype(dn.dtype, np.floating):
                    dn = np.rint(dn)
                dn = dn.astype(np.uint16)
                valid[window.row_slice] &= dn != 0
                dst.write(dn, i, window=rasterio.windows.Window(window.col_off, window.row_off, window.width,
                                                                window.height))
                advance()
    return valid


def write_pair(pair: ItemPair, request: PairRequest, access: RemoteAccess, folder: Path,
               progress: ProgressReporter | None = None) -> PairResult | None:
    """Read the bbox window of the L1C and of its L2A and write the pair folder; None when the window holds no
    pixel with data in both (the bbox in the tile's no-data part) or misses the tile."""
    progress = ensure_progress(progress)
    stac_url = access.endpoints.stac_url
    l1c_source = _item_url(pair.l1c, stac_url, L1C_COLLECTION)
    l2a_source = _item_url(pair.l2a, stac_url, L2A_COLLECTION)
    product: L1CProduct = open_stac_item(pair.l1c, l1c_source, None, access)
    reference, notes = open_l2a_item(pair.l2a, l2a_source, access)
    notes = [*pair.notes, *notes]
    placed = pair_grid(product.grid, request.bbox)
    if placed is None:  # the item's footprint touches the bbox, its tile's grid does not
        return None
    grid, covered = placed
    if covered < 0.999:
        notes.append(f"the bbox is cut to the tile: {covered:.0%} of it lies inside {pair.pair_id}")
    notes.append("window widened to whole 60 m pixels of the tile grid")
    l1c_bands = [b for b in S2_BANDS if b in product.bands]
    coarse = sorted(f"{b} at {NATIVE_RESOLUTION[b]} m" for b in l1c_bands if NATIVE_RESOLUTION[b] > GRID_RES)
    notes.append("L1C bands replicated onto the 10 m grid (nearest, DN unchanged): " + ", ".join(coarse))
    if "B10" not in product.bands:
        notes.append("no B10 in the L1C item")
    radio_offset = _single(product.offsets, l1c_bands, "RADIO_ADD_OFFSET", product.product_id)
    l2a_bands = [b for b in S2_BANDS if b in reference.bands]
    boa_offset = _single(reference.offsets, l2a_bands, "BOA_ADD_OFFSET", str(pair.l2a.get("id")))
    angles = window_angles(product.angles, grid, l1c_bands)
    notes.append("angles: means over the window of the MTD_TL.xml 5 km grids (view angles also over the bands); "
                 "the per-pixel variation is dropped")
    aux_tags, aux_lines = aux_notes(product)
    notes.extend(aux_lines)
    spacecraft = {"S2A": "Sentinel-2A", "S2B": "Sentinel-2B", "S2C": "Sentinel-2C"}.get(product.spacecraft,
                                                                                        product.spacecraft)
    l1c_tags: dict[str, object] = {**{k: round(v, 6) for k, v in angles.items()}, "SPACECRAFT": spacecraft,
                                   "RADIO_ADD_OFFSET": f"{radio_offset:g}",
                                   "QUANTIFICATION_VALUE": f"{product.quantification:g}",
                                   "DATETIME": product.datetime or pair.l1c["properties"].get("datetime", ""),
                                   "PRODUCT_ID": product.product_id,
                                   "PROCESSING_BASELINE": product.processing_baseline or ""}
    l1c_tags.update(aux_tags)
    l2a_tags = {"BOA_ADD_OFFSET": f"{boa_offset:g}", "BOA_QUANTIFICATION_VALUE": f"{reference.quantification:g}",
                "PRODUCT_ID": str(pair.l2a.get("id"))}
    l2a_names = [*l2a_bands, "SCL"]
    blocks = math.ceil(grid.height / BLOCK_ROWS)
    folder.mkdir(parents=True)
    total = blocks * (len(l1c_bands) + len(l2a_names))
    with progress.task(f"pair {pair.pair_id}", total=total) as task, remote_env(access):
        _check_same_tile(product, reference, pair)
        with BandReader(product.bands, grid, categorical=l1c_bands) as reader:
            valid = _write_stack(folder / "l1c.tif", reader, l1c_bands, grid, l1c_tags, task.advance)
        with BandReader(reference.bands, grid, categorical=l2a_names) as reader:
            scl_valid = _write_stack(folder / "l2a.tif", reader, l2a_names, grid, l2a_tags, task.advance)
    valid &= scl_valid
    if not valid.any():
        return None
    if not valid.all():
        notes.append(f"{1 - valid.mean():.1%} of the window lacks data in some band (DN 0)")
    datetime = str(pair.l1c["properties"].get("datetime") or product.datetime or "")
    write_json_atomic(folder / "pair.json", {
        "pair_id": pair.pair_id,
        "source": f"CDSE STAC API {stac_url} ({L1C_COLLECTION}, {L2A_COLLECTION}), bands from S3 "
                  f"{access.endpoints.s3_endpoint}",
        "l1c_id": product.product_id,
        "l2a_id": str(pair.l2a.get("id")),
        "datetime": datetime,
        "bbox": [float(v) for v in request.bbox],
        "notes": notes,
    })
    return PairResult(pair.pair_id, folder, product.product_id, str(pair.l2a.get("id")), datetime, grid.width,
                      grid.height, float(valid.mean()), notes)


def _check_same_tile(product: L1CProduct, reference: L2AReference, pair: ItemPair) -> None:
    """The L2A must lie on the L1C's tile grid (same CRS and origin), or the windows would not be the same place."""
    from eotwin.io.raster import grid_of, open_raster

    with open_raster(reference.bands["B02"].path) as ds:
        l2a_grid = grid_of(ds)
    same = (l2a_grid.crs == product.grid.crs and abs(l2a_grid.transform.c - product.grid.transform.c) < 1e-6
            and abs(l2a_grid.transform.f - product.grid.transform.f) < 1e-6)
    if not same:
        raise EotwinError(f"item {pair.l2a.get('id')}: its B02 is not on the tile grid of {pair.l1c.get('id')}")


# ----------------------------------------------------------------------------- the whole request
def find_pairs(request: PairRequest, access: RemoteAccess, log: Callable[[str], None] | None = None) -> list[ItemPair]:
    """Search both collections and pair the items; one-line errors when nothing pairs."""
    endpoints = access.endpoints
    l1c_items = search(endpoints, L1C_COLLECTION, request.bbox, request.datetime, request.max_cloud)
    l2a_items = search(endpoints, L2A_COLLECTION, request.bbox, request.datetime, None, allow_empty=True)
    pairs, unpaired = match_pairs(l1c_items, l2a_items)
    if log:
        log(f"{len(l1c_items)} L1C and {len(l2a_items)} L2A item(s) found: {len(pairs)} pair(s)"
            + (f", {len(unpaired)} L1C without an L2A of the same datatake" if unpaired else ""))
    if not pairs:
        example = unpaired[0]["id"] if unpaired else "-"
        raise EotwinError(f"{len(unpaired)} {L1C_COLLECTION} item(s) for this bbox and date, but none has a "
                          f"{L2A_COLLECTION} item of the same datatake and tile (e.g. {example})")
    return pairs


def make_pairs(request: PairRequest, output: Path, access: RemoteAccess, progress: ProgressReporter | None = None,
               log: Callable[[str], None] | None = None) -> list[PairResult]:
    """Find the pairs and write up to ``request.max_pairs`` pair folders into ``output``.

    The folders are written in a hidden staging folder beside ``output`` and moved in only when all are
    complete: a failure leaves ``output`` as it was (a pair folder of the same id is replaced).
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise EotwinError(f"{output}: exists and is not a folder")
    if request.max_pairs < 1:
        raise EotwinError("--max-pairs must be at least 1")
    pairs = find_pairs(request, access, log)[: request.max_pairs]
    staging = staging_dir(output)
    try:
        results: list[PairResult] = []
        for pair in pairs:
            result = write_pair(pair, request, access, staging / pair.pair_id, progress)
            if result is None:
                if log:
                    log(f"{pair.pair_id}: no pixel with data in the bbox window; skipped")
                shutil.rmtree(staging / pair.pair_id, ignore_errors=True)  # not made when the bbox misses the tile
                continue
            results.append(result)
        if not results:
            raise EotwinError("the bbox window holds no data in any pair (it lies in the tiles' no-data part)")
        publish_staged(staging, output)
        for r in results:
            r.path = output / r.pair_id
        return results
    finally:
        shutil.rmtree(staging, ignore_errors=True)
