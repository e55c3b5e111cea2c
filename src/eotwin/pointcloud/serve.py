"""Serve COPC point clouds on 127.0.0.1 for the streaming viewer (``eotwin pointcloud serve``).

A browser reads a Cloud Optimized Point Cloud by HTTP range requests: the header, the hierarchy, then
one octree node (one LAZ chunk) at a time, level of detail first. This server answers exactly that:
single byte ranges (206, Content-Range, 416 when unsatisfiable, HEAD), the viewer page and its bundled
script and WebAssembly (built by ``make viewer`` from npm, never fetched from a CDN), and it counts the
bytes it served per file so a test can check how little of a file the first frame needed.

Only the files named at start are served, by name: no path from a request ever reaches the file system.
"""

from __future__ import annotations

import html
import json
import logging
import struct
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from eotwin.errors import EotwinError

log = logging.getLogger(__name__)

LAS_HEADER_SIZE_14 = 375  # COPC 1.0: the info VLR starts right after the LAS 1.4 header
VLR_HEADER_SIZE = 54
COPC_INFO_SIZE = 160
SEND_CHUNK = 1 << 20
MAX_REPORT_BYTES = 1 << 20
# the viewer's static files: name -> content type (nothing else under /static/ is ever served)
STATIC_FILES = {"viewer.js": "text/javascript; charset=utf-8", "laz-perf.wasm": "application/wasm"}


class RangeNotSatisfiable(Exception):
    """The Range header is valid but asks for bytes the file does not have (answered 416)."""


@dataclass(frozen=True)
class ServedCloud:
    """One COPC file and the name it is served under (``/clouds/<name>``)."""

    name: str
    path: Path
    size: int
    header: CopcHeader | None = None

    def listing(self, url: str) -> dict[str, Any]:
        """What the viewer needs to rank a cloud before opening it."""
        header = self.header
        return {"name": self.name, "url": url, "size": self.size,
                "header_bytes": header.header_bytes if header else 0, "points": header.points if header else None,
                "bounds": list(header.bounds) if header else None}


@dataclass(frozen=True)
class CopcHeader:
    """The few header fields the viewer uses before it reads a file."""

    header_bytes: int  # header and VLRs (up to the point data): all a client needs before the hierarchy
    points: int
    bounds: tuple[float, float, float, float, float, float]  # min x, y, z, max x, y, z


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range (first, last) one ``Range`` header asks of a ``size``-byte file (RFC 9110 14.1.2).

    ``None`` means "send the whole file": no header, a unit other than bytes, a malformed or a multi-range
    request (a server may ignore Range; the viewer only ever asks one range). Raises
    :class:`RangeNotSatisfiable` when the range starts past the end or is an empty suffix.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash or not (first_text.isdigit() or first_text == "") or not (last_text.isdigit() or last_text == ""):
        return None
    if first_text == "":  # suffix: the last N bytes
        if last_text == "":
            return None
        length = int(last_text)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable()
        return max(size - length, 0), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # invalid: ignored, like any malformed range
    if first >= size:
        raise RangeNotSatisfiable()
    return first, min(int(last_text), size - 1) if last_text else size - 1


def check_copc(path: Path) -> CopcHeader:
    """Raise a one-line error unless ``path`` is a COPC 1.0 file (LAS 1.4 with the ``copc`` info VLR first)."""
    if not path.exists():
        raise EotwinError(f"{path}: no such file")
    if not path.is_file():
        raise EotwinError(f"{path}: not a file")
    try:
        with path.open("rb") as stream:
            head = stream.read(LAS_HEADER_SIZE_14 + VLR_HEADER_SIZE)
    except OSError as exc:
        raise EotwinError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(head) < LAS_HEADER_SIZE_14 + VLR_HEADER_SIZE or head[:4] != b"LASF":
        raise EotwinError(f"{path}: not a LAS/LAZ file, so not COPC (build one with --format copc)")
    major, minor = head[24], head[25]
    header_size, point_data_offset = struct.unpack_from("<HI", head, 94)
    user_id = head[LAS_HEADER_SIZE_14 + 2:LAS_HEADER_SIZE_14 + 18].split(b"\0", 1)[0]
    record_id, record_length = struct.unpack_from("<HH", head, LAS_HEADER_SIZE_14 + 18)
    if (major, minor) != (1, 4) or header_size != LAS_HEADER_SIZE_14 or user_id != b"copc" or record_id != 1 \
            or record_length != COPC_INFO_SIZE:
        raise EotwinError(f"{path}: LAS {major}.{minor} without the COPC info VLR, not a COPC file "
                          "(build one with `eotwin pointcloud build --format copc`)")
    max_x, min_x, max_y, min_y, max_z, min_z = struct.unpack_from("<6d", head, 179)
    (points,) = struct.unpack_from("<Q", head, 247)
    return CopcHeader(int(point_data_offset), int(points), (min_x, min_y, min_z, max_x, max_y, max_z))


