"""A CDSE STAC Sentinel-2 L1C item as input of atmospheric correction (I/O layer).

The item is a local JSON file, an http(s) URL, or an id looked up in a STAC API (collection
``sentinel-2-l1c``). It gives the same :class:`~eotwin.sentinel2.products.L1CProduct` a SAFE gives:

- bands: the assets ``B01`` ... ``B12``, ``B8A`` (``B10`` optional), read by GDAL through ``/vsis3/``
  (CDSE S3, path-style, keys from :mod:`eotwin.io.remote`) or ``/vsicurl/``; an asset's ``s3://`` href is
  preferred to its ``alternate`` https href (CDSE's "zipper" needs an OIDC token);
- radiometry: the ``product_metadata`` asset (``MTD_MSIL1C.xml``: quantification value and
  ``RADIO_ADD_OFFSET`` per band), else the band assets' ``raster:scale`` / ``raster:offset``;
- angles: the ``granule_metadata`` asset (``MTD_TL.xml``), the 5 km grids interpolated per pixel
  exactly as for a SAFE.

The XML assets are fetched through :mod:`eotwin.io.remote.http` (S3 requests signed with AWS Signature V4),
the bands read in :func:`eotwin.io.remote.gdal.gdal_env`; secrets never reach a message.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urljoin, urlparse

from eotwin.errors import EotwinError
from eotwin.io.remote.access import RemoteAccess
from eotwin.io.remote.gdal import gdal_env, gdal_path
from eotwin.io.remote.http import fetch_bytes
from eotwin.sentinel2.bands import L2A_BANDS, NATIVE_RESOLUTION, S2_BANDS, normalise_sensor
from eotwin.sentinel2.metadata import ProductMetadata, parse_product_metadata, parse_tile_metadata
from eotwin.sentinel2.products import BandSource, L1CProduct, _check_resolution, _grid_at, open_l1c

L1C_COLLECTION = "sentinel-2-l1c"
KIND = "STAC item"
METADATA_KEYS = {"product": ("product_metadata", "MTD_MSIL1C.xml"), "tile": ("granule_metadata", "MTD_TL.xml")}


# ----------------------------------------------------------------------------- remote access of a product
def read_retries(product: L1CProduct) -> dict[str, float]:
    """``BandReader`` retry settings for the product's bands: the endpoints' policy when remote, none when local."""
    access = product.extra.get("remote_access")
    if not isinstance(access, RemoteAccess):
        return {}
    return {"retries": access.endpoints.max_retries, "backoff_s": access.endpoints.backoff_s}


def product_env(product: L1CProduct) -> contextlib.AbstractContextManager:
    """The GDAL environment the product's bands need while they are opened and read (none for local files)."""
    access = product.extra.get("remote_access")
    return remote_env(access) if isinstance(access, RemoteAccess) else contextlib.nullcontext()


def remote_env(access: RemoteAccess) -> contextlib.AbstractContextManager:
    """:func:`~eotwin.io.remote.gdal.gdal_env` as a product's band reads need it: what GDAL fetched is dropped
    with the dataset, so a band reopened after a cut body is fetched afresh."""
    return gdal_env(access.endpoints, access.credentials, keep_fetched=False)


# ----------------------------------------------------------------------------- items
def is_url(value: str | Path) -> bool:
    return str(value).startswith(("http://", "https://"))


def looks_like_item(path: str | Path) -> bool:
    """An http(s) URL, or a ``.json`` file (the dispatch of ``open_l1c``; the content is checked on load)."""
    if isinstance(path, str) and is_url(path):
        return True
    p = Path(path)
    return p.suffix.lower() in (".json", ".geojson") and p.is_file()


def _check_item(item: object, where: str) -> dict:
    if not isinstance(item, dict) or item.get("type") != "Feature" or not isinstance(item.get("assets"), dict):
        kind = item.get("type") if isinstance(item, dict) else type(item).__name__
        raise EotwinError(f"{where}: not a STAC item (a GeoJSON Feature with assets), found type {kind!r}")
    return item


def load_item(source: str | Path, access: RemoteAccess) -> dict:
    """A STAC item from a local JSON file or an http(s) URL."""
    where = str(source)
    if is_url(where):
        data = fetch_bytes(access, where, "STAC item")
    else:
        path = Path(source)
        if not path.is_file():
            raise EotwinError(f"{path}: no such file")
        data = path.read_bytes()
    try:
        item = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EotwinError(f"{where}: not valid JSON ({str(exc).splitlines()[0]})") from None
    return _check_item(item, where)


def fetch_item_by_id(access: RemoteAccess, item_id: str, collection: str = L1C_COLLECTION) -> tuple[dict, str]:
    """(item, its URL) of ``item_id`` in ``collection`` of the STAC API (item search with ``ids``)."""
    from eotwin.io.remote.stac_api import search

    url = access.endpoints.stac_url
    found = search(access.endpoints, collection, None, None, None, allow_empty=True, ids=[item_id],
                   secrets=access.secrets)
    items = [it for it in found if it.get("id") == item_id]
    if not items:
        raise EotwinError(f"no item {item_id!r} in collection {collection} at {url}")
    item = _check_item(items[0], item_id)
    self_href = next((lk.get("href") for lk in item.get("links", []) if lk.get("rel") == "self"), None)
    return item, self_href or f"{url.rstrip('/')}/collections/{collection}/items/{item_id}"


