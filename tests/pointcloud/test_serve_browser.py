"""The streaming viewer in headless Chromium on a 5-million-point COPC built by ``eotwin pointcloud build --format copc``.

The server counts every byte it sends; the page reports what it drew. The first frame (header, hierarchy,
root node) must need less than 5 % of the file, deeper nodes must come after their parents, and the points
the page says it loaded must be exactly those of the nodes it names (checked against laspy's COPC reader).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import laspy
import numpy as np
import pytest
from affine import Affine
from pyproj import CRS

from eotwin.geo.grid import Grid
from eotwin.io.raster import write_geotiff
from tests.hardening.conftest import default_sigint

SIDE = 2240  # pixels per side: 5,017,600 points
FIRST_FRAME_SHARE = 0.05


def _find_chromium() -> str | None:
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Debian chromium; installed here when missing (as ``make browser-deps`` does), skipped only if that fails."""
    found = _find_chromium()
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and not shutil.which("sudo"):
        pytest.skip("chromium is missing and cannot be installed: not root and no sudo")
    try:
        subprocess.run([*prefix, "apt-get", "update", "-qq"], capture_output=True, timeout=600, check=False)
        done = subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, text=True,
                              timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"chromium is missing and cannot be installed: {exc}")
    found = _find_chromium()
    if not found:
        pytest.skip(f"chromium is missing and cannot be installed: apt-get exited {done.returncode}: "
                    f"{done.stderr.strip().splitlines()[-1:] or ''}")
    return found


def build_copc(folder: Path, name: str, side: int, west: float) -> Path:
    """A synthetic side x side DEM and colour image (10 m, UTM 32N) built into a COPC by the CLI."""
    grid = Grid(Affine(10.0, 0.0, west, 0.0, -10.0, 5_100_000.0), side, side, CRS.from_epsg(32632))
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32)
    dem = 800 + 300 * np.sin(rows / 170) * np.cos(cols / 230) + 0.05 * rows
    texture = np.random.default_rng(5).normal(0, 12, (3, side, side))  # colours as noisy as an image's
    rgb = np.stack([rows * 255 / side, cols * 255 / side, (dem - 500) * 255 / 700]) + texture
    write_geotiff(folder / f"{name}_dem.tif", dem[None].astype(np.float32), grid)
    write_geotiff(folder / f"{name}_rgb.tif", rgb.clip(0, 255).astype(np.uint8), grid)
    output = folder / f"{name}.copc.laz"
    built = subprocess.run([sys.executable, "-m", "eotwin", "-q", "pointcloud", "build", "--dem",
                            str(folder / f"{name}_dem.tif"), "--image", str(folder / f"{name}_rgb.tif"), "-o", str(output),
                            "--format", "copc", "--no-viewer", "--no-preview", "--json"],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["count"] == side * side
    return output


@pytest.fixture(scope="module")
def big_copc(tmp_path_factory) -> Path:
    return build_copc(tmp_path_factory.mktemp("big_copc"), "valley", SIDE, 300_000.0)


def hierarchy(path: Path) -> dict[str, int]:
    """Point count per node key ``D-X-Y-Z`` from laspy's COPC reader (sub-pages followed)."""
    from laspy.copc import HierarchyPage

    reader = laspy.CopcReader.open(str(path))
    counts: dict[str, int] = {}
    pages = [reader.root_page]
    with path.open("rb") as stream:
        while pages:
            for key, entry in pages.pop().entries.items():
                if entry.point_count == -1:
                    stream.seek(entry.offset)
                    pages.append(HierarchyPage.from_bytes(stream.read(entry.byte_size)))
                else:
                    counts[f"{key.level}-{key.x}-{key.y}-{key.z}"] = entry.point_count
    return counts


class Served:
    """``eotwin pointcloud serve --json`` in a subprocess, stopped by SIGTERM."""

    def __init__(self, target: Path, *extra: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "eotwin", "pointcloud", "serve", str(target), "--no-browser",
                                      "--json", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=default_sigint)
        line = self.proc.stdout.readline()
        assert line, self.proc.communicate(timeout=30)[1]
        self.info = json.loads(line)
        self.url = self.info["url"]

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        """Signal the server and wait for it; a server that does not stop is killed and fails the test."""
        self.proc.send_signal(signum)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"the server did not stop within 60 s of signal {signum}: {err[-600:]}") from None
        return self.proc.returncode, err


def open_in_chromium(chromium: str, url: str, profile: Path) -> subprocess.Popen:
    """Headless Chromium with WebGL on SwiftShader (no GPU here); its own session, so the test can end it."""
    return subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--use-angle=swiftshader",
                             "--enable-unsafe-swiftshader", "--window-size=960,600", "--no-first-run",
                             f"--user-data-dir={profile}", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def close_chromium(browser: subprocess.Popen) -> None:
    try:
        os.killpg(browser.pid, signal.SIGTERM)  # the group this test started (renderer, GPU processes)
        browser.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait(10)


