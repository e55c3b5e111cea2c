"""Faults, secrets, two UTM zones, the cache and the tiled (Dask) mode against the loopback servers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import laspy
import numpy as np
import pytest

from eotwin.cli.main import run
from eotwin.errors import EotwinError
from eotwin.io.remote.cache import Cache
from eotwin.pointcloud.live_pipeline import LiveRequest, build_from_bbox
from tests.live.conftest import ACCESS_KEY, EDH_TOKEN, SECRET_KEY
from tests.live.test_live_build import scene_bbox

DATES = "2024-07-01T00:00:00Z/2024-07-31T23:59:59Z"


def points(path: Path) -> np.ndarray:
    """x, y, z in centimetres (integers, whatever the file's offsets) and the colours."""
    las = laspy.read(path)
    return np.column_stack([np.rint(np.asarray(las.x) * 100), np.rint(np.asarray(las.y) * 100),
                            np.rint(np.asarray(las.z) * 100), las.red, las.green, las.blue]).astype(np.int64)


def build(world, endpoints, credentials, out, cache=None, **kw):
    request = LiveRequest(bbox=scene_bbox(world), datetime=DATES, max_cloud=50)
    return build_from_bbox(request, out, endpoints=endpoints, credentials=credentials,
                           cache=cache or Cache(out.parent / "cache", enabled=False), viewer=False, preview=False, **kw)


def test_transient_faults_are_retried_and_change_nothing(world, servers, endpoints, credentials, tmp_path):
    clean = points(build(world, endpoints, credentials, tmp_path / "clean.laz").output)
    servers["stac"].faults.add("status", 503, times=2)
    servers["stac"].faults.add("status", 429, times=1)
    servers["s3"].faults.add("status", 503, times=3)
    servers["s3"].faults.add("status", 500, times=1)
    servers["s3"].faults.add("truncate", times=1, path_contains="B03")
    servers["stac"].faults.add("delay", 6.0, times=1)  # past the 5 s client timeout
    servers["edh"].faults.add("status", 502, times=2)
    servers["edh"].faults.add("delay", 6.0, times=1, path_contains="dsm/")  # past the 5 s client timeout
    servers["edh"].faults.add("truncate", times=1, path_contains="dsm/")
    faulty = points(build(world, endpoints, credentials, tmp_path / "faulty.laz").output)
    assert servers["stac"].faults.injected == 4 and servers["s3"].faults.injected == 5
    assert servers["edh"].faults.injected == 4
    assert not any(f.kind != "delay" for s in servers.values() for f in s.faults.pending)
    np.testing.assert_array_equal(faulty, clean)


@pytest.mark.parametrize("server,expected", [("stac", "HTTP 401"), ("s3", "401"), ("edh", "check the EDH token")])
def test_unauthorised_is_a_clear_error(world, servers, endpoints, credentials, tmp_path, server, expected):
    servers[server].faults.add("status", 401, times=50)
    with pytest.raises(EotwinError, match=expected) as info:
        build(world, endpoints, credentials, tmp_path / "x.laz")
    servers[server].faults.pending.clear()
    message = str(info.value)
    assert "\n" not in message
    for secret in (ACCESS_KEY, SECRET_KEY, EDH_TOKEN):
        assert secret not in message
    assert not (tmp_path / "x.laz").exists()


def test_empty_search_is_a_clear_error(world, servers, endpoints, credentials, tmp_path):
    request = LiveRequest(bbox=scene_bbox(world), datetime="2019-01-01T00:00:00Z/2019-01-31T23:59:59Z")
    with pytest.raises(EotwinError, match="no sentinel-2-l2a items"):
        build_from_bbox(request, tmp_path / "x.laz", endpoints=endpoints, credentials=credentials,
                        cache=Cache(tmp_path / "c", enabled=False))


def test_cache_makes_a_rerun_work_offline(world, servers, endpoints, credentials, tmp_path):
    cache = Cache(tmp_path / "cache")
    first = points(build(world, endpoints, credentials, tmp_path / "a.laz", cache=cache).output)
    assert cache.hits == 0
    for server in servers.values():  # every server now fails: only the cache can answer
        server.faults.add("status", 500, times=1000)
    try:
        cache2 = Cache(tmp_path / "cache")
        second = points(build(world, endpoints, credentials, tmp_path / "b.laz", cache=cache2).output)
    finally:
        for server in servers.values():
            server.faults.pending.clear()
    np.testing.assert_array_equal(first, second)
    assert cache2.misses == 0 and cache2.hits >= 9  # search + 2 items x (3 bands + SCL) + DEM
    # a corrupted entry is detected by its hash and fetched again
    entry = next(p for p in (tmp_path / "cache" / "s2").rglob("*.tif"))
    entry.write_bytes(entry.read_bytes()[:100])
    cache3 = Cache(tmp_path / "cache")
    third = points(build(world, endpoints, credentials, tmp_path / "c.laz", cache=cache3).output)
    np.testing.assert_array_equal(first, third)
    assert cache3.misses == 1


def test_secrets_never_reach_logs_or_outputs(world, servers, endpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CDSE_S3_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("CDSE_S3_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("EOTWIN_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out" / "cli.laz"
    argv = ["-vv", "pointcloud", "build", "--bbox", ",".join(map(str, scene_bbox(world))), "--date", "2024-07-01/2024-07-31",
            "--max-cloud", "50", "--stac-url", endpoints.stac_url, "--s3-endpoint", endpoints.s3_endpoint,
            "--dem-url", endpoints.dem_url, "--edh-token-file", str(tmp_path / "edh.secret"), "-o", str(out)]
    (tmp_path / "edh.secret").write_text(EDH_TOKEN + "\n")
    monkeypatch.setenv("EOTWIN_S3_HTTPS", "NO")
    assert run(argv) == 0
    servers["edh"].faults.add("status", 401, times=50)
    assert run([*argv[:-1], str(tmp_path / "out" / "fail.laz"), "--no-cache"]) != 0
    servers["edh"].faults.pending.clear()
    captured = capsys.readouterr()
    text = captured.out + captured.err
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "edh.secret"]
    assert len(files) > 5 and any(p.suffix == ".html" for p in files)
    for secret in (ACCESS_KEY, SECRET_KEY, EDH_TOKEN):
        assert secret not in text
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
    assert "credentials: options+environment" in text or "credentials: environment+options" in text


def test_two_utm_zones_make_one_seamless_cloud(tmp_path_factory, shared_fixtures, credentials):
    from eotwin.io.remote.endpoints import Endpoints
    from tests.support.live_fixture import build_world, real_l2a_template
    from tests.support.loopback import S3Server, StacApiServer, StaticHttpServer

    world = build_world(tmp_path_factory.mktemp("zones"), real_l2a_template(shared_fixtures), size=200, second_zone=True,
                        dim_names=("latitude", "longitude"))
    assert {g.crs.to_epsg() for g in world.tiles.values()} == {32631, 32632}
    with StacApiServer(world.items) as stac, S3Server() as s3, StaticHttpServer(world.zarr_root, "edh", EDH_TOKEN) as edh:
        world.upload(s3.client(ACCESS_KEY, SECRET_KEY))
        endpoints = Endpoints(stac_url=stac.url, s3_endpoint=s3.endpoint, s3_https=False,
                              dem_url=edh.url + "/GLO-30-v0.zarr", timeout_s=5, max_retries=2, backoff_s=0.05)
        out = tmp_path_factory.mktemp("zones_out") / "zones.laz"
        request = LiveRequest(bbox=scene_bbox(world, 0.05), datetime=DATES, max_cloud=50, use_scl=False, crs="EPSG:32632")
        result = build_from_bbox(request, out, endpoints=endpoints, credentials=credentials,
                                 cache=Cache(out.parent / "c", enabled=False), viewer=False, preview=False)
    las = laspy.read(result.output)
    xy = np.column_stack([las.X, las.Y])
    assert len(np.unique(xy, axis=0)) == len(xy)  # no duplicate in the overlap
    from scipy import ndimage

    from eotwin.pointcloud.live_pipeline import target_grid

    grid = target_grid(request)
    scene = world.scene
    sg = scene.image_grid
    # no gap: every output pixel whose centre is on the scene and not in its swath no-data corner has a point; only
    # pixels next to that corner may differ (the UTM 31N tile was resampled by nearest neighbour on the way)
    x, y = grid.pixel_centres()
    rows = np.floor((sg.transform.f - y) / 10).astype(int)
    cols = np.floor((x - sg.transform.c) / 10).astype(int)
    on_scene = (rows >= 0) & (cols >= 0) & (rows < sg.height) & (cols < sg.width)
    nodata = np.zeros(grid.shape, bool)
    nodata[on_scene] = scene.nodata[rows[on_scene], cols[on_scene]]
    expected = on_scene & ~nodata
    got = np.zeros(grid.shape, bool)
    prow = np.rint((grid.transform.f - np.asarray(las.y)) / 10 - 0.5).astype(int)
    pcol = np.rint((np.asarray(las.x) - grid.transform.c) / 10 - 0.5).astype(int)
    got[prow, pcol] = True
    edge = ndimage.binary_dilation(nodata, iterations=2) & ~ndimage.binary_erosion(nodata, iterations=2)
    assert not ((got != expected) & ~edge).any(), int(((got != expected) & ~edge).sum())
    assert expected.sum() > 0.9 * grid.width * grid.height


def test_tiled_dask_build_equals_one_run_and_resumes(world, servers, endpoints, credentials, tmp_path):
    from eotwin.pointcloud.tiling import build_tiled

    request = LiveRequest(bbox=scene_bbox(world), datetime=DATES, max_cloud=50)
    single = points(build(world, endpoints, credentials, tmp_path / "single.laz").output)
    cache = Cache(tmp_path / "cache")
    out = tmp_path / "tiled" / "area.laz"
    out.parent.mkdir()
    first = build_tiled(request, out, 1000.0, endpoints=endpoints, credentials=credentials, cache=cache, workers=2,
                        format="laz")
    n_tiles = len(first.tiles)
    assert first.skipped == 0 and n_tiles >= 4 and first.planned >= n_tiles
    # a killed task leaves no output (writes are atomic: at most a temporary file); re-running builds only that tile
    killed = first.tiles[1]
    killed.unlink()
    Path(str(killed) + ".json").unlink()
    (killed.parent / f".{killed.stem}.abc123.part.laz").write_bytes(b"partial")
    result = build_tiled(request, out, 1000.0, endpoints=endpoints, credentials=credentials, cache=cache, workers=2,
                         format="laz")
    assert result.skipped == first.planned - 1 and len(result.tiles) == n_tiles and killed.exists()
    merged = np.concatenate([points(p) for p in result.tiles])
    order = lambda a: a[np.lexsort((a[:, 0], a[:, 1]))]  # noqa: E731
    merged, single = order(merged), order(single)
    assert merged.shape == single.shape
    np.testing.assert_array_equal(merged[:, [0, 1, 3, 4, 5]], single[:, [0, 1, 3, 4, 5]])  # X, Y and colours exact
    # Z within 5 cm: GDAL approximates the pixel transform per warped window (0.01 px) and LAS rounds to 1 cm
    assert np.abs(merged[:, 2] - single[:, 2]).max() <= 5
    vpc = json.loads(result.vpc.read_text())
    assert vpc["type"] == "FeatureCollection" and len(vpc["features"]) == n_tiles
    assert sum(f["properties"]["pc:count"] for f in vpc["features"]) == len(single)
    assert all((result.vpc.parent / f["assets"]["data"]["href"]).exists() for f in vpc["features"])
    # another request on the same output never takes these tiles as done: they are rebuilt from its own data
    sampled = build_tiled(request, out, 1000.0, endpoints=endpoints, credentials=credentials, cache=cache, workers=2,
                          format="laz", sampled_fraction=0.5)
    assert sampled.skipped == 0
    assert sampled.count == sum(len(points(p0)) for p0 in sampled.tiles)
    assert abs(sampled.count - len(single) / 2) <= len(sampled.tiles)  # each tile keeps round(0.5 x its pixels)
    # a second run on the same output while one is writing stops at once with one line
    import fcntl

    with open(out.parent / "area_tiles" / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(EotwinError, match="another run is writing"):
            build_tiled(request, out, 1000.0, endpoints=endpoints, credentials=credentials, cache=cache, workers=2,
                        format="laz")


def test_a_killed_tiled_run_resumes(world, servers, endpoints, credentials, tmp_path):
    """SIGKILL the whole CLI run (cluster included) after its first tiles land; the re-run builds only the rest."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed" / "area.laz"
    out.parent.mkdir()
    servers["edh"].faults.add("delay", 0.8, times=10**6)  # slow DEM reads so that the kill lands mid-run
    env = dict(os.environ, CDSE_S3_ACCESS_KEY=ACCESS_KEY, CDSE_S3_SECRET_KEY=SECRET_KEY, EDH_TOKEN=EDH_TOKEN,
               EOTWIN_S3_HTTPS="NO", EOTWIN_CACHE_DIR=str(tmp_path / "cache"))
    argv = [sys.executable, "-m", "eotwin", "-q", "pointcloud", "build", "--bbox", ",".join(map(str, scene_bbox(world))),
            "--date", "2024-07-01/2024-07-31", "--max-cloud", "50", "--stac-url", endpoints.stac_url,
            "--s3-endpoint", endpoints.s3_endpoint, "--dem-url", endpoints.dem_url, "--tile-size", "1000",
            "--workers", "2", "-o", str(out)]
    proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tiles = out.parent / "area_tiles"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tiles.glob("*.laz.json"))) < 1:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    servers["edh"].faults.pending.clear()
    done_before = {p.name for p in tiles.glob("*.laz") if Path(str(p) + ".json").exists()}
    assert len(done_before) >= 1 and not out.with_suffix(".vpc").exists()
    result = subprocess.run([*argv, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    skipped = json.loads(result.stdout)["skipped"]
    assert skipped >= len(done_before)  # the tiles finished before the kill were not built again
    from eotwin.pointcloud.live_pipeline import target_grid
    from eotwin.pointcloud.tiling import plan_tiles

    planned = len(plan_tiles(target_grid(LiveRequest(bbox=scene_bbox(world), datetime=DATES)), 1000.0))
    marked = {p.name for p in tiles.iterdir() if p.suffix in (".laz", ".empty")}
    assert len({n.split(".")[0] for n in marked}) == planned
    assert not list(tiles.glob(".*.part.*")), "the re-run removes what the killed run left half-written"
    single = points(build(world, endpoints, credentials, tmp_path / "single.laz").output)
    merged = np.concatenate([points(p) for p in sorted(tiles.glob("*.laz"))])
    assert len(merged) == len(single)
    for secret in (ACCESS_KEY, SECRET_KEY, EDH_TOKEN):
        assert secret not in result.stdout + result.stderr


def test_quiet_failed_search_prints_one_line(world, servers, endpoints, tmp_path):
    """``-q``: the retry warnings of urllib3/pystac-client stay silent; the final failure is one ``error:`` line."""
    import subprocess
    import sys

    servers["stac"].faults.add("status", 503, times=200)
    env = dict(os.environ, CDSE_S3_ACCESS_KEY=ACCESS_KEY, CDSE_S3_SECRET_KEY=SECRET_KEY, EDH_TOKEN=EDH_TOKEN,
               EOTWIN_S3_HTTPS="NO", EOTWIN_CACHE_DIR=str(tmp_path / "cache"), EOTWIN_HTTP_MAX_RETRIES="2", EOTWIN_HTTP_BACKOFF_S="0.05")
    out = tmp_path / "q.laz"
    argv = [sys.executable, "-m", "eotwin", "-q", "pointcloud", "build", "--bbox", ",".join(map(str, scene_bbox(world))),
            "--date", "2024-07-01/2024-07-31", "--stac-url", endpoints.stac_url, "--s3-endpoint", endpoints.s3_endpoint,
            "--dem-url", endpoints.dem_url, "--no-cache", "-o", str(out)]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    servers["stac"].faults.pending.clear()
    assert servers["stac"].faults.injected >= 2  # it did retry
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert not out.exists()