def _asset_band(key: str, asset: dict) -> str | None:
    bands = asset.get("bands") or asset.get("eo:bands") or []
    if len(bands) == 1 and bands[0].get("name"):
        return str(bands[0]["name"]).upper()
    return key.split("_")[0].upper()


def band_assets(item: dict) -> dict[str, dict]:
    """Band name -> data asset (the finest resolution when an item has several, as L2A items do)."""
    found: dict[str, tuple[float, dict]] = {}
    for key, asset in item["assets"].items():
        if "data" not in asset.get("roles", ["data"]) or not isinstance(asset, dict):
            continue
        band = _asset_band(key, asset)
        if band not in S2_BANDS:
            continue
        gsd = float(asset.get("gsd") or NATIVE_RESOLUTION[band])
        if band not in found or gsd < found[band][0]:
            found[band] = (gsd, asset)
    return {b: a for b, (_, a) in found.items()}


def asset_hrefs(asset: dict) -> list[str]:
    """The asset's hrefs, ``s3://`` first (direct S3 reads), then http(s), then anything else."""
    hrefs = [asset.get("href")] + [alt.get("href") for alt in (asset.get("alternate") or {}).values()]
    hrefs = [h for h in hrefs if isinstance(h, str) and h]
    return sorted(dict.fromkeys(hrefs), key=lambda h: 0 if h.startswith("s3://") else 1 if is_url(h) else 2)


def asset_href(item_id: str, asset: dict, what: str, base: str | None) -> str:
    """The first href of an item's asset, resolved against the item's own location; one line when it has none."""
    hrefs = asset_hrefs(asset)
    if not hrefs:
        raise EotwinError(f"item {item_id}: asset {what} has no href")
    return resolve_href(hrefs[0], base)


def resolve_href(href: str, base: str | None) -> str:
    """An href relative to the item (a local file or a URL) made absolute."""
    if "://" in href or href.startswith("/") or base is None:
        return href
    if is_url(base):
        return urljoin(base, href)
    return str((Path(base).parent / href).resolve())


def _metadata_asset(item: dict, which: str) -> dict | None:
    key, title = METADATA_KEYS[which]
    if key in item["assets"]:
        return item["assets"][key]
    for asset in item["assets"].values():
        name = str(asset.get("title") or "") or Path(urlparse(str(asset.get("href", ""))).path).name
        if name == title or str(asset.get("href", "")).endswith("/" + title):
            return asset
    return None


def _radiometry_from_item(item: dict, assets: Mapping[str, dict]) -> tuple[float, dict[str, float]]:
    """Quantification and DN offsets from the bands' ``raster:scale``/``raster:offset`` (items without MTD_MSIL1C)."""
    from eotwin.sentinel2.windows import radiometry_of

    quant: set[float] = set()
    offsets = dict.fromkeys(S2_BANDS, 0.0)
    for band, asset in assets.items():
        scale, offset = radiometry_of(item, asset)
        if scale <= 0:
            raise EotwinError(f"item {item.get('id')}: band {band} has a non-positive raster:scale")
        quant.add(round(1.0 / scale, 6))
        offsets[band] = round(offset / scale, 6)
    if len(quant) != 1:
        raise EotwinError(f"item {item.get('id')}: the bands have different raster:scale values")
    return quant.pop(), offsets


