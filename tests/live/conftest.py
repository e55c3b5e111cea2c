"""Loopback servers for the live-data tests: STAC API, S3 (moto) and an EDH-like Zarr store over HTTP."""

from __future__ import annotations

import pytest

from tests.support.live_fixture import build_world, real_l2a_template
from tests.support.loopback import S3Server, StacApiServer, StaticHttpServer

ACCESS_KEY = "AKIALOOPBACKKEY0001"
SECRET_KEY = "loopback-secret-9f8e7d6c5b4a"
EDH_TOKEN = "edh-token-1234567890abcdef"


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_fixtures):
    return build_world(tmp_path_factory.mktemp("world"), real_l2a_template(shared_fixtures))


@pytest.fixture(scope="module")
def servers(world):
    with StacApiServer(world.items) as stac, S3Server() as s3, StaticHttpServer(world.zarr_root, "edh", EDH_TOKEN) as edh:
        world.upload(s3.client(ACCESS_KEY, SECRET_KEY))
        yield {"stac": stac, "s3": s3, "edh": edh}


@pytest.fixture()
def endpoints(servers):
    from eotwin.io.remote.endpoints import Endpoints

    for server in servers.values():
        server.faults.pending.clear()
    return Endpoints(stac_url=servers["stac"].url, s3_endpoint=servers["s3"].endpoint, s3_https=False,
                     dem_url=servers["edh"].url + "/GLO-30-v0.zarr", timeout_s=5, max_retries=4, backoff_s=0.05,
                     gdal_block_cache=False)


@pytest.fixture()
def credentials():
    from eotwin.io.remote.credentials import resolve_credentials

    return resolve_credentials(s3_access_key=ACCESS_KEY, s3_secret_key=SECRET_KEY, edh_token=EDH_TOKEN, environ={})
