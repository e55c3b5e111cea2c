"""HTTP fetches are bounded: Retry-After capped, bodies capped by size and by a total deadline, search pages capped."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from eotwin.errors import EotwinError
from eotwin.io.remote import http as http_module
from eotwin.io.remote.credentials import Credentials
from eotwin.io.remote.endpoints import Endpoints
from eotwin.io.remote.retry import MAX_RETRY_AFTER_S, http_retry
from tests.live.test_live_build import scene_bbox


def test_retry_after_is_capped():
    from urllib3 import HTTPResponse

    retry = http_retry(Endpoints(max_retries=3))
    response = HTTPResponse(body=b"", headers={"Retry-After": "86400"}, status=429)
    assert retry.get_retry_after(response) == MAX_RETRY_AFTER_S
    assert retry.get_retry_after(HTTPResponse(body=b"", headers={"Retry-After": "2"}, status=429)) == 2
    assert type(retry.increment(method="GET", url="/x", response=response)).__name__ == type(retry).__name__


class _Drip(ThreadingHTTPServer):
    """Sends a large announced body, or a small one a byte at a time."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                return

            def do_GET(self) -> None:
                self.send_response(200)
                if self.path == "/big":
                    self.send_header("Content-Length", str(10**9))
                    self.end_headers()
                    return
                self.send_header("Content-Length", "40")
                self.end_headers()
                for _ in range(40):
                    try:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(0.1)

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_metadata_bodies_are_capped_by_size_and_deadline(monkeypatch):
    from eotwin.io.remote.access import RemoteAccess
    from eotwin.io.remote.http import fetch_bytes

    server = _Drip()
    access = RemoteAccess(Endpoints(timeout_s=5, max_retries=0), Credentials())
    try:
        with pytest.raises(EotwinError, match="announces 1,000,000,000 bytes"):
            fetch_bytes(access, server.url + "/big", "item")
        monkeypatch.setattr(http_module, "MAX_FETCH_BYTES", 10)
        monkeypatch.setattr(http_module, "FETCH_DEADLINE_S", 60.0)
        with pytest.raises(EotwinError, match="announces 40 bytes"):
            fetch_bytes(access, server.url + "/drip", "item")
        monkeypatch.setattr(http_module, "MAX_FETCH_BYTES", 1000)
        monkeypatch.setattr(http_module, "FETCH_DEADLINE_S", 0.5)
        started = time.monotonic()
        with pytest.raises(EotwinError, match="past its deadline"):
            fetch_bytes(access, server.url + "/drip", "item")
        assert time.monotonic() - started < 3
    finally:
        server.shutdown()


def test_search_paging_stops_at_the_item_cap(world, servers, endpoints, monkeypatch):
    from eotwin.io.remote import stac_api as stac

    found = stac.search(endpoints, "sentinel-2-l2a", scene_bbox(world), "2024-07-01T00:00:00Z/2024-07-31T23:59:59Z",
                        50, limit=1)
    assert len(found) >= 2
    monkeypatch.setattr(stac, "MAX_SEARCH_ITEMS", 1)
    with pytest.raises(EotwinError, match="matches more than 1 sentinel-2-l2a items"):
        stac.search(endpoints, "sentinel-2-l2a", scene_bbox(world), "2024-07-01T00:00:00Z/2024-07-31T23:59:59Z", 50,
                    limit=1)


def test_tries_sleep_the_doubling_backoff_between_tries(monkeypatch):
    from eotwin.io.remote import retry

    slept: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    assert list(retry.tries(3, 0.5)) == [(0, False), (1, False), (2, False), (3, True)]
    assert slept == [0.5, 1.0, 2.0]
    assert list(retry.tries(0, 0.5)) == [(0, True)] and slept == [0.5, 1.0, 2.0]