# ----------------------------------------------------------------------------- the product
def open_stac_item(
    item: dict, source: str, resolution: int | None = None, access: RemoteAccess | None = None
) -> L1CProduct:
    """An L1C product from a STAC item dict; ``source`` is where the item came from (file path or URL)."""
    _check_resolution(resolution)
    access = access or RemoteAccess.resolve()
    item_id = str(item.get("id") or Path(source).stem)
    collection = str(item.get("collection") or "")
    level = str(item["properties"].get("processing:level") or item["properties"].get("product:type") or "")
    if "l2a" in collection.lower() or "2A" in level.upper():
        raise EotwinError(f"item {item_id}: a Level-2A item; atmospheric correction needs Level-1C input")
    base = source if is_url(source) or Path(source).exists() else None
    assets = band_assets(item)
    missing = [b for b in L2A_BANDS if b not in assets]
    if missing:
        raise EotwinError(
            f"item {item_id}: no asset for band {', '.join(missing)} (an L1C item has B01 ... B12, B8A)"
        )

    def first_href(asset: dict, what: str) -> str:
        return asset_href(item_id, asset, what, base)

    tile_asset = _metadata_asset(item, "tile")
    if tile_asset is None:
        raise EotwinError(f"item {item_id}: no granule_metadata asset (MTD_TL.xml, the angle grids)")
    tile_href = first_href(tile_asset, "granule_metadata")
    tile = parse_tile_metadata(fetch_bytes(access, tile_href, "MTD_TL.xml"), "MTD_TL.xml")
    product_asset = _metadata_asset(item, "product")
    meta: ProductMetadata | None = None
    if product_asset is not None:
        meta = parse_product_metadata(
            fetch_bytes(access, first_href(product_asset, "product_metadata"), "MTD_MSIL1C.xml"), "MTD_MSIL1C.xml"
        )
        if meta.level != "L1C":
            raise EotwinError(f"item {item_id}: a Level-2A product; atmospheric correction needs Level-1C input")
        quantification, offsets = meta.quantification, meta.offsets
    else:
        quantification, offsets = _radiometry_from_item(item, assets)
    bands = {b: BandSource(gdal_path(first_href(a, b))) for b, a in assets.items()}
    with remote_env(access):
        grid10, crs = _band_grid(bands["B02"].path, access)
    if crs is None or crs.to_epsg() is None or f"EPSG:{crs.to_epsg()}" != tile.crs_code:
        raise EotwinError(f"item {item_id}: band CRS {crs} does not match the tile metadata's {tile.crs_code}")
    grid = _grid_at(grid10, resolution or 10)
    props = item["properties"]
    spacecraft = meta.spacecraft if meta else normalise_sensor(str(props.get("platform", "")))
    return L1CProduct(
        source=str(source),
        kind=KIND,
        product_id=item_id,
        spacecraft=spacecraft,
        grid=grid,
        quantification=quantification,
        offsets=offsets,
        bands=bands,
        angles=tile.angles.crop(grid),
        datetime=(meta.start_time if meta else None) or props.get("datetime"),
        processing_baseline=(meta.processing_baseline if meta else None) or props.get("processing:version"),
        extra={"tile_crs": tile.crs_code, "mean_sun": tile.mean_sun, "remote_access": access},
        **_aux_atmosphere(tile_href, access),
    )


def aux_beside(tile_href: str, access: RemoteAccess, aux_name: str) -> bytes | None:
    """The L1C's ``AUX_DATA/<aux_name>`` GRIB (AUX_ECMWFT, AUX_CAMSFO) beside its ``MTD_TL.xml``: CDSE items
    list no asset for it, the SAFE in S3 has it. None where there is none (404, no such file)."""
    if not tile_href.endswith("MTD_TL.xml"):
        return None
    try:
        return fetch_bytes(access, tile_href.removesuffix("MTD_TL.xml") + f"AUX_DATA/{aux_name}", aux_name)
    except EotwinError as exc:
        if "(HTTP 404)" in str(exc) or "No such file" in str(exc):
            return None
        raise


def _aux_atmosphere(tile_href: str, access: RemoteAccess) -> dict:
    """The L1CProduct fields the auxiliary data beside ``MTD_TL.xml`` give: ECMWF ozone, CAMS forecast."""
    from eotwin.sentinel2.cams import read_cams
    from eotwin.sentinel2.ecmwf import read_total_ozone

    fields: dict = {}
    if (ecmwf := aux_beside(tile_href, access, "AUX_ECMWFT")) is not None:
        fields.update(ozone=read_total_ozone(ecmwf, name="AUX_ECMWFT"), ozone_source="ECMWF AUX_ECMWFT")
    if (cams := aux_beside(tile_href, access, "AUX_CAMSFO")) is not None:
        fields["cams"] = read_cams(cams, name="AUX_CAMSFO")
    return fields


def _band_grid(path: str, access: RemoteAccess):
    """(grid, CRS) of a remote band, its open tried again like every band read (a cut body is a decoder error)."""
    from eotwin.io.raster import grid_of, open_raster
    from eotwin.sentinel2.reading import retry_remote

    def read():
        with open_raster(path) as ds:
            return grid_of(ds), ds.crs

    return retry_remote(read, retries=access.endpoints.max_retries, backoff_s=access.endpoints.backoff_s,
                        what=f"opening {path}")


def open_item_source(
    source: str | Path, resolution: int | None = None, access: RemoteAccess | None = None
) -> L1CProduct:
    """``open_l1c`` for a STAC item JSON file or URL."""
    access = access or RemoteAccess.resolve()
    return open_stac_item(load_item(source, access), str(source), resolution, access)


def open_input(path: str | Path, resolution: int | None = None, *, access: RemoteAccess | None = None) -> L1CProduct:
    """The L1C product of a STAC item (a ``.json`` file or an http(s) URL) or of a SAFE or GeoTIFF stack.

    This dispatch lives here, not in :func:`eotwin.sentinel2.products.open_l1c`: the product reader does
    not know the remote items, so the two modules do not import each other.
    """
    _check_resolution(resolution)
    if looks_like_item(path):
        return open_item_source(path, resolution, access)
    return open_l1c(path, resolution)


def open_item_id(
    item_id: str, resolution: int | None = None, access: RemoteAccess | None = None,
    collection: str = L1C_COLLECTION,
) -> L1CProduct:
    """An L1C product from its id in the STAC API (``access.endpoints.stac_url``)."""
    access = access or RemoteAccess.resolve()
    item, url = fetch_item_by_id(access, item_id, collection)
    return open_stac_item(item, url, resolution, access)
