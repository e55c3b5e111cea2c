"""Small HTTP and S3 fetches (items, XML metadata): retried, signed, capped in size and time, one-line errors.

Statuses are retried by urllib3 (:func:`~eotwin.io.remote.retry.http_retry`); cut or timed-out transfers are
retried here. A body is refused past :data:`MAX_FETCH_BYTES` and a fetch past :data:`FETCH_DEADLINE_S`, retries
included; S3 GETs are signed with AWS Signature V4 when keys are given. Secrets never reach a message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from eotwin.errors import EotwinError
from eotwin.io.remote.access import RemoteAccess
from eotwin.io.remote.credentials import Credentials, redact
from eotwin.io.remote.endpoints import Endpoints
from eotwin.io.remote.retry import http_retry, tries

S3_REGION = "us-east-1"  # CDSE ignores the region; SigV4 needs one (GDAL and rasterio use this default)
MAX_FETCH_BYTES = 64 * 2**20  # items and metadata are kilobytes; anything far larger is not what we asked for
FETCH_DEADLINE_S = 300.0  # one fetch, retries included: a server dripping a byte per timeout never hangs a run


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


def session(endpoints: Endpoints):
    """A ``requests`` session retrying transient statuses with the one policy."""
    import requests
    from requests.adapters import HTTPAdapter

    retry = http_retry(endpoints)
    result = requests.Session()
    result.mount("http://", HTTPAdapter(max_retries=retry))
    result.mount("https://", HTTPAdapter(max_retries=retry))
    return result


NO_KEYS = ("no S3 keys found (give --s3-access-key and --s3-secret-key-file, set CDSE_S3_ACCESS_KEY and "
           "CDSE_S3_SECRET_KEY, or add the endpoint's host to ~/.netrc)")


def refusal(credentials: Credentials, status: int, s3: bool) -> str:
    """What a 401/403 means for this kind of href and these credentials."""
    word = "unauthorised" if status == 401 else "access denied"
    if not s3:
        return f"{word}: this https href needs a login (CDSE's need an OIDC token; its s3:// hrefs need S3 keys)"
    if not (credentials.s3_access_key and credentials.s3_secret_key):
        return f"{word}: {NO_KEYS}"
    return f"{word}: check the S3 keys"


def _get(access: RemoteAccess, url: str, what: str, headers: Callable[[], dict[str, str]] | None = None,
         s3: bool = False) -> bytes:
    """GET ``url`` with retries (statuses by urllib3; cut or timed-out transfers here); one-line errors."""
    import requests
    import urllib3

    endpoints = access.endpoints
    deadline = time.monotonic() + FETCH_DEADLINE_S
    with session(endpoints) as http:
        for attempt, last in tries(endpoints.max_retries, endpoints.backoff_s):
            try:
                with http.get(url, headers=headers() if headers else None, timeout=endpoints.timeout_s,
                              stream=True) as response:
                    if response.status_code >= 400:
                        code = response.status_code
                        meaning = refusal(access.credentials, code, s3) if code in (401, 403) else (
                            "not found" if code == 404 else "request failed")
                        raise EotwinError(f"{what}: {meaning} (HTTP {code})")
                    return _bounded_body(response, what, MAX_FETCH_BYTES, deadline)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    urllib3.exceptions.HTTPError) as exc:  # the body is read from urllib3 directly
                if last or time.monotonic() > deadline:
                    raise EotwinError(
                        f"{what}: {redact(type(exc).__name__, access.secrets)} after {attempt + 1} attempts"
                    ) from None
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
