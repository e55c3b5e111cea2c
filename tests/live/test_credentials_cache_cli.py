"""Credentials resolution and redaction, and the ``eotwin cache`` command."""

from __future__ import annotations

import json
from pathlib import Path

from eotwin.cli.main import run
from eotwin.io.remote.cache import Cache
from eotwin.io.remote.credentials import Secret, redact, resolve_credentials


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


SECRET_ON_ARGV = "argv-visible-secret-9f8e7d"


def _eotwin(*args: str, env_extra: dict[str, str] | None = None):
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "eotwin", *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_secret_given_on_the_command_line_is_refused_without_echoing_it(tmp_path):
    """``ps`` shows every command line to every user: secrets come from the environment, a file or ~/.netrc."""
    cases = [
        ("pointcloud", "build", "--bbox", "7,45,7.01,45.01", "--date", "2024-06-01", "--s3-secret-key", SECRET_ON_ARGV,
         "-o", str(tmp_path / "a.laz")),
        ("pointcloud", "build", "--bbox", "7,45,7.01,45.01", "--date", "2024-06-01", "--edh-token", SECRET_ON_ARGV,
         "-o", str(tmp_path / "b.laz")),
        ("atmocorr", "run", "--item-id", "S2A_X", "--s3-secret-key", SECRET_ON_ARGV, "-o", str(tmp_path / "c")),
    ]
    for argv in cases:
        done = _eotwin(*argv)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        option = argv[argv.index(SECRET_ON_ARGV) - 1]
        assert done.returncode != 0 and len(lines) == 1, done.stderr
        assert lines[0].startswith(f"error: {option} is not accepted") and "process list" in lines[0]
        assert SECRET_ON_ARGV not in done.stdout + done.stderr
        assert not list(tmp_path.iterdir())


def test_secret_files_are_read_and_a_bad_one_is_one_line(tmp_path):
    empty = tmp_path / "empty.secret"
    empty.write_text("\n")
    for path, cause in ((empty, "is empty"), (tmp_path / "missing.secret", "No such file")):
        done = _eotwin("pointcloud", "build", "--bbox", "7,45,7.01,45.01", "--date", "2024-06-01",
                       "--edh-token-file", str(path), "-o", str(tmp_path / "out" / "a.laz"))
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode != 0 and len(lines) == 1 and cause in lines[0] and "--edh-token-file" in lines[0]

    from eotwin.io.remote.credentials import read_secret_file

    good = tmp_path / "token.secret"
    good.write_text("  tok-123  \nsecond line ignored\n")
    assert read_secret_file(good, "--edh-token-file") == "tok-123"
