"""``eotwin pointcloud serve``: byte ranges as RFC 9110 has them, byte counting, and nothing outside the served files."""

from __future__ import annotations

import http.client
import json
import threading

import laspy
import numpy as np
import pytest

from eotwin.cli.main import run
from eotwin.errors import EotwinError
from eotwin.pointcloud.serve import (
    CloudServer,
    RangeNotSatisfiable,
    ServedCloud,
    check_copc,
    clouds_to_serve,
    parse_range,
)


@pytest.mark.parametrize("header,expected", [
    (None, None),
    ("bytes=0-9", (0, 9)),
    ("bytes=10-", (10, 99)),
    ("bytes=-5", (95, 99)),
    ("bytes=-500", (0, 99)),  # a suffix longer than the file is the whole file
    ("bytes=90-150", (90, 99)),  # a last byte past the end is clipped
    ("bytes=99-99", (99, 99)),
    (" bytes = 3-4 ", (3, 4)),
    ("bytes=5-3", None),  # malformed ranges are ignored: the whole file
    ("bytes=a-b", None),
    ("bytes=0-1,5-6", None),  # several ranges: ignored (a server may), the viewer asks one
    ("items=0-9", None),
    ("bytes=-", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header,size", [("bytes=100-", 100), ("bytes=150-160", 100), ("bytes=-0", 100), ("bytes=0-", 0)])
def test_unsatisfiable_ranges(header, size):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


@pytest.fixture()
def served(tmp_path):
    """A server on a free port for a 3 MB file of random bytes (ranges do not depend on the content)."""
    folder = tmp_path / "served"
    folder.mkdir()
    data = np.random.default_rng(3).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    (folder / "a.copc.laz").write_bytes(data)
    (tmp_path / "secret.txt").write_text("outside the served folder")
    server = CloudServer([ServedCloud("a.copc.laz", folder / "a.copc.laz", len(data))])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, data
    server.shutdown()
    server.close()
    thread.join(5)


def request(server: CloudServer, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None):
    """One raw request (http.client sends the path as given: no normalisation of ``..``)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response, payload


def stats(server: CloudServer) -> dict:
    return json.loads(request(server, "GET", "/api/stats")[1])


def test_ranges_head_and_416(served):
    server, data = served
    whole, body = request(server, "GET", "/clouds/a.copc.laz")
    assert whole.status == 200 and body == data and whole.getheader("Accept-Ranges") == "bytes"
    part, body = request(server, "GET", "/clouds/a.copc.laz", {"Range": "bytes=1000-1999"})
    assert part.status == 206 and body == data[1000:2000]
    assert part.getheader("Content-Range") == f"bytes 1000-1999/{len(data)}" and part.getheader("Content-Length") == "1000"
    tail, body = request(server, "GET", "/clouds/a.copc.laz", {"Range": "bytes=-10"})
    assert tail.status == 206 and body == data[-10:]
    clipped, body = request(server, "GET", "/clouds/a.copc.laz", {"Range": f"bytes={len(data) - 4}-{len(data) + 100}"})
    assert clipped.status == 206 and body == data[-4:]
    beyond, body = request(server, "GET", "/clouds/a.copc.laz", {"Range": f"bytes={len(data)}-"})
    assert beyond.status == 416 and beyond.getheader("Content-Range") == f"bytes */{len(data)}" and body == b""
    head, body = request(server, "HEAD", "/clouds/a.copc.laz", {"Range": "bytes=0-65535"})
    assert head.status == 206 and head.getheader("Content-Length") == "65536" and body == b""
    head, body = request(server, "HEAD", "/clouds/a.copc.laz")
    assert head.status == 200 and head.getheader("Content-Length") == str(len(data)) and body == b""


def test_bytes_served_are_counted_per_file(served):
    server, data = served
    assert stats(server)["files"]["a.copc.laz"] == {"size": len(data), "bytes_served": 0, "requests": 0}
    request(server, "GET", "/clouds/a.copc.laz", {"Range": "bytes=0-65535"})
    request(server, "GET", "/clouds/a.copc.laz", {"Range": "bytes=-100"})
    request(server, "HEAD", "/clouds/a.copc.laz")  # headers only: no bytes of the file
    request(server, "GET", "/clouds/a.copc.laz", {"Range": f"bytes={len(data)}-"})  # 416: nothing sent
    request(server, "GET", "/static/viewer.js")  # the viewer's files are not the cloud's bytes
    counted = stats(server)
    assert counted["files"]["a.copc.laz"]["bytes_served"] == 65536 + 100
    assert counted["total_bytes_served"] == 65536 + 100 and counted["total_size"] == len(data)


def test_bytes_are_counted_before_the_client_holds_them(served, monkeypatch):
    """The count was raised after the write: a client that posted its first-frame report at once could
    snapshot a count without the bytes it had just received (a CI failure). A slow count shows the order."""
    import time

    server, _ = served
    original = type(server.stats).add

    def slow_add(self, name, sent):
        time.sleep(0.3)  # the serving thread descheduled between the write and the count
        original(self, name, sent)

    monkeypatch.setattr(type(server.stats), "add", slow_add)
    request(server, "GET", "/clouds/a.copc.laz", {"Range": "bytes=0-999"})
    assert stats(server)["files"]["a.copc.laz"]["bytes_served"] == 1000


def test_first_frame_report_snapshots_the_bytes_served(served):
    server, _ = served
    request(server, "GET", "/clouds/a.copc.laz", {"Range": "bytes=0-999"})
    report = {"event": "first-frame", "nodesLoaded": 1}
    answer, _ = request(server, "POST", "/api/report", {"Content-Type": "application/json"}, json.dumps(report).encode())
    assert answer.status == 200
    request(server, "GET", "/clouds/a.copc.laz", {"Range": "bytes=1000-2999"})  # deeper nodes: after the frame
    counted = stats(server)
    assert counted["first_frame"] == {"bytes": 1000, "per_file": {"a.copc.laz": 1000}}
    assert counted["files"]["a.copc.laz"]["bytes_served"] == 3000
    assert counted["reports"]["first-frame"] == report
    bad, _ = request(server, "POST", "/api/report", {"Content-Type": "application/json"}, b"[1, 2]")
    assert bad.status == 400
    huge, _ = request(server, "POST", "/api/report", {"Content-Length": str(2 << 20)}, b"{}")
    assert huge.status == 413
    unsized, _ = request(server, "POST", "/api/report", {"Content-Length": "many"}, b"{}")
    assert unsized.status == 413
    elsewhere, _ = request(server, "POST", "/clouds/a.copc.laz", {"Content-Type": "application/json"}, b"{}")
    assert elsewhere.status == 404
    assert stats(server)["reports"] == {"first-frame": report}


@pytest.mark.parametrize("path", [
    "/clouds/../secret.txt", "/clouds/%2e%2e/secret.txt", "/clouds/..%2Fsecret.txt", "/clouds/%2E%2E%2Fsecret.txt",
    "/../secret.txt", "/static/../serve.py", "/static/%2e%2e/serve.py", "/static/viewer.js/../../serve.py",
    "/clouds//etc/passwd", "/clouds/" + "%2F" * 3 + "etc%2Fpasswd", "/etc/passwd", "/clouds/", "/static/",
    "/clouds/A.COPC.LAZ", "/clouds/a.copc.laz/..",
])
def test_nothing_outside_the_served_files(served, path):
    server, _ = served
    for method in ("GET", "HEAD"):
        response, body = request(server, method, path)
        assert response.status == 404, (method, path)
        assert b"outside" not in body and b"root:" not in body
    assert stats(server)["total_bytes_served"] == 0


def test_page_and_viewer_assets_are_served_locally(served):
    server, _ = served
    page, body = request(server, "GET", "/")
    assert page.status == 200 and page.getheader("Content-Type").startswith("text/html")
    assert b'<script src="static/viewer.js"></script>' in body and b"http" not in body  # nothing from elsewhere
    script, body = request(server, "GET", "/static/viewer.js")
    assert script.status == 200 and script.getheader("Content-Type").startswith("text/javascript") and len(body) > 100_000
    wasm, body = request(server, "GET", "/static/laz-perf.wasm")
    assert wasm.status == 200 and wasm.getheader("Content-Type") == "application/wasm" and body[:4] == b"\0asm"
    listing = json.loads(request(server, "GET", "/api/clouds")[1])
    assert listing == {"clouds": [{"name": "a.copc.laz", "url": "clouds/a.copc.laz", "size": 3_000_000, "header_bytes": 0,
                                   "points": None, "bounds": None}]}


def test_port_in_use_is_one_line(served, tmp_path):
    server, data = served
    with pytest.raises(EotwinError, match=f"port {server.port} on 127.0.0.1 is in use"):
        CloudServer([ServedCloud("b", tmp_path / "served" / "a.copc.laz", len(data))], port=server.port)


def _tiny_laz(path, version: str = "1.4"):
    cloud = laspy.create(point_format=7 if version == "1.4" else 3, file_version=version)
    cloud.x, cloud.y, cloud.z = np.arange(10.0), np.arange(10.0), np.arange(10.0)
    cloud.write(str(path))
    return path


def test_files_that_are_not_copc_are_refused(tmp_path):
    with pytest.raises(EotwinError, match="no such file"):
        check_copc(tmp_path / "missing.copc.laz")
    with pytest.raises(EotwinError, match="not a COPC file"):
        check_copc(_tiny_laz(tmp_path / "plain.laz"))
    with pytest.raises(EotwinError, match="not a COPC file"):
        check_copc(_tiny_laz(tmp_path / "old.las", "1.2"))
    (tmp_path / "text.copc.laz").write_text("hello" * 100)
    with pytest.raises(EotwinError, match="not a LAS/LAZ file"):
        check_copc(tmp_path / "text.copc.laz")


def test_vpc_hrefs_outside_the_folder_are_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _tiny_laz(tmp_path / "elsewhere.laz")
    (run_dir / "run.vpc").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"assets": {"data": {"href": "../elsewhere.laz"}}}]}))
    with pytest.raises(EotwinError, match="outside"):
        clouds_to_serve(run_dir)
    (run_dir / "run.vpc").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"assets": {"data": {"href": "https://example.com/x.copc.laz"}}}]}))
    with pytest.raises(EotwinError, match="not a local file"):
        clouds_to_serve(run_dir / "run.vpc")
    (run_dir / "run.vpc").write_text("{not json")
    with pytest.raises(EotwinError, match="not a virtual point cloud index"):
        clouds_to_serve(run_dir)
    with pytest.raises(EotwinError, match=r"no \.vpc index"):
        clouds_to_serve(tmp_path)


def test_cli_errors_are_one_line(tmp_path, capsys):
    empty = tmp_path / "run"
    empty.mkdir()
    (empty / "run.vpc").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    assert run(["pointcloud", "serve", str(tmp_path / "missing.copc.laz"), "--no-browser"]) == 2
    assert run(["pointcloud", "serve", str(_tiny_laz(tmp_path / "plain.laz")), "--no-browser"]) == 2
    assert run(["pointcloud", "serve", str(empty), "--no-browser", "--json"]) == 2
    assert run(["pointcloud", "serve", str(tmp_path / "missing.copc.laz"), "--port", "70000"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert captured.out == "" and len(err) == 4 and all(line.startswith("error: ") for line in err), err
    assert "no such file" in err[0] and "not a COPC file" in err[1] and "lists no point cloud" in err[2]
    assert "--port" in err[3]
