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
        """Defaults, then ``EOTWIN_STAC_URL``, ``EOTWIN_S3_ENDPOINT``, ``EOTWIN_S3_HTTPS``, ``EOTWIN_DEM_URL``, then ``overrides``."""
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
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