def browse(chromium: str, target: Path, profile: Path, address: str = "") -> tuple[dict, int, str]:
    """Serve ``target``, open ``address`` (relative to the server) in Chromium until the page is idle; stop both."""
    server = Served(target)
    browser = open_in_chromium(chromium, server.url + address, profile)
    try:
        deadline = time.time() + 90
        stats = server.get("api/stats")
        while time.time() < deadline and not {"idle", "error"} & set(stats["reports"]):
            time.sleep(0.25)
            stats = server.get("api/stats")
    finally:
        close_chromium(browser)
        code, err = server.stop()
    assert "error" not in stats["reports"], stats["reports"]["error"]["error"]
    assert "idle" in stats["reports"], f"the page reported nothing within 90 s: {stats}"
    return stats, code, err


def loaded_keys(report: dict) -> list[str]:
    return [key.split(":")[1] for key in report["loadOrder"]]


def test_viewer_streams_level_of_detail_first(chromium, big_copc, tmp_path):
    size = big_copc.stat().st_size
    counts = hierarchy(big_copc)
    assert sum(counts.values()) == SIDE * SIDE
    stats, code, err = browse(chromium, big_copc, tmp_path / "profile")
    first, idle = stats["reports"]["first-frame"], stats["reports"]["idle"]

    # the first frame: the root node alone, drawn, from less than 5 % of the file as counted by the server
    assert first["loadOrder"] == ["valley.copc.laz:0-0-0-0"] and first["pointsLoaded"] == counts["0-0-0-0"]
    assert first["firstFramePixels"] > 10_000  # points were drawn on the 960 x 600 canvas
    assert stats["first_frame"]["bytes"] == first["firstFrameBytes"]  # the server sent exactly what the page received
    assert stats["first_frame"]["bytes"] < FIRST_FRAME_SHARE * size, (stats["first_frame"], size)
    print(f"first frame: {stats['first_frame']['bytes']:,} of {size:,} bytes ({stats['first_frame']['bytes'] / size:.2%}), "
          f"{first['pointsLoaded']:,} points; idle: {idle['nodesLoaded']} nodes, {idle['pointsLoaded']:,} points, "
          f"{stats['total_bytes_served']:,} bytes")

    # then deeper nodes, each after its parent, and exactly the points of the nodes named
    order = loaded_keys(idle)
    assert idle["nodesLoaded"] == len(order) == len(set(order)) > 1 and idle["nodesEvicted"] == 0
    # from afar the finest level is never needed: the overview stops above it
    assert 2 <= max(int(key.split("-")[0]) for key in order) < max(int(key.split("-")[0]) for key in counts)
    for position, key in enumerate(order[1:], start=1):
        d, x, y, z = map(int, key.split("-"))
        assert f"{d - 1}-{x >> 1}-{y >> 1}-{z >> 1}" in order[:position], f"{key} came before its parent"
    assert idle["pointsLoaded"] == sum(counts[key] for key in order)
    assert idle["drawnPixels"] >= first["firstFramePixels"]
    assert stats["total_bytes_served"] == idle["bytesLoaded"] < size  # streamed, never the whole file

    # Ctrl-C/SIGTERM: the server stops with 143 and one word, no traceback
    assert code == 143 and "Traceback" not in err, err


def test_viewer_refines_where_the_camera_looks(chromium, big_copc, tmp_path):
    """A close view of the south-west corner (#view=EYE,TARGET): deeper nodes there, coarse ones elsewhere."""
    address, target = close_view_of_the_south_west_corner(big_copc)
    header = laspy.open(str(big_copc)).header
    x0, x1 = header.mins[0], header.maxs[0]
    close, _, _ = browse(chromium, big_copc, tmp_path / "close", address)
    keys = loaded_keys(close["reports"]["idle"])
    close_depth = max(int(key.split("-")[0]) for key in keys)
    assert close_depth == max(int(key.split("-")[0]) for key in hierarchy(big_copc))  # the finest level, here only
    reader = laspy.CopcReader.open(str(big_copc))
    centre, halfsize = reader.copc_info.center, reader.copc_info.halfsize
    for key in keys:
        d, x, y, _ = map(int, key.split("-"))
        if d == close_depth:  # the finest nodes lie near where the camera looks, not across the 22 km cloud
            side = 2 * halfsize / 2**d
            node_x, node_y = centre[0] - halfsize + (x + 0.5) * side, centre[1] - halfsize + (y + 0.5) * side
            assert np.hypot(node_x - target[0], node_y - target[1]) < 0.35 * (x1 - x0), key


