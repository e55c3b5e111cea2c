"""Remote access resolved once: the endpoints and the keys every remote read of one command uses.

Options first, then ``EOTWIN_*`` / ``CDSE_S3_*`` / ``EDH_TOKEN`` environment variables, then ``~/.netrc``:
``pointcloud build``, ``atmocorr run`` and ``atmocorr pairs`` all resolve their access here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from eotwin.io.remote.credentials import Credentials, resolve_credentials
from eotwin.io.remote.endpoints import Endpoints


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
        dem_url: str | None = None,
        s3_access_key: str | None = None,
        s3_secret_key: str | None = None,
        edh_token: str | None = None,
        environ: Mapping[str, str] | None = None,
        **endpoint_overrides: object,
    ) -> RemoteAccess:
        """Options first, then ``EOTWIN_*`` / ``CDSE_S3_*`` / ``EDH_TOKEN`` environment variables, then ``~/.netrc``.

        ``s3_endpoint`` is ``host[:port]``; a ``http://`` or ``https://`` prefix sets the scheme
        (:func:`~eotwin.io.remote.endpoints.parse_s3_endpoint`). The S3 keys in ``~/.netrc`` are looked up under the
        endpoint's host.
        """
        endpoints = Endpoints.from_env(stac_url=stac_url, s3_endpoint=s3_endpoint, dem_url=dem_url,
                                       **endpoint_overrides)
        host = endpoints.s3_endpoint.split(":")[0]
        credentials = resolve_credentials(
            s3_access_key=s3_access_key,
            s3_secret_key=s3_secret_key,
            edh_token=edh_token,
            s3_host=host,
            environ=None if environ is None else dict(environ),
        )
        return cls(endpoints, credentials)

    @property
    def secrets(self) -> list[str]:
        return self.credentials.secrets()
