"""Live-mode benchmark: a bbox read through loopback CDSE-like servers vs the same bbox from local files.

Both runs use the same code path (STAC search -> windowed reads -> mosaic -> DEM slice -> LAZ); the
only difference is where the bytes come from: S3 (moto) and Zarr over HTTP with basic auth, or the
same files on disk. Prints points/s of each and their ratio, measured in one run.

Usage: ``.venv/bin/python benchmarks/live.py [--size 1000]``
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

from eotwin.io.remote.cache import Cache
from eotwin.io.remote.credentials import resolve_credentials
from eotwin.io.remote.endpoints import Endpoints
from eotwin.pointcloud.live_pipeline import LiveRequest, build_from_bbox

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: test code, not in the package
from tests.support.live_fixture import BUCKET, build_world
from tests.support.loopback import S3Server, StacApiServer, StaticHttpServer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
KEY, SECRET, TOKEN = "AKIABENCH", "bench-secret", "bench-token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000, help="scene side in 10 m pixels")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="eotwin-live-bench-"))
    template = json.loads((SHARED / "cdse/eometadatatool/S2A_MSIL2A_20220217T183431_N0510_R027_T13VEK_20240516T022440.json").read_text())
    world = build_world(root / "world", template, size=args.size)
    from pyproj import Transformer

    grid = world.scene.image_grid
    left, bottom, right, top = grid.bounds
    m = (right - left) * 0.05
    bbox = Transformer.from_crs(grid.crs, 4326, always_xy=True).transform_bounds(left + m, bottom + m, right - m, top - m)
    request = LiveRequest(bbox=bbox, datetime="2024-07-01T00:00:00Z/2024-07-31T23:59:59Z", max_cloud=50)
    credentials = resolve_credentials(s3_access_key=KEY, s3_secret_key=SECRET, edh_token=TOKEN, environ={})
    local_items = copy.deepcopy(world.items)
    for item in local_items:
        for asset in item["assets"].values():
            asset["href"] = str(world.files[asset["href"][len(f"s3://{BUCKET}/"):]])
    with StacApiServer(world.items) as stac, S3Server() as s3, StaticHttpServer(world.zarr_root, "edh", TOKEN) as edh, \
            StacApiServer(local_items) as local_stac:
        world.upload(s3.client(KEY, SECRET))
        remote = Endpoints(stac_url=stac.url, s3_endpoint=s3.endpoint, s3_https=False, dem_url=edh.url + "/GLO-30-v0.zarr")
        local = Endpoints(stac_url=local_stac.url, dem_url=str(world.zarr_root / "GLO-30-v0.zarr"))
        figures = {}
        for label, endpoints in (("loopback servers", remote), ("local files", local)):
            start = time.perf_counter()
            result = build_from_bbox(request, root / f"{label.split()[0]}.laz", endpoints=endpoints, credentials=credentials,
                                     cache=Cache(root / "cache", enabled=False), viewer=False, preview=False)
            seconds = time.perf_counter() - start
            figures[label] = (result.count, seconds)
            print(f"{label:17s}: {result.count:,} points in {seconds:.2f} s = {result.count / seconds:,.0f} points/s", flush=True)
    (n_remote, t_remote), (n_local, t_local) = figures["loopback servers"], figures["local files"]
    assert n_remote == n_local
    print(f"ratio            : loopback / local = {(n_remote / t_remote) / (n_local / t_local):.2f} "
          f"(S3 requests served: {s3.faults.requests}, DEM requests: {edh.faults.requests})")


if __name__ == "__main__":
    main()
