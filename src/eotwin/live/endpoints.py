"""Service endpoints: the real DestinE/CDSE addresses by default, overridable for mirrors and loopback tests."""

from __future__ import annotations

import os
from dataclasses import dataclass

from eotwin.live.credentials import CDSE_S3_HOST, EDH_HOST

CDSE_STAC_URL = "https://stac.dataspace.copernicus.eu/v1"
EDH_GLO30_URL = f"https://{EDH_HOST}/copernicus-dem/GLO-30-v0.zarr"
EDH_GLO90_URL = f"https://{EDH_HOST}/copernicus-dem/GLO-90-v1.zarr"
EDH_UTM_URL = f"https://{EDH_HOST}/copernicus-dem-utm/GLO-30-UTM-v0/{{zone}}"


@dataclass(frozen=True)
class Endpoints:
    stac_url: str = CDSE_STAC_URL
    s3_endpoint: str = CDSE_S3_HOST  # host[:port], path-style addressing
    s3_https: bool = True
    dem_url: str = EDH_GLO30_URL
    timeout_s: float = 30.0
    max_retries: int = 5
    backoff_s: float = 0.5
    gdal_block_cache: bool = True  # GDAL keeps fetched byte ranges for the process; off to observe every request

    @classmethod
    def from_env(cls, **overrides) -> Endpoints:
        """Defaults, then ``EOTWIN_STAC_URL``, ``EOTWIN_S3_ENDPOINT``, ``EOTWIN_S3_HTTPS``, ``EOTWIN_DEM_URL`` and
        ``EOTWIN_HTTP_MAX_RETRIES``, ``EOTWIN_HTTP_TIMEOUT_S``, ``EOTWIN_HTTP_BACKOFF_S``, then ``overrides``."""
        values = {}
        env = os.environ
        if env.get("EOTWIN_STAC_URL"):
            values["stac_url"] = env["EOTWIN_STAC_URL"]
        if env.get("EOTWIN_S3_ENDPOINT"):
            values["s3_endpoint"] = env["EOTWIN_S3_ENDPOINT"]
        if env.get("EOTWIN_S3_HTTPS"):
            values["s3_https"] = env["EOTWIN_S3_HTTPS"].lower() not in ("0", "no", "false")
        if env.get("EOTWIN_DEM_URL"):
            values["dem_url"] = env["EOTWIN_DEM_URL"]
        for name, field, kind in _NETWORK_ENV:  # a user on a bad network raises the retries for every service
            if env.get(name):
                values[field] = _number(name, env[name], kind)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


_NETWORK_ENV = (("EOTWIN_HTTP_MAX_RETRIES", "max_retries", int), ("EOTWIN_HTTP_TIMEOUT_S", "timeout_s", float),
                ("EOTWIN_HTTP_BACKOFF_S", "backoff_s", float))


def _number(name: str, text: str, kind: type) -> float:
    """A non-negative number from environment variable ``name``; one line naming it when it is not one."""
    from eotwin.errors import EotwinError

    try:
        value = kind(text)
    except ValueError:
        raise EotwinError(f"${name} must be a {'whole ' if kind is int else ''}number, got {text!r}") from None
    if not value >= 0 or value == float("inf") or (kind is int and value > 100):
        raise EotwinError(f"${name} must be between 0 and {100 if kind is int else 'a finite number'}, got {text!r}")
    return value


MAX_RETRY_AFTER_S = 30.0  # a server may ask for any wait; a user waits this long at most per retry
MAX_FETCH_BYTES = 64 * 2**20  # items and metadata are kilobytes; anything far larger is not what we asked for
FETCH_DEADLINE_S = 300.0  # one fetch, retries included: a server dripping a byte per timeout never hangs a run
MAX_SEARCH_ITEMS = 5_000  # STAC paging stops here: a query this broad is narrowed by the user, not paged forever


def http_retry(endpoints: Endpoints):
    """The one retry policy for HTTP (STAC API, metadata): transient statuses, backoff, Retry-After capped."""
    from urllib3.util.retry import Retry

    class CappedRetry(Retry):
        def get_retry_after(self, response):
            after = super().get_retry_after(response)
            return None if after is None else min(after, MAX_RETRY_AFTER_S)

    return CappedRetry(total=endpoints.max_retries, backoff_factor=endpoints.backoff_s,
                       status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None, raise_on_status=False)