def clouds_to_serve(target: str | Path) -> tuple[list[ServedCloud], str]:
    """The COPC files behind ``target`` (a ``.copc.laz`` file, a ``.vpc`` index or a folder holding one) and a title.

    A tiled run is served through its ``.vpc`` index: every cloud it lists must be a COPC file inside the
    folder of the index (an href leading elsewhere is refused, so nothing outside the folder is served).
    """
    target = Path(target)
    if not target.exists():
        raise EotwinError(f"{target}: no such file or folder")
    if target.is_dir():
        indexes = sorted(target.glob("*.vpc"))
        if not indexes:
            raise EotwinError(f"{target}: no .vpc index in this folder (a tiled run writes one; or give a .copc.laz file)")
        if len(indexes) > 1:
            names = ", ".join(p.name for p in indexes)
            raise EotwinError(f"{target}: several .vpc indexes ({names}); give one of them")
        return _clouds_of_vpc(indexes[0]), indexes[0].name
    if target.suffix.lower() == ".vpc":
        return _clouds_of_vpc(target), target.name
    header = check_copc(target)
    return [ServedCloud(target.name, target.resolve(), target.stat().st_size, header)], target.name


def _clouds_of_vpc(index: Path) -> list[ServedCloud]:
    try:
        collection = json.loads(index.read_text(encoding="utf-8"))
        features = collection["features"]
        hrefs = [feature["assets"]["data"]["href"] for feature in features]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise EotwinError(f"{index}: not a virtual point cloud index (STAC ItemCollection with data assets): "
                          f"{type(exc).__name__}") from None
    if not hrefs:
        raise EotwinError(f"{index}: lists no point cloud")
    folder = index.parent.resolve()
    clouds: list[ServedCloud] = []
    names: set[str] = set()
    for href in hrefs:
        if not isinstance(href, str) or "://" in href:
            raise EotwinError(f"{index}: {href!r} is not a local file beside the index")
        path = (folder / unquote(href)).resolve()
        if not path.is_relative_to(folder):
            raise EotwinError(f"{index}: {href} lies outside {folder}; only files in the index's folder are served")
        header = check_copc(path)
        name = path.relative_to(folder).as_posix()
        if name not in names:
            names.add(name)
            clouds.append(ServedCloud(name, path, path.stat().st_size, header))
    return clouds


def viewer_assets() -> dict[str, Path]:
    """The bundled viewer files (``make viewer``); a clear error when they were never built."""
    folder = Path(str(resources.files("eotwin.pointcloud").joinpath("assets/stream")))
    missing = [name for name in STATIC_FILES if not (folder / name).is_file()]
    if missing:
        raise EotwinError(f"the streaming viewer is not built ({', '.join(missing)} missing in {folder}): run `make viewer` "
                          "(npm install + esbuild) in the eotwin repository")
    return {name: folder / name for name in STATIC_FILES}


@dataclass
class ServeStats:
    """Bytes and requests served per file, and the viewer's reports (thread-safe)."""

    sizes: dict[str, int]
    bytes_served: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_frame_bytes: dict[str, int] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, sent: int) -> None:
        with self.lock:
            self.bytes_served[name] = self.bytes_served.get(name, 0) + sent

    def count_request(self, name: str) -> None:
        with self.lock:
            self.requests[name] = self.requests.get(name, 0) + 1

    def record_report(self, report: dict[str, Any]) -> None:
        event = str(report.get("event", "report"))
        with self.lock:
            self.reports[event] = report
            if event == "first-frame" and self.first_frame_bytes is None:
                # the viewer posts this before it asks for anything deeper: what was served so far made the frame
                self.first_frame_bytes = dict(self.bytes_served)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            files = {name: {"size": size, "bytes_served": self.bytes_served.get(name, 0),
                            "requests": self.requests.get(name, 0)} for name, size in self.sizes.items()}
            first = self.first_frame_bytes
            return {
                "files": files,
                "total_size": sum(self.sizes.values()),
                "total_bytes_served": sum(self.bytes_served.values()),
                "first_frame": None if first is None else {"bytes": sum(first.values()), "per_file": dict(first)},
                "reports": json.loads(json.dumps(self.reports)),
            }