def test_laspy_reads_the_served_copc_by_range_requests(big_copc, tmp_path):
    """A second client (laspy's COPC reader over HTTP) gets the same root level as from the file."""
    server = Served(big_copc)
    try:
        url = server.url + server.get("api/clouds")["clouds"][0]["url"]
        remote = laspy.CopcReader.open(url).level_query(0)
        local = laspy.CopcReader.open(str(big_copc)).level_query(0)
        assert len(remote) == len(local) == hierarchy(big_copc)["0-0-0-0"]
        assert np.array_equal(remote.X, local.X) and np.array_equal(remote.red, local.red)
        served = server.get("api/stats")["files"]["valley.copc.laz"]
        assert 0 < served["bytes_served"] < 0.05 * big_copc.stat().st_size
    finally:
        code, err = server.stop(signal.SIGINT)  # Ctrl-C
    assert code == 130 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def tiled_run(big_copc, tmp_path_factory) -> Path:
    """A folder laid out like a tiled run: the big cloud, a small one 50 km east of it, and the .vpc of both."""
    from eotwin.pointcloud.tiling import write_vpc

    run_dir = tmp_path_factory.mktemp("tiled")
    (run_dir / "tiles").mkdir()
    big = run_dir / "tiles" / "a.copc.laz"
    shutil.copyfile(big_copc, big)
    shutil.copyfile(str(big_copc) + ".json", str(big) + ".json")
    small = build_copc(run_dir / "tiles", "b", 300, 300_000.0 + SIDE * 10 + 50_000)
    write_vpc(run_dir / "tiled.vpc", [big, small])
    return run_dir


def test_folder_is_served_through_its_vpc_and_a_taken_port_is_one_line(tiled_run):
    server = Served(tiled_run)
    try:
        listing = server.get("api/clouds")["clouds"]
        assert [c["name"] for c in listing] == ["tiles/a.copc.laz", "tiles/b.copc.laz"]
        for cloud in listing:  # what the viewer ranks tiles by before opening them: the header's, read by the server
            header = laspy.open(str(tiled_run / cloud["name"])).header
            assert cloud["points"] == header.point_count and cloud["header_bytes"] == header.offset_to_point_data
            assert cloud["bounds"] == [*header.mins, *header.maxs]
        assert [c["path"] for c in server.info["clouds"]] == [str(tiled_run / "tiles" / f"{n}.copc.laz") for n in "ab"]
        connection = http.client.HTTPConnection("127.0.0.1", server.info["port"], timeout=10)
        connection.request("GET", "/clouds/tiles/b.copc.laz", headers={"Range": "bytes=0-3"})
        response = connection.getresponse()
        assert response.status == 206 and response.read() == b"LASF"
        connection.close()
        taken = subprocess.run([sys.executable, "-m", "eotwin", "pointcloud", "serve", str(tiled_run / "tiled.vpc"),
                                "--no-browser", "--port", str(server.info["port"])], capture_output=True, text=True,
                               timeout=60)
        assert taken.returncode == 2 and taken.stdout == ""
        assert taken.stderr.strip() == (f"error: port {server.info['port']} on 127.0.0.1 is in use; choose another with "
                                        "--port (or --port 0 for any free port)")
    finally:
        server.stop()


def test_viewer_streams_every_cloud_of_a_vpc(chromium, tiled_run, tmp_path):
    stats, code, err = browse(chromium, tiled_run, tmp_path / "profile")
    first, idle = stats["reports"]["first-frame"], stats["reports"]["idle"]
    assert sorted(first["loadOrder"]) == ["tiles/a.copc.laz:0-0-0-0", "tiles/b.copc.laz:0-0-0-0"]  # every root only
    assert all(sent > 0 for sent in stats["first_frame"]["per_file"].values())
    assert stats["first_frame"]["bytes"] < FIRST_FRAME_SHARE * stats["total_size"]
    clouds = {key.split(":")[0] for key in idle["loadOrder"]}
    assert clouds == {"tiles/a.copc.laz", "tiles/b.copc.laz"} and idle["nodesLoaded"] >= 2
    assert code == 143 and "Traceback" not in err, err


def close_view_of_the_south_west_corner(cloud: Path) -> tuple[str, tuple[float, float, float]]:
    header = laspy.open(str(cloud)).header
    x0, y0, _ = header.mins
    target = (x0 + 1000.0, y0 + 1000.0, 900.0)
    eye = (x0 + 1000.0, y0 - 600.0, 2500.0)
    return "#view=" + ",".join(f"{v:.2f}" for v in eye + target), target


def test_tiles_out_of_view_are_never_opened(chromium, tiled_run, tmp_path):
    """Looking north at the big tile's corner, the tile 50 km east is out of view: not one byte of it is read."""
    address, _ = close_view_of_the_south_west_corner(tiled_run / "tiles" / "a.copc.laz")
    stats, _, _ = browse(chromium, tiled_run, tmp_path / "profile", "?detail=2" + address)
    assert stats["reports"]["first-frame"]["loadOrder"] == ["tiles/a.copc.laz:0-0-0-0"]
    assert {key.split(":")[0] for key in stats["reports"]["idle"]["loadOrder"]} == {"tiles/a.copc.laz"}
    assert stats["files"]["tiles/b.copc.laz"] == {"size": stats["files"]["tiles/b.copc.laz"]["size"], "bytes_served": 0,
                                                  "requests": 0}
