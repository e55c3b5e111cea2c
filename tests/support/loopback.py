"""Servers on 127.0.0.1 speaking the protocols eotwin uses, with injectable faults.

* :class:`StacApiServer`: a STAC API (landing page, conformance, ``/search`` GET and POST with
  collections, bbox, datetime and ``query`` filters, and paging through ``next`` links).
* :class:`S3Server`: moto's S3 server behind a fault-injecting proxy (GDAL's ``/vsis3/`` talks to it).
* :class:`StaticHttpServer`: files over HTTP with optional basic auth (a Zarr store laid out like EDH's).

Faults (:class:`Faults`) apply to the next requests whose path matches: an HTTP status (5xx, 429,
401), a delay past the client's timeout, or a truncated body. Production code runs unchanged
against these servers; only endpoints and credentials differ.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# the random mode's faults: server errors, throttling with Retry-After, cut bodies and dropped connections
RANDOM_MIX: tuple[tuple[str, float], ...] = (("status", 500), ("status", 502), ("status", 503), ("status", 504),
                                             ("throttle", 1), ("truncate", 0), ("reset", 0))


@dataclass
class Fault:
    kind: str  # "status", "throttle" (429 with Retry-After: value), "delay", "truncate", "reset"
    value: float = 0
    path_contains: str = ""


@dataclass
class Faults:
    """A queue of faults, consumed one per matching request; counts what was served."""

    pending: list[Fault] = field(default_factory=list)
    requests: int = 0
    injected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    rate: float = 0.0  # random mode: this share of all requests fails (after the queued faults)
    mix: tuple[tuple[str, float], ...] = ()
    rng: random.Random = field(default_factory=random.Random)
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, value: float = 0, times: int = 1, path_contains: str = "") -> None:
        with self.lock:
            self.pending.extend(Fault(kind, value, path_contains) for _ in range(times))

    def random(self, rate: float, seed: int, mix: tuple[tuple[str, float], ...] = RANDOM_MIX) -> None:
        """From now on a seeded ``rate`` of requests fails, with a fault drawn from ``mix`` ((kind, value) pairs)."""
        with self.lock:
            self.rate, self.mix, self.rng = rate, mix, random.Random(seed)
            self.requests, self.injected, self.by_kind = 0, 0, {}  # counts of this mode only

    def take(self, path: str) -> Fault | None:
        with self.lock:
            self.requests += 1
            for i, fault in enumerate(self.pending):
                if fault.path_contains in path:
                    self.injected += 1
                    return self.pending.pop(i)
            if self.rate and self.rng.random() < self.rate:
                kind, value = self.mix[self.rng.randrange(len(self.mix))]
                self.injected += 1
                self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
                return Fault(kind, value)
        return None


class _Handler(BaseHTTPRequestHandler):
    server_version = "eotwin-loopback/1"
    faults: Faults

    def log_message(self, format: str, *args) -> None:  # quiet
        return

    def _fault(self) -> bool:
        """Apply a pending fault; True when the request has been answered by it."""
        fault = self.faults.take(self.path)
        if fault is None:
            return False
        if fault.kind == "delay":
            time.sleep(fault.value)
            return False
        if fault.kind == "status":
            body = json.dumps({"code": int(fault.value), "description": "injected fault"}).encode()
            self.send_response(int(fault.value))
            if int(fault.value) == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="loopback"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True
        if fault.kind == "throttle":
            body = b'{"code": 429, "description": "slow down"}'
            self.send_response(429)
            self.send_header("Retry-After", str(int(fault.value)))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True
        if fault.kind == "reset":  # the connection drops before any answer
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if fault.kind == "truncate":
            self._truncate_next = True
        return False

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        truncate = getattr(self, "_truncate_next", False)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if truncate and len(body) > 1:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that gave up (timeout test)
            self.wfile.write(body)


class _Server:
    """A threading HTTP server on a free loopback port, as a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.faults = Faults()
        self.port = free_port()
        handler.faults = self.faults
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- STAC API ---------------------------------------------------------------------------------------
def _item_matches(item: dict, params: dict) -> bool:
    collections = params.get("collections")
    if collections and item.get("collection") not in collections:
        return False
    bbox = params.get("bbox")
    if bbox:
        w, s, e, n = bbox
        iw, is_, ie, in_ = item["bbox"][:4]
        if ie < w or iw > e or in_ < s or is_ > n:
            return False
    interval = params.get("datetime")
    if interval:
        start, _, end = interval.partition("/")
        when = dt.datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
        if start not in ("", "..") and when < dt.datetime.fromisoformat(start.replace("Z", "+00:00")):
            return False
        end = end or start
        if end not in ("", "..") and when > dt.datetime.fromisoformat(end.replace("Z", "+00:00")):
            return False
    for prop, ops in (params.get("query") or {}).items():
        value = item["properties"].get(prop)
        for op, ref in ops.items():
            ok = {"lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b,
                  "gte": lambda a, b: a >= b, "eq": lambda a, b: a == b}.get(op)
            if ok is None or value is None or not ok(value, ref):
                return False
    return True


