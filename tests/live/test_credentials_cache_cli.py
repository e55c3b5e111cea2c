"""Credentials resolution and redaction, and the ``eotwin cache`` command."""

from __future__ import annotations

import json
from pathlib import Path

from eotwin.cli.main import run
from eotwin.live.cache import Cache
from eotwin.live.credentials import Secret, redact, resolve_credentials


def test_explicit_then_environment_then_netrc(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine eodata.dataspace.copernicus.eu login NETKEY password NETSECRET\n"
                     "machine data.earthdatahub.destine.eu login edh password NETTOKEN\n")
    netrc.chmod(0o600)
    from_netrc = resolve_credentials(netrc_path=netrc, environ={})
    assert from_netrc.s3_access_key.reveal() == "NETKEY" and from_netrc.edh_token.reveal() == "NETTOKEN"
    assert from_netrc.source == "netrc"
    env = {"CDSE_S3_ACCESS_KEY": "ENVKEY", "CDSE_S3_SECRET_KEY": "ENVSECRET", "EDH_TOKEN": "ENVTOKEN"}
    from_env = resolve_credentials(netrc_path=netrc, environ=env)
    assert from_env.s3_secret_key.reveal() == "ENVSECRET" and from_env.edh_token.reveal() == "ENVTOKEN"
    explicit = resolve_credentials(s3_access_key="K", s3_secret_key="S", edh_token="T", netrc_path=netrc, environ=env)
    assert (explicit.s3_access_key.reveal(), explicit.edh_token.reveal()) == ("K", "T")
    assert resolve_credentials(netrc_path=tmp_path / "none", environ={}).source == "none"


def test_secrets_never_print_themselves():
    secret = Secret("hunter2-token")
    assert str(secret) == repr(secret) == f"{secret}" == "***"
    assert "hunter2" not in str({"token": secret}) and "hunter2" not in f"{[secret]!r}"
    text = "GET https://edh:hunter2-token@data.earthdatahub.destine.eu/x failed; key hunter2-token"
    assert redact(text, ["hunter2-token"]) == "GET https://edh:***@data.earthdatahub.destine.eu/x failed; key ***"
    assert redact("https://user:pw@host/a", []) == "https://user:***@host/a"


def test_cache_command_reports_and_clears(tmp_path, monkeypatch, capsys):
    root = tmp_path / "cache"
    monkeypatch.setenv("EOTWIN_CACHE_DIR", str(root))
    source = tmp_path / "x.tif"
    source.write_bytes(b"0123456789")
    cache = Cache(root)
    cache.put("s2", "ab" * 16, source)
    cache.put("dem", "cd" * 16, source)
    assert run(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 2 and info["by_kind"] == {"s2": 1, "dem": 1} and info["bytes"] == 20
    assert run(["cache", "clear", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == 2
    assert root.is_dir() and not any(root.iterdir())  # the cache's own folders are gone, the root stays


def test_cache_clear_deletes_only_its_own_entries(tmp_path, monkeypatch, capsys):
    """``EOTWIN_CACHE_DIR=$HOME`` must not delete the home folder, nor the DeltaTwin environments beside the cache."""
    home = tmp_path / "home"
    keep = [home / "notes.txt", home / "s2" / "thesis.tex", home / "dem" / "ab" / "photo.jpg",
            home / "deltatwin-envs" / "k" / "bin" / "python", home / "stac" / "zz" / ("ef" * 16 + ".json")]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    monkeypatch.setenv("EOTWIN_CACHE_DIR", str(home))
    source = tmp_path / "x.tif"
    source.write_bytes(b"0123456789")
    entry = Cache(home).put("dem", "ab" * 16, source)
    leftover = entry.parent / f".{'ab' * 16}.x1y2.part.tif"
    leftover.write_bytes(b"half")
    assert run(["cache", "clear", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == 1
    assert not entry.exists() and not Path(str(entry) + ".sha256").exists() and not leftover.exists()
    assert all(path.read_text() == "mine" for path in keep)
