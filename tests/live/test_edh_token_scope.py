"""The EDH token goes to the DEM store's own origin over https (or loopback), never elsewhere, never into metadata."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from eotwin.cli.main import run
from eotwin.errors import EotwinError
from eotwin.io.remote.credentials import Credentials, Secret, strip_userinfo, token_may_go_to
from tests.live.conftest import ACCESS_KEY, EDH_TOKEN, SECRET_KEY
from tests.live.test_live_build import scene_bbox


class _Recorder(ThreadingHTTPServer):
    def __init__(self, redirect_to: str | None = None) -> None:
        seen: list[str | None] = []
        target = redirect_to

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                return

            def do_GET(self) -> None:
                seen.append(self.headers.get("Authorization"))
                if target:
                    self.send_response(302)
                    self.send_header("Location", target + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"hello"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)
        self.seen = seen
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_a_redirect_to_another_origin_does_not_carry_the_token():
    import asyncio

    import aiohttp

    from eotwin.io.remote.edh_dem import origin_bound_auth

    elsewhere = _Recorder()
    store = _Recorder(redirect_to=elsewhere.url)

    async def fetch() -> bytes:
        auth = origin_bound_auth(store.url + "/x.zarr", "edh", EDH_TOKEN)
        async with aiohttp.ClientSession(middlewares=(auth,)) as s, s.get(store.url + "/x.zarr/.zattrs") as response:
            return await response.read()

    try:
        assert asyncio.run(fetch()) == b"hello"
    finally:
        store.shutdown()
        elsewhere.shutdown()
    assert store.seen and store.seen[0] and store.seen[0].startswith("Basic ")  # the store itself gets it
    assert elsewhere.seen == [None]  # the other origin never does


def test_the_token_never_travels_over_plain_http_to_another_machine():
    from eotwin.io.remote.edh_dem import _open

    credentials = Credentials(edh_token=Secret(EDH_TOKEN))
    with pytest.raises(EotwinError, match="plain http") as info:
        _open("http://dem-mirror.example.org/GLO-30.zarr", credentials, 1.0)
    assert EDH_TOKEN not in str(info.value)
    assert token_may_go_to("https://data.earthdatahub.destine.eu/x") and token_may_go_to("http://127.0.0.1:8/x")
    assert not token_may_go_to("http://data.earthdatahub.destine.eu/x")


def test_strip_userinfo():
    assert strip_userinfo("https://edh:tok3n@host.example/a.zarr?x=1") == ("https://host.example/a.zarr?x=1", "tok3n")
    assert strip_userinfo("https://host.example/a.zarr") == ("https://host.example/a.zarr", None)
    assert strip_userinfo("/local/path@x") == ("/local/path@x", None)


def test_a_token_in_the_dem_url_is_used_but_never_written(world, servers, endpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CDSE_S3_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("CDSE_S3_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("EOTWIN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EOTWIN_S3_HTTPS", "NO")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("EDH_TOKEN", raising=False)
    dem_url = endpoints.dem_url.replace("http://", f"http://edh:{EDH_TOKEN}@")
    out = tmp_path / "out" / "c.laz"
    argv = ["-q", "pointcloud", "build", "--bbox", ",".join(map(str, scene_bbox(world))), "--date",
            "2024-07-01/2024-07-31", "--max-cloud", "50", "--stac-url", endpoints.stac_url, "--s3-endpoint",
            endpoints.s3_endpoint, "--dem-url", dem_url, "--no-viewer", "-o", str(out), "--json"]
    assert run(argv) == 0
    captured = capsys.readouterr()
    assert EDH_TOKEN not in captured.out + captured.err
    metadata = json.loads(captured.out)["metadata"]
    assert endpoints.dem_url in Path(metadata).read_text()  # the store is named, without its credentials
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        assert EDH_TOKEN.encode() not in path.read_bytes(), path
