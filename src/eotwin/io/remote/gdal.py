"""The one GDAL environment for remote reads: CDSE's S3 (path-style) and HTTPS, retries, keys, one-line errors.

Every remote raster read (the live point cloud's windows, an L1C STAC item's bands) goes through
:func:`gdal_env`: GDAL gets the endpoints' retry and timeout settings and the keys through rasterio's AWS
session (never through our options or logs); GDAL's per-request HTTP warnings become debug output; an error
comes out as one line that says what to check, with every secret scrubbed.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

import rasterio

from eotwin.errors import EotwinError
from eotwin.io.remote.credentials import Credentials, redact
from eotwin.io.remote.endpoints import Endpoints
from eotwin.io.remote.http import refusal


def gdal_path(href: str) -> str:
    """``s3://bucket/key`` -> ``/vsis3/bucket/key``; ``https://...`` -> ``/vsicurl/https://...``; files as they are."""
    if href.startswith("s3://"):
        return "/vsis3/" + href[len("s3://"):]
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    return href.removeprefix("file://")


def gdal_options(endpoints: Endpoints) -> dict:
    """GDAL configuration for CDSE's S3 (path-style) with retries on 429/5xx and a timeout (no credentials)."""
    options = {
        "AWS_S3_ENDPOINT": endpoints.s3_endpoint,
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_HTTPS": "YES" if endpoints.s3_https else "NO",
        "GDAL_HTTP_MAX_RETRY": str(endpoints.max_retries),
        "GDAL_HTTP_RETRY_DELAY": str(endpoints.backoff_s),
        "GDAL_HTTP_TIMEOUT": str(int(max(1, endpoints.timeout_s))),
        "GDAL_HTTP_CONNECTTIMEOUT": str(int(max(1, endpoints.timeout_s))),
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_USE_HEAD": "NO",
        "VSI_CACHE": "TRUE",
    }
    if not endpoints.gdal_block_cache:
        options["CPL_VSIL_CURL_NON_CACHED"] = "/vsis3/:/vsicurl/"
        options["VSI_CACHE"] = "FALSE"
    return options


def s3_session(endpoints: Endpoints, credentials: Credentials):
    """rasterio's AWS session: GDAL gets the keys from it (never from our logs or options)."""
    from rasterio.session import AWSSession

    if credentials.s3_access_key and credentials.s3_secret_key:
        return AWSSession(aws_access_key_id=credentials.s3_access_key.reveal(),
                          aws_secret_access_key=credentials.s3_secret_key.reveal(), region_name="us-east-1",
                          endpoint_url=endpoints.s3_endpoint)
    return AWSSession(aws_unsigned=True, endpoint_url=endpoints.s3_endpoint)


_DENIED = re.compile(r"\b(401|403)\b|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|Forbidden|Unauthorized")
_NOT_FOUND = re.compile(r"HTTP response code: 404\b")
_REMOTE_PATH = re.compile(r"/vsis3/[^\s:]+|/vsicurl/https?://\S+?(?=:\s|:$|\s|$)")


def explain_remote_error(credentials: Credentials, message: str) -> str:
    """A GDAL/S3 refusal (401, 403) or a missing object (404) as one line that says what to check (the object's
    path kept, the details dropped).

    Only messages about a remote read (a ``/vsis3/`` or ``/vsicurl/`` path, or an HTTP/AWS response) change.
    """
    path = _REMOTE_PATH.search(message)
    if not (path or "HTTP" in message or "AWS" in message):
        return message
    where = path.group(0) if path else "remote read"
    found = _DENIED.search(message)
    if not found:
        return f"{where}: not found (HTTP 404)" if _NOT_FOUND.search(message) else message
    s3 = where.startswith("/vsis3/") or (not path and "AWS" in message)
    status = 401 if found.group(0) in ("401", "Unauthorized") else 403
    return f"{where}: {refusal(credentials, status, s3=s3)} (HTTP {status})"


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
def gdal_env(endpoints: Endpoints, credentials: Credentials, *, block_cache_mb: int | None = None,
             keep_fetched: bool = True) -> Iterator[None]:
    """A rasterio environment for remote reads; GDAL errors come out as one line with secrets scrubbed.

    ``block_cache_mb`` caps GDAL's block cache (by default 5 % of the machine's RAM, which in a container is the
    host's): a reader that reads each window once, whole, keeps it small. ``keep_fetched=False`` drops what GDAL
    fetched when the dataset that fetched it closes, not at the end of the process: a body cut short (which GDAL
    keeps and decodes as garbage) is then gone once a reader reopens the band to try again.
    """
    logger = logging.getLogger("rasterio._env")
    demote = _DemoteGdalHttpMessages(logger)
    logger.addFilter(demote)
    options: dict = gdal_options(endpoints)
    if not keep_fetched:
        options.setdefault("CPL_VSIL_CURL_NON_CACHED", "/vsis3/:/vsicurl/")
    if block_cache_mb is not None:
        options["GDAL_CACHEMAX"] = block_cache_mb * 2**20  # bytes: see eotwin.io.raster.gdal_cache_env
    try:
        with rasterio.Env(session=s3_session(endpoints, credentials), **options):
            yield
    except EotwinError as exc:
        raise EotwinError(explain_remote_error(credentials, redact(str(exc), credentials.secrets()))) from None
    finally:
        logger.removeFilter(demote)
