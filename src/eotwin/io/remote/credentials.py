"""Credentials for CDSE S3 and Earth Data Hub, from options, the environment or ``~/.netrc``; never printed.

A :class:`Secret` hides its value from ``str``/``repr``/f-strings, so a secret can travel through
logs, error messages and metadata without leaking; :func:`redact` scrubs known secrets from any text
that came from elsewhere (a GDAL or HTTP error message that echoes a URL with a token in it).
"""

from __future__ import annotations

import netrc
import os
from dataclasses import dataclass
from pathlib import Path

CDSE_S3_HOST = "eodata.dataspace.copernicus.eu"
EDH_HOST = "data.earthdatahub.destine.eu"


class Secret:
    """A string that never shows itself: ``str(secret)`` is ``'***'``; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("secret", self._value))


@dataclass(frozen=True)
class Credentials:
    s3_access_key: Secret | None = None
    s3_secret_key: Secret | None = None
    edh_token: Secret | None = None
    source: str = "none"  # where they came from, safe to print

    def secrets(self) -> list[str]:
        return [s.reveal() for s in (self.s3_access_key, self.s3_secret_key, self.edh_token) if s]


def _netrc_entry(host: str, path: Path | None) -> tuple[str, str] | None:
    path = path or Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if not path.exists():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return None
    if entry is None:
        return None
    login, _, password = entry
    return (login or "", password or "")


def resolve_credentials(*, s3_access_key: str | None = None, s3_secret_key: str | None = None,
                        edh_token: str | None = None, s3_host: str = CDSE_S3_HOST, edh_host: str = EDH_HOST,
                        netrc_path: Path | None = None, environ: dict[str, str] | None = None) -> Credentials:
    """Explicit values first, then environment variables, then ``~/.netrc`` (per host).

    Environment: ``CDSE_S3_ACCESS_KEY`` / ``CDSE_S3_SECRET_KEY`` (or ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY``) and ``EDH_TOKEN`` (or ``DESTINE_EDH_TOKEN``). netrc: ``machine
    eodata.dataspace.copernicus.eu login KEY password SECRET`` and ``machine data.earthdatahub.destine.eu
    login edh password TOKEN``.
    """
    env = os.environ if environ is None else environ
    sources = []
    key = s3_access_key or env.get("CDSE_S3_ACCESS_KEY") or env.get("AWS_ACCESS_KEY_ID")
    secret = s3_secret_key or env.get("CDSE_S3_SECRET_KEY") or env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        sources.append("options" if s3_access_key else "environment")
    else:
        entry = _netrc_entry(s3_host, netrc_path)
        if entry and entry[0] and entry[1]:
            key, secret = entry
            sources.append("netrc")
    token = edh_token or env.get("EDH_TOKEN") or env.get("DESTINE_EDH_TOKEN")
    if token:
        sources.append("options" if edh_token else "environment")
    else:
        entry = _netrc_entry(edh_host, netrc_path)
        if entry and entry[1]:
            token = entry[1]
            sources.append("netrc")
    return Credentials(Secret(key) if key else None, Secret(secret) if secret else None, Secret(token) if token else None,
                       "+".join(dict.fromkeys(sources)) or "none")


def read_secret_file(path: Path, what: str) -> str:
    """The secret in ``path`` (its first line, stripped): how a secret is given on a command line by name only."""
    from eotwin.errors import EotwinError

    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not readable text"
        raise EotwinError(f"{what} file {path}: {reason}") from None
    if not value:
        raise EotwinError(f"{what} file {path} is empty (the secret goes on its first line)")
    return value


def refuse_secret_on_argv(value: str | None, option: str, instead: str) -> None:
    """Refuse a secret given as an option's value: every user of the machine sees command lines (``ps``)."""
    from eotwin.errors import EotwinError

    if value is not None:
        raise EotwinError(f"{option} is not accepted: a command line is visible to every user in the process "
                          f"list; use {instead}")


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every known secret (and ``user:secret@`` URL credentials) replaced by ``***``."""
    import re

    for value in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(value, "***")
    return re.sub(r"(https?://[^:/@\s]+):[^@/\s]+@", r"\1:***@", text)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def strip_userinfo(url: str) -> tuple[str, str | None]:
    """``url`` without ``user:password@`` and the password it held (a token in a URL must not travel into metadata)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host)), parts.password


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port made explicit: what a token is bound to."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def token_may_go_to(url: str) -> bool:
    """A bearer of the EDH token: https only, except to this machine (loopback mirrors and tests)."""
    scheme, host, _ = origin(url)
    return scheme == "https" or (scheme == "http" and host in LOOPBACK_HOSTS)
