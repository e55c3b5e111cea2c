"""A CDSE STAC Sentinel-2 L1C item as input of atmospheric correction (I/O layer).

The item is a local JSON file, an http(s) URL, or an id looked up in a STAC API (collection
``sentinel-2-l1c``). It gives the same :class:`~eotwin.sentinel2.products.L1CProduct` a SAFE gives:

- bands: the assets ``B01`` ... ``B12``, ``B8A`` (``B10`` optional), read by GDAL through ``/vsis3/``
  (CDSE S3, path-style, keys from the live layer) or ``/vsicurl/``; an asset's ``s3://`` href is
  preferred to its ``alternate`` https href (CDSE's "zipper" needs an OIDC token);
- radiometry: the ``product_metadata`` asset (``MTD_MSIL1C.xml``: quantification value and
  ``RADIO_ADD_OFFSET`` per band), else the band assets' ``raster:scale`` / ``raster:offset``;
- angles: the ``granule_metadata`` asset (``MTD_TL.xml``), the 5 km grids interpolated per pixel
  exactly as for a SAFE.

The XML assets are fetched with ``requests`` (S3 requests signed with AWS Signature V4), retrying
429/5xx and cut connections; GDAL retries the band reads itself. Secrets never reach a message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin, urlparse

from eotwin.errors import EotwinError
from eotwin.live.credentials import Credentials, redact, resolve_credentials
from eotwin.live.endpoints import Endpoints
from eotwin.sentinel2.bands import L2A_BANDS, NATIVE_RESOLUTION, S2_BANDS, normalise_sensor
from eotwin.sentinel2.metadata import ProductMetadata, parse_product_metadata, parse_tile_metadata
from eotwin.sentinel2.products import BandSource, L1CProduct, _check_resolution, _grid_at, open_l1c

L1C_COLLECTION = "sentinel-2-l1c"
KIND = "STAC item"
S3_REGION = "us-east-1"  # CDSE ignores the region; SigV4 needs one (GDAL and rasterio use this default)
METADATA_KEYS = {"product": ("product_metadata", "MTD_MSIL1C.xml"), "tile": ("granule_metadata", "MTD_TL.xml")}


# ----------------------------------------------------------------------------- access (endpoints + keys)
@dataclass(frozen=True)
class RemoteAccess:
    """Where the services are and the keys to use (the keys are :class:`Secret` and never print)."""

    endpoints: Endpoints
    credentials: Credentials

    @classmethod
    def resolve(
        cls,
        *,
        stac_url: str | None = None,
        s3_endpoint: str | None = None,
        s3_access_key: str | None = None,
        s3_secret_key: str | None = None,
        environ: Mapping[str, str] | None = None,
        **endpoint_overrides: object,
    ) -> RemoteAccess:
        """Options first, then ``EOTWIN_*`` / ``CDSE_S3_*`` environment variables, then ``~/.netrc``.

        ``s3_endpoint`` is ``host[:port]``; a ``http://`` or ``https://`` prefix sets the scheme.
        """
        overrides: dict[str, object] = dict(endpoint_overrides)
        if s3_endpoint:
            parsed = urlparse(s3_endpoint if "://" in s3_endpoint else f"//{s3_endpoint}")
            if parsed.scheme not in ("", "http", "https") or not parsed.netloc:
                raise EotwinError(f"--s3-endpoint must be host[:port] or http(s)://host[:port], got {s3_endpoint!r}")
            overrides["s3_endpoint"] = parsed.netloc
            if parsed.scheme:
                overrides["s3_https"] = parsed.scheme == "https"
        endpoints = Endpoints.from_env(stac_url=stac_url, **overrides)
        host = endpoints.s3_endpoint.split(":")[0]
        credentials = resolve_credentials(
            s3_access_key=s3_access_key,
            s3_secret_key=s3_secret_key,
            s3_host=host,
            environ=None if environ is None else dict(environ),
        )
        return cls(endpoints, credentials)

    @property
    def secrets(self) -> list[str]:
        return self.credentials.secrets()


def _scrub(access: RemoteAccess, text: str) -> str:
    return redact(text, access.secrets)


# ----------------------------------------------------------------------------- HTTP and S3 fetches
def sigv4_headers(
    access_key: str, secret_key: str, host: str, path: str, *, now: dt.datetime | None = None, region: str = S3_REGION
) -> dict[str, str]:
    """AWS Signature V4 headers of an S3 GET of ``path`` (already URI-encoded, ``/bucket/key``) at ``host``."""
    now = now or dt.datetime.now(dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload = hashlib.sha256(b"").hexdigest()
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join(
        ["GET", path, "", f"host:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n", signed, payload]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Host": host,
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}",
    }


def _session(endpoints: Endpoints):
    import requests
    from requests.adapters import HTTPAdapter

    from eotwin.live.endpoints import http_retry

    retry = http_retry(endpoints)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


NO_KEYS = ("no S3 keys found (give --s3-access-key and --s3-secret-key-file, set CDSE_S3_ACCESS_KEY and "
           "CDSE_S3_SECRET_KEY, or add the endpoint's host to ~/.netrc)")


def _refusal(access: RemoteAccess, status: int, s3: bool) -> str:
    """What a 401/403 means for this kind of href and these credentials."""
    word = "unauthorised" if status == 401 else "access denied"
    if not s3:
        return f"{word}: this https href needs a login (CDSE's need an OIDC token; its s3:// hrefs need S3 keys)"
    if not (access.credentials.s3_access_key and access.credentials.s3_secret_key):
        return f"{word}: {NO_KEYS}"
    return f"{word}: check the S3 keys"


def _get(access: RemoteAccess, url: str, what: str, headers: Callable[[], dict[str, str]] | None = None,
         s3: bool = False) -> bytes:
    """GET ``url`` with retries (statuses by urllib3; cut or timed-out transfers here); one-line errors."""
    import requests
    import urllib3

    from eotwin.live.endpoints import FETCH_DEADLINE_S, MAX_FETCH_BYTES

    endpoints = access.endpoints
    delay = endpoints.backoff_s
    deadline = time.monotonic() + FETCH_DEADLINE_S
    with _session(endpoints) as session:
        for attempt in range(endpoints.max_retries + 1):
            try:
                with session.get(url, headers=headers() if headers else None, timeout=endpoints.timeout_s,
                                 stream=True) as response:
                    if response.status_code >= 400:
                        code = response.status_code
                        meaning = _refusal(access, code, s3) if code in (401, 403) else (
                            "not found" if code == 404 else "request failed")
                        raise EotwinError(f"{what}: {meaning} (HTTP {code})")
                    return _bounded_body(response, what, MAX_FETCH_BYTES, deadline)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    urllib3.exceptions.HTTPError) as exc:  # the body is read from urllib3 directly
                if attempt == endpoints.max_retries or time.monotonic() > deadline:
                    raise EotwinError(
                        f"{what}: {_scrub(access, type(exc).__name__)} after {attempt + 1} attempts"
                    ) from None
                time.sleep(delay)
                delay *= 2
    raise AssertionError("unreachable")


def _bounded_body(response, what: str, limit: int, deadline: float) -> bytes:
    """The body, refused past ``limit`` bytes (declared or received) or past the fetch's ``deadline``."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise EotwinError(f"{what}: the server announces {int(declared):,} bytes, more than the {limit:,} "
                          "a metadata file may have")
    chunks, size = [], 0
    while chunk := response.raw.read1(1 << 16, decode_content=True):  # what has arrived: a drip is noticed at once
        size += len(chunk)
        if size > limit:
            raise EotwinError(f"{what}: more than {limit:,} bytes, more than a metadata file may have")
        if time.monotonic() > deadline:
            raise EotwinError(f"{what}: the transfer ran past its deadline (a server sending too slowly)")
        chunks.append(chunk)
    return b"".join(chunks)


