"""Service endpoints: the real DestinE/CDSE addresses by default, overridable for mirrors and loopback tests."""

from __future__ import annotations

import os
from dataclasses import dataclass

from eotwin.io.remote.credentials import CDSE_S3_HOST, EDH_HOST

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
            values["s3_endpoint"], https = parse_s3_endpoint(env["EOTWIN_S3_ENDPOINT"], "$EOTWIN_S3_ENDPOINT")
            if https is not None:
                values["s3_https"] = https
        if env.get("EOTWIN_S3_HTTPS"):
            values["s3_https"] = env["EOTWIN_S3_HTTPS"].lower() not in ("0", "no", "false")
        if env.get("EOTWIN_DEM_URL"):
            values["dem_url"] = env["EOTWIN_DEM_URL"]
        for name, field, kind in _NETWORK_ENV:  # a user on a bad network raises the retries for every service
            if env.get(name):
                values[field] = _number(name, env[name], kind)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(overrides.get("s3_endpoint"), str):
            overrides["s3_endpoint"], https = parse_s3_endpoint(overrides["s3_endpoint"])
            if https is not None:
                overrides.setdefault("s3_https", https)
        values.update(overrides)
        return cls(**values)


def parse_s3_endpoint(text: str, what: str = "--s3-endpoint") -> tuple[str, bool | None]:
    """(``host[:port]``, https?) of ``host[:port]`` or ``http(s)://host[:port]``: the one reading of
    ``--s3-endpoint`` (``pointcloud build``, ``atmocorr run``, ``atmocorr pairs``) and ``$EOTWIN_S3_ENDPOINT``.

    https? is None when no scheme is given (the default, ``$EOTWIN_S3_HTTPS``, decides); a path is dropped.
    """
    from urllib.parse import urlparse

    from eotwin.errors import EotwinError

    parsed = urlparse(text if "://" in text else f"//{text}")
    if parsed.scheme not in ("", "http", "https") or not parsed.netloc:
        raise EotwinError(f"{what} must be host[:port] or http(s)://host[:port], got {text!r}")
    return parsed.netloc, (parsed.scheme == "https" if parsed.scheme else None)


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
