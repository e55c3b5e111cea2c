"""Live builds as COPC, single and tiled, against the loopback STAC, S3 and Zarr servers."""

from __future__ import annotations

import json

import laspy
import numpy as np
import pytest

from eotwin.cli.main import run
from eotwin.errors import EotwinError
from eotwin.io.remote.cache import Cache
from eotwin.pointcloud.live_pipeline import LiveRequest
from tests.live.conftest import ACCESS_KEY, EDH_TOKEN, SECRET_KEY
from tests.live.test_live_build import scene_bbox
from tests.live.test_live_faults_tiles import DATES, build, points


def copc_points(path) -> np.ndarray:
    """Every point through laspy's COPC reader, as :func:`points` gives them for a LAZ."""
    with laspy.CopcReader.open(path) as reader:
        assert isinstance(reader.copc_info, laspy.copc.CopcInfoVlr)
        cloud = reader.query()
    return np.column_stack([np.rint(np.asarray(cloud.x) * 100), np.rint(np.asarray(cloud.y) * 100),
                            np.rint(np.asarray(cloud.z) * 100), cloud.red, cloud.green, cloud.blue]).astype(np.int64)


def ordered(table: np.ndarray) -> np.ndarray:
    return table[np.lexsort(table.T[::-1])]


def test_live_copc_cli_and_api_equal_the_laz(world, servers, endpoints, credentials, tmp_path, monkeypatch, capsys):
    laz = points(build(world, endpoints, credentials, tmp_path / "live.laz").output)
    api = build(world, endpoints, credentials, tmp_path / "api.laz", format="copc")
    assert np.array_equal(ordered(copc_points(api.output)), ordered(laz))
    monkeypatch.setenv("EOTWIN_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "cli.copc.laz"
    # the http:// form of --s3-endpoint, as atmocorr run takes it (the other live CLI tests give host:port and
    # $EOTWIN_S3_HTTPS=NO)
    assert run(["-q", "pointcloud", "build", "--bbox", ",".join(map(str, scene_bbox(world))), "--date", "2024-07-01/2024-07-31",
                "--max-cloud", "50", "--stac-url", endpoints.stac_url, "--s3-endpoint", f"http://{endpoints.s3_endpoint}",
                "--dem-url", endpoints.dem_url, "--s3-access-key", ACCESS_KEY, "--s3-secret-key-file", str(secret_file(tmp_path, "s3", SECRET_KEY)),
                "--edh-token-file", str(secret_file(tmp_path, "edh", EDH_TOKEN)), "-o", str(out), "--no-viewer", "--no-preview", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == len(laz)
    assert np.array_equal(ordered(copc_points(out)), ordered(laz))


def test_tiled_copc_one_file_per_tile_and_a_vpc(world, servers, endpoints, credentials, tmp_path):
    from eotwin.pointcloud.tiling import build_tiled

    request = LiveRequest(bbox=scene_bbox(world), datetime=DATES, max_cloud=50)
    single = points(build(world, endpoints, credentials, tmp_path / "single.laz").output)
    out = tmp_path / "tiled" / "area.copc.laz"
    out.parent.mkdir()
    result = build_tiled(request, out, 1000.0, endpoints=endpoints, credentials=credentials, cache=Cache(tmp_path / "cache"),
                         workers=2, format="copc")
    assert result.vpc == out.parent / "area.vpc" and len(result.tiles) >= 4
    assert all(t.name.startswith("area_r") and t.name.endswith(".copc.laz") for t in result.tiles)
    merged = ordered(np.concatenate([copc_points(t) for t in result.tiles]))
    single = ordered(single)
    assert merged.shape == single.shape
    np.testing.assert_array_equal(merged[:, [0, 1, 3, 4, 5]], single[:, [0, 1, 3, 4, 5]])
    assert np.abs(merged[:, 2] - single[:, 2]).max() <= 5  # per-tile DEM warps, as for tiled LAZ
    vpc = json.loads(result.vpc.read_text())
    hrefs = {f["assets"]["data"]["href"] for f in vpc["features"]}
    assert hrefs == {f"./area_tiles/{t.name}" for t in result.tiles}
    assert {f["assets"]["data"]["type"] for f in vpc["features"]} == {"application/vnd.laszip+copc"}
    assert sum(f["properties"]["pc:count"] for f in vpc["features"]) == len(single) == result.count
    with pytest.raises(EotwinError, match="named as COPC"):
        build_tiled(request, out, 1000.0, endpoints=endpoints, credentials=credentials, cache=Cache(tmp_path / "cache"),
                    workers=2, format="laz")


def secret_file(folder, name: str, value: str):
    path = folder / f"{name}.secret"
    path.write_text(value + "\n")
    return path