def fetch_bytes(access: RemoteAccess, href: str, what: str) -> bytes:
    """The bytes of an ``s3://``, ``http(s)://`` or local href (small files: XML metadata, items)."""
    if href.startswith("s3://"):
        bucket, _, key = href[len("s3://") :].partition("/")
        endpoints = access.endpoints
        path = "/" + quote(bucket) + "/" + quote(key)
        url = f"{'https' if endpoints.s3_https else 'http'}://{endpoints.s3_endpoint}{path}"
        creds = access.credentials
        if creds.s3_access_key and creds.s3_secret_key:
            key_id, secret = creds.s3_access_key.reveal(), creds.s3_secret_key.reveal()
            return _get(access, url, what, lambda: sigv4_headers(key_id, secret, endpoints.s3_endpoint, path), s3=True)
        return _get(access, url, what, s3=True)
    if href.startswith(("http://", "https://")):
        return _get(access, href, what)
    path = Path(href.removeprefix("file://"))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EotwinError(f"{what}: cannot read {path} ({exc.strerror or exc})") from None


_DENIED = re.compile(r"\b(401|403)\b|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|Forbidden|Unauthorized")
_REMOTE_PATH = re.compile(r"/vsis3/[^\s:]+|/vsicurl/https?://\S+?(?=:\s|:$|\s|$)")