class StacApiServer(_Server):
    """A STAC API over a list of items (``/search`` GET and POST, paging)."""

    def __init__(self, items: list[dict], page_size: int = 2) -> None:
        outer = self
        self.items = items
        self.page_size = page_size

        class Handler(_Handler):
            def do_GET(self) -> None:
                if self._fault():
                    return
                parsed = urlparse(self.path)
                if parsed.path in ("", "/"):
                    return self._json(outer.landing())
                if parsed.path == "/conformance":
                    return self._json({"conformsTo": outer.conformance()})
                if parsed.path == "/collections":
                    names = sorted({it.get("collection") for it in outer.items})
                    return self._json({"collections": [{"id": n, "type": "Collection", "links": []} for n in names], "links": []})
                if parsed.path == "/search":
                    query = parse_qs(parsed.query)
                    params = {
                        "collections": query["collections"][0].split(",") if "collections" in query else None,
                        "bbox": [float(v) for v in query["bbox"][0].split(",")] if "bbox" in query else None,
                        "datetime": query.get("datetime", [None])[0],
                        "query": json.loads(query["query"][0]) if "query" in query else None,
                        "limit": int(query.get("limit", [outer.page_size])[0]),
                        "token": query.get("token", [None])[0],
                    }
                    return self._json(outer.search(params, "GET"))
                self._send(404, b'{"code": "NotFound"}', "application/json")

            def do_POST(self) -> None:
                if self._fault():
                    return
                length = int(self.headers.get("Content-Length", 0))
                params = json.loads(self.rfile.read(length) or b"{}")
                if urlparse(self.path).path != "/search":
                    return self._send(404, b'{"code": "NotFound"}', "application/json")
                self._json(outer.search(params, "POST"))

            def _json(self, payload: dict) -> None:
                self._send(200, json.dumps(payload).encode(), "application/geo+json")

        super().__init__(Handler)

    def conformance(self) -> list[str]:
        return ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search",
                "https://api.stacspec.org/v1.0.0/item-search#query", "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core"]

    def landing(self) -> dict:
        return {"type": "Catalog", "id": "loopback", "description": "loopback STAC API", "stac_version": "1.0.0",
                "conformsTo": self.conformance(),
                "links": [{"rel": "self", "href": self.url + "/"}, {"rel": "root", "href": self.url + "/"},
                          {"rel": "search", "href": self.url + "/search", "method": "GET", "type": "application/geo+json"},
                          {"rel": "search", "href": self.url + "/search", "method": "POST", "type": "application/geo+json"},
                          {"rel": "conformance", "href": self.url + "/conformance"},
                          {"rel": "data", "href": self.url + "/collections"}]}

    def search(self, params: dict, method: str) -> dict:
        matches = [it for it in self.items if _item_matches(it, params)]
        limit = int(params.get("limit") or self.page_size)
        limit = min(limit, self.page_size)
        start = int(params.get("token") or 0)
        page = matches[start:start + limit]
        links = []
        if start + limit < len(matches):
            if method == "POST":
                body = {k: v for k, v in params.items() if v is not None} | {"token": str(start + limit)}
                links.append({"rel": "next", "href": self.url + "/search", "method": "POST", "body": body, "merge": False})
            else:
                links.append({"rel": "next", "href": self.url + f"/search?token={start + limit}&" + "&".join(
                    f"{k}={json.dumps(v) if isinstance(v, dict) else ','.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in params.items() if v is not None and k != "token"), "method": "GET"})
        return {"type": "FeatureCollection", "features": page, "links": links, "numberMatched": len(matches),
                "numberReturned": len(page)}


# --- static files with basic auth (Zarr over HTTP) ------------------------------------------------------
class StaticHttpServer(_Server):
    """Serve ``root`` over HTTP; with ``password``, require basic auth as ``user``."""

    def __init__(self, root: Path, user: str | None = None, password: str | None = None) -> None:
        root = Path(root)
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if password else None

        class Handler(_Handler):
            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                if self._fault():
                    return
                if expected and self.headers.get("Authorization") != expected:
                    return self._send(401, b"unauthorised", "text/plain", {"WWW-Authenticate": 'Basic realm="edh"'})
                path = (root / urlparse(self.path).path.lstrip("/")).resolve()
                if (root.resolve() not in path.parents and path != root.resolve()) or not path.is_file():
                    return self._send(404, b"not found", "text/plain")
                body = path.read_bytes()
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    first, _, last = rng[6:].partition("-")
                    first_i = int(first) if first else max(0, len(body) - int(last))
                    last_i = int(last) if (last and first) else len(body) - 1
                    part = body[first_i:last_i + 1]
                    if head:
                        return self._send(206, b"", "application/octet-stream")
                    return self._send(206, part, "application/octet-stream",
                                      {"Content-Range": f"bytes {first_i}-{first_i + len(part) - 1}/{len(body)}"})
                if head:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    return
                self._send(200, body, "application/octet-stream")

        super().__init__(Handler)


# --- S3 (moto) behind a fault proxy -------------------------------------------------------------------
class S3Server:
    """moto's S3 server, reached through a proxy that can inject faults; ``endpoint`` is ``host:port``."""

    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
        self.moto_port = free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        upstream = f"http://127.0.0.1:{self.moto_port}"

        class Handler(_Handler):
            def _forward(self, method: str) -> None:
                import requests

                if self._fault():
                    return
                length = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                headers["Host"] = self.headers.get("Host", "")
                response = requests.request(method, upstream + self.path, data=body, headers=headers, timeout=30,
                                            allow_redirects=False)
                passthrough = {k: v for k, v in response.headers.items()
                               if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-type",
                                                    "content-encoding")}
                if method == "HEAD":
                    self.send_response(response.status_code)
                    for k, v in response.headers.items():
                        if k.lower() not in ("transfer-encoding", "connection"):
                            self.send_header(k, v)
                    self.end_headers()
                    return
                self._send(response.status_code, response.content, response.headers.get("Content-Type", "application/xml"),
                           passthrough)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_HEAD(self) -> None:
                self._forward("HEAD")

            def do_PUT(self) -> None:
                self._forward("PUT")

            def do_POST(self) -> None:
                self._forward("POST")

        self.proxy = _Server(Handler)
        self.faults = self.proxy.faults

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"

    def client(self, access_key: str, secret_key: str):
        import boto3

        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.moto_port}", aws_access_key_id=access_key,
                            aws_secret_access_key=secret_key, region_name="us-east-1")

    def __enter__(self):
        self.moto.start()
        self.proxy.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.proxy.__exit__(*exc)
        self.moto.stop()


@contextlib.contextmanager
def running(*servers) -> Iterator[tuple]:
    with contextlib.ExitStack() as stack:
        yield tuple(stack.enter_context(s) for s in servers)