class CloudServer:
    """A threaded HTTP server on 127.0.0.1 for some COPC files and the streaming viewer."""

    def __init__(self, clouds: list[ServedCloud], port: int = 0, title: str = "point cloud") -> None:
        if not clouds:
            raise EotwinError("no point cloud to serve")
        self.clouds = {cloud.name: cloud for cloud in clouds}
        self.assets = viewer_assets()
        self.stats = ServeStats(sizes={cloud.name: cloud.size for cloud in clouds})
        page = resources.files("eotwin.pointcloud").joinpath("assets/stream_viewer.html").read_text(encoding="utf-8")
        self.page = page.replace("__TITLE__", html.escape(title)).encode("utf-8")
        try:
            self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        except OSError as exc:
            if exc.errno in (98, 48):  # EADDRINUSE on Linux, macOS
                raise EotwinError(f"port {port} on 127.0.0.1 is in use; choose another with --port "
                                  "(or --port 0 for any free port)") from None
            if exc.errno == 13:
                raise EotwinError(f"port {port} needs privileges; choose one above 1023 with --port") from None
            raise
        self.httpd.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def cloud_url(self, name: str) -> str:
        return f"clouds/{quote(name)}"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        """Stop a ``serve_forever`` running in another thread."""
        self.httpd.shutdown()

    def close(self) -> None:
        self.httpd.server_close()

    def __enter__(self) -> CloudServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _handler_for(server: CloudServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "eotwin-serve"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            self._route(send_body=True)

        def do_HEAD(self) -> None:
            self._route(send_body=False)

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/api/report":
                self.close_connection = True
                self._send_bytes(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 < length <= MAX_REPORT_BYTES:
                self.close_connection = True  # the body (if any) is left unread
                self._send_bytes(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"report too large, empty or unsized\n",
                                 "text/plain; charset=utf-8")
                return
            try:
                report = json.loads(self.rfile.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError):
                report = None
            if not isinstance(report, dict):
                self._send_bytes(HTTPStatus.BAD_REQUEST, b"a JSON object is expected\n", "text/plain; charset=utf-8")
                return
            server.stats.record_report(report)
            self._send_json({"ok": True})

        def _route(self, send_body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            if path in ("/", "/index.html"):
                self._send_bytes(HTTPStatus.OK, server.page, "text/html; charset=utf-8", send_body)
            elif path.startswith("/static/") and path[len("/static/"):] in server.assets:
                name = path[len("/static/"):]
                self._send_file(server.assets[name], STATIC_FILES[name], send_body)
            elif path.startswith("/clouds/") and path[len("/clouds/"):] in server.clouds:
                cloud = server.clouds[path[len("/clouds/"):]]
                self._send_file(cloud.path, "application/octet-stream", send_body, counted_as=cloud.name)
            elif path == "/api/clouds":
                listing = [c.listing(server.cloud_url(c.name)) for c in server.clouds.values()]
                self._send_json({"clouds": listing}, send_body)
            elif path == "/api/stats":
                self._send_json(server.stats.snapshot(), send_body)
            else:  # anything else, ../ included, names no served file
                self._send_bytes(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", send_body)

        def _send_json(self, payload: dict[str, Any], send_body: bool = True) -> None:
            body = json.dumps(payload).encode("utf-8")
            self._send_bytes(HTTPStatus.OK, body, "application/json", send_body, no_store=True)

        def _send_bytes(self, status: HTTPStatus, body: bytes, content_type: str, send_body: bool = True,
                        no_store: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if no_store:
                self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _send_file(self, path: Path, content_type: str, send_body: bool, counted_as: str | None = None) -> None:
            try:
                size = path.stat().st_size
                wanted = parse_range(self.headers.get("Range"), size)
            except RangeNotSatisfiable:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            except OSError:
                self._send_bytes(HTTPStatus.NOT_FOUND, b"gone\n", "text/plain; charset=utf-8", send_body)
                return
            first, last = wanted if wanted is not None else (0, size - 1)
            length = last - first + 1 if size else 0
            self.send_response(HTTPStatus.PARTIAL_CONTENT if wanted is not None else HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(length))
            if wanted is not None:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if counted_as is not None:
                server.stats.count_request(counted_as)
            if not send_body or length == 0:
                return
            with path.open("rb") as stream:
                stream.seek(first)
                remaining = length
                while remaining:
                    chunk = stream.read(min(SEND_CHUNK, remaining))
                    if not chunk:
                        break
                    # counted before it is written: once the client holds the bytes, the count must show them
                    # (a report it posts next snapshots the count; counting after the write raced with it)
                    if counted_as is not None:
                        server.stats.add(counted_as, len(chunk))
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):  # the browser moved on: this chunk did not go out
                        if counted_as is not None:
                            server.stats.add(counted_as, -len(chunk))
                        self.close_connection = True
                        break
                    remaining -= len(chunk)

    return Handler


def open_browser(url: str) -> bool:
    """Open ``url`` in the user's browser; False when no browser is available (a server, a container)."""
    import webbrowser

    try:
        return bool(webbrowser.open(url))
    except webbrowser.Error:
        return False