def explain_remote_error(access: RemoteAccess, message: str) -> str:
    """A GDAL/S3 refusal as one line that says what to check (the object's path kept, the details dropped).

    Only messages about a remote read (a ``/vsis3/`` or ``/vsicurl/`` path, or an HTTP/AWS response) change.
    """
    path = _REMOTE_PATH.search(message)
    found = _DENIED.search(message)
    if not found or not (path or "HTTP" in message or "AWS" in message):
        return message
    where = path.group(0) if path else "remote read"
    s3 = where.startswith("/vsis3/") or (not path and "AWS" in message)
    status = 401 if found.group(0) in ("401", "Unauthorized") else 403
    return f"{where}: {_refusal(access, status, s3=s3)} (HTTP {status})"


class _DemoteGdalHttpMessages(logging.Filter):
    """GDAL's per-request HTTP warnings (retries, status codes) are debug output (shown with ``-vv``): our own
    one-line errors say what failed."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and ("HTTP" in record.getMessage() or "CURL" in record.getMessage()):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.logger.isEnabledFor(logging.DEBUG)
        return True


@contextlib.contextmanager
def gdal_env(access: RemoteAccess) -> Iterator[None]:
    """GDAL configured for the object store (keys through rasterio's AWS session); errors scrubbed of secrets."""
    import rasterio

    from eotwin.live.s2 import gdal_options, s3_session

    logger = logging.getLogger("rasterio._env")
    demote = _DemoteGdalHttpMessages(logger)
    logger.addFilter(demote)
    try:
        options = gdal_options(access.endpoints)
        # what GDAL fetched lives as long as the dataset that fetched it, not the process: a body cut short
        # (which GDAL keeps and decodes as garbage) is gone once the reader reopens the band to try again
        options.setdefault("CPL_VSIL_CURL_NON_CACHED", "/vsis3/:/vsicurl/")
        with rasterio.Env(session=s3_session(access.endpoints, access.credentials), **options):
            yield
    except EotwinError as exc:
        raise EotwinError(explain_remote_error(access, _scrub(access, str(exc)))) from None
    finally:
        logger.removeFilter(demote)


def read_retries(product: L1CProduct) -> dict[str, float]:
    """``BandReader`` retry settings for the product's bands: the endpoints' policy when remote, none when local."""
    access = product.extra.get("remote_access")
    if not isinstance(access, RemoteAccess):
        return {}
    return {"retries": access.endpoints.max_retries, "backoff_s": access.endpoints.backoff_s}


def product_env(product: L1CProduct) -> contextlib.AbstractContextManager:
    """The GDAL environment the product's bands need while they are opened and read (none for local files)."""
    access = product.extra.get("remote_access")
    return gdal_env(access) if isinstance(access, RemoteAccess) else contextlib.nullcontext()


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
    from pystac_client import Client
    from pystac_client.exceptions import APIError
    from requests.exceptions import RequestException

    from eotwin.live.stac import _stac_io

    url = access.endpoints.stac_url
    try:
        client = Client.open(url, stac_io=_stac_io(access.endpoints))
        found = client.search(collections=[collection], ids=[item_id], max_items=1000, method="POST")
        items = [it for page in found.pages_as_dicts() for it in page.get("features", []) if it.get("id") == item_id]
    except APIError as exc:
        status = getattr(exc, "status_code", None)
        raise EotwinError(
            f"STAC search at {url} failed{f' (HTTP {status})' if status else ''}: "
            f"{_scrub(access, str(exc).splitlines()[0][:200])}"
        ) from None
    except RequestException as exc:
        raise EotwinError(f"STAC search at {url} failed: {type(exc).__name__}") from None
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


def gdal_path(href: str) -> str:
    from eotwin.live.s2 import gdal_path as live_gdal_path

    return live_gdal_path(href)


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
    from eotwin.live.s2 import radiometry_of

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
    with gdal_env(access):
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
    )


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
