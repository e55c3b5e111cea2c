"""One reading of ``--s3-endpoint`` for ``pointcloud build``, ``atmocorr run`` and ``atmocorr pairs``."""

from __future__ import annotations

import pytest

from eotwin.cli.main import run
from eotwin.errors import EotwinError
from eotwin.io.remote.access import RemoteAccess
from eotwin.io.remote.endpoints import Endpoints, parse_s3_endpoint


@pytest.mark.parametrize("text,expected", [
    ("eodata.dataspace.copernicus.eu", ("eodata.dataspace.copernicus.eu", None)),
    ("127.0.0.1:9000", ("127.0.0.1:9000", None)),
    ("http://127.0.0.1:9000", ("127.0.0.1:9000", False)),
    ("https://s3.example.org", ("s3.example.org", True)),
    ("https://s3.example.org:8443/ignored/path", ("s3.example.org:8443", True)),
])
def test_the_accepted_forms(text, expected):
    assert parse_s3_endpoint(text) == expected


@pytest.mark.parametrize("text", ["ftp://x", "http://", "s3://bucket", ""])
def test_other_forms_are_one_line_errors(text):
    with pytest.raises(EotwinError, match=r"^--s3-endpoint must be host\[:port\] or http\(s\)://host\[:port\]"):
        parse_s3_endpoint(text)


def test_a_scheme_sets_https_and_a_bare_host_keeps_the_default(monkeypatch):
    monkeypatch.delenv("EOTWIN_S3_ENDPOINT", raising=False)
    monkeypatch.delenv("EOTWIN_S3_HTTPS", raising=False)
    assert Endpoints.from_env(s3_endpoint="http://h:9000") == Endpoints(s3_endpoint="h:9000", s3_https=False)
    assert Endpoints.from_env(s3_endpoint="h:9000") == Endpoints(s3_endpoint="h:9000", s3_https=True)
    monkeypatch.setenv("EOTWIN_S3_HTTPS", "NO")
    assert Endpoints.from_env(s3_endpoint="h:9000").s3_https is False
    assert Endpoints.from_env(s3_endpoint="https://h:9000").s3_https is True  # the option's scheme wins
    monkeypatch.setenv("EOTWIN_S3_ENDPOINT", "http://e:1")
    monkeypatch.delenv("EOTWIN_S3_HTTPS")
    assert Endpoints.from_env() == Endpoints(s3_endpoint="e:1", s3_https=False)
    monkeypatch.setenv("EOTWIN_S3_ENDPOINT", "ftp://e")
    with pytest.raises(EotwinError, match=r"^\$EOTWIN_S3_ENDPOINT must be"):
        Endpoints.from_env()


def test_access_looks_up_netrc_keys_under_the_endpoint_host(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine s3.example.org login NETRCKEY password NETRCSECRET\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    access = RemoteAccess.resolve(s3_endpoint="http://s3.example.org:9000", environ={})
    assert access.endpoints.s3_endpoint == "s3.example.org:9000" and access.endpoints.s3_https is False
    assert access.credentials.source == "netrc" and "NETRCSECRET" not in repr(access)
    assert RemoteAccess.resolve(s3_endpoint="other.example.org", environ={}).credentials.source == "none"


@pytest.mark.parametrize("command", [
    ["pointcloud", "build", "--bbox", "10,46,10.01,46.01", "--date", "2024-07-01", "-o", "{tmp}/c.laz"],
    ["atmocorr", "run", "--item-id", "S2A_MSIL1C_X", "-o", "{tmp}/out"],
    ["atmocorr", "pairs", "--bbox", "10,46,10.01,46.01", "--date", "2024-07-01", "-o", "{tmp}/pairs"],
])
def test_every_command_refuses_a_bad_endpoint_the_same_way(tmp_path, capsys, monkeypatch, command):
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    code = run(["-q", *args, "--stac-url", "http://127.0.0.1:9", "--s3-endpoint", "ftp://x"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1, lines
    assert "--s3-endpoint must be host[:port] or http(s)://host[:port], got 'ftp://x'" in lines[0]
