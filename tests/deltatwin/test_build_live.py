"""The live point-cloud component (bbox + date + secrets) run by the offline runner against loopback
CDSE-like STAC / S3 and EDH-like Zarr servers: it succeeds, and no secret reaches a log, record or output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import laspy
import pytest
from pyproj import Transformer

from eotwin.deltatwin.build import BuildOptions, build_components
from eotwin.deltatwin.runner import RunOptions, run_component

pytestmark = pytest.mark.network  # loopback servers only

ACCESS_KEY = "AKIADELTATWINLOOP01"
SECRET_KEY = "dt-loopback-secret-5e4d3c2b1a"
EDH_TOKEN = "dt-edh-token-0f1e2d3c4b5a6978"
SECRETS = (ACCESS_KEY, SECRET_KEY, EDH_TOKEN)


@pytest.fixture(scope="module")
def live(tmp_path_factory, shared_fixtures):
    from tests.support.live_fixture import build_world, real_l2a_template
    from tests.support.loopback import S3Server, StacApiServer, StaticHttpServer

    world = build_world(tmp_path_factory.mktemp("world"), real_l2a_template(shared_fixtures))
    with StacApiServer(world.items) as stac, S3Server() as s3, StaticHttpServer(world.zarr_root, "edh", EDH_TOKEN) as edh:
        world.upload(s3.client(ACCESS_KEY, SECRET_KEY))
        yield world, {"EOTWIN_STAC_URL": stac.url, "EOTWIN_S3_ENDPOINT": s3.endpoint, "EOTWIN_S3_HTTPS": "0",
                      "EOTWIN_DEM_URL": edh.url + "/GLO-30-v0.zarr"}


def _bbox(world, shrink: float = 0.2) -> str:
    left, bottom, right, top = world.scene.image_grid.bounds
    dx, dy = (right - left) * shrink, (top - bottom) * shrink
    box = Transformer.from_crs(world.scene.image_grid.crs, 4326, always_xy=True).transform_bounds(
        left + dx, bottom + dy, right - dx, top - dy)
    return ",".join(f"{v:.6f}" for v in box)


def test_live_component_runs_and_keeps_secrets(live, tmp_path, monkeypatch):
    world, env = live
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("EOTWIN_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("CDSE_S3_ACCESS_KEY", "CDSE_S3_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "EDH_TOKEN",
                "DESTINE_EDH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    out = tmp_path / "components"
    build_components(BuildOptions(names=["pointcloud"], output=out))
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({
        "bbox": {"type": "string", "value": _bbox(world)}, "date": {"type": "string", "value": "2024-07-01/2024-07-31"},
        "sampled_fraction": {"type": "number", "value": 0.5}, "format": {"type": "string", "value": "laz"},
        "cdse_key": {"type": "secret", "secret_value": ACCESS_KEY},
        "cdse_secret": {"type": "secret", "secret_value": SECRET_KEY},
        "edh_token": {"type": "secret", "secret_value": EDH_TOKEN}}))
    limits = os.environ.get("EOTWIN_MEASURE_LIVE") is None  # set it to measure the peaks without limits
    result = run_component(RunOptions(component=out / "eotwin-pointcloud", inputs_file=inputs, run_dir=tmp_path / "run",
                                      enforce_limits=limits))
    node = next(n for n in result.record["nodes"] if n["id"] == "pointcloud")
    print(json.dumps({k: node.get(k) for k in ("peak_rss_bytes", "peak_vms_bytes", "wall_s", "limits")}))
    assert result.ok, result.record.get("error")
    cloud = Path(result.outputs["point_cloud"]["path"])
    assert len(laspy.read(cloud).points) > 1000
    assert result.record["inputs"]["cdse_secret"]["value"] == "***"
    # search every file the run wrote (logs, record, page, outputs, work dirs) and the generated component
    files = [p for p in (*result.run_dir.rglob("*"), *out.rglob("*")) if p.is_file() and ".eotwin" not in p.parts]
    assert any(p.name == "log.txt" for p in files) and any(p.name == "run.json" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, (path, secret[:6])
