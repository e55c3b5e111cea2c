"""Faults by the rate for a live STAC-item atmospheric correction: ``eotwin atmocorr run --item-id`` against the
loopback STAC API and S3 (moto) while every server fails a seeded share of all requests (5xx, 429 with
Retry-After, cut bodies, dropped connections). At 20 % and 40 % the product files equal a clean run's byte for
byte (the STAC item minus timestamps); at 100 % the run is one ``error:`` line, a non-zero exit, nothing left.

Each run is its own process (as a user's is): GDAL's block cache of an earlier run cannot hide a fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.atmocorr.test_stac_input import ACCESS_KEY, PRODUCT_ID, SECRET_KEY, world  # noqa: F401  (fixture)
from tests.support.loopback import RANDOM_MIX

VOLATILE = ("created", "updated", "processing:datetime", "eotwin:seconds")


def run_cli(world, out: Path, retries: int = 8) -> subprocess.CompletedProcess:  # noqa: F811
    """``eotwin atmocorr run --item-id`` in a child process; keys from the environment, never argv."""
    env = dict(os.environ, CDSE_S3_ACCESS_KEY=ACCESS_KEY, CDSE_S3_SECRET_KEY=SECRET_KEY,
               EOTWIN_HTTP_MAX_RETRIES=str(retries), EOTWIN_HTTP_BACKOFF_S="0.02")
    argv = [sys.executable, "-m", "eotwin", "-q", "atmocorr", "run", "--item-id", PRODUCT_ID, "-o", str(out),
            "--method", "dos", "--stac-url", world.stac.url, "--s3-endpoint", f"http://{world.s3.endpoint}"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def product(out: Path) -> dict[str, object]:
    """Every file of the product: bytes, except the STAC item, parsed and without what changes per run."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE and "seconds" not in k}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return {p.name: strip(json.loads(p.read_text())) if p.suffix == ".json" else p.read_bytes()
            for p in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def clean(world, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("clean") / "out"
    done = run_cli(world, out)
    assert done.returncode == 0, done.stderr
    return product(out)


def _faulty(world, rate: float, seed: int) -> None:  # noqa: F811
    world.s3.faults.random(rate, seed, RANDOM_MIX)
    world.stac.faults.random(rate, seed + 1, RANDOM_MIX)


def _counts(world) -> tuple[int, int, dict]:  # noqa: F811
    servers = (world.s3, world.stac)
    kinds: dict[str, int] = {}
    for s in servers:
        for k, n in s.faults.by_kind.items():
            kinds[k] = kinds.get(k, 0) + n
    return sum(s.faults.requests for s in servers), sum(s.faults.injected for s in servers), kinds


@pytest.mark.parametrize("rate,seed", [(0.2, 3), (0.4, 11)])
def test_a_correction_through_random_faults_equals_a_clean_one(world, clean, tmp_path, rate, seed,  # noqa: F811
                                                               record_property):
    _faulty(world, rate, seed)
    try:
        done = run_cli(world, tmp_path / "out")
    finally:
        requests, injected, kinds = _counts(world)
        _faulty(world, 0.0, 0)
    record_property("fault_requests", requests)
    record_property("fault_injected", injected)
    assert done.returncode == 0, done.stderr
    assert injected >= 3 and requests >= 20, (requests, injected, kinds)
    got = product(tmp_path / "out")
    assert sorted(got) == sorted(clean)
    for name in clean:
        assert got[name] == clean[name], name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left beside it
    print(f"rate {rate}: {injected} faults in {requests} requests {kinds}")


def test_every_request_failing_is_one_line_and_leaves_nothing(world, tmp_path, record_property):  # noqa: F811
    _faulty(world, 1.0, 5)
    try:
        done = run_cli(world, tmp_path / "out", retries=2)
    finally:
        requests, injected, _ = _counts(world)
        _faulty(world, 0.0, 0)
    record_property("fault_requests", requests)
    record_property("fault_injected", injected)
    err = done.stderr.strip()
    assert done.returncode != 0 and len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert "Traceback" not in err and SECRET_KEY not in err + done.stdout
    assert list(tmp_path.iterdir()) == []


def test_network_settings_from_the_environment_are_checked(monkeypatch):
    """``EOTWIN_HTTP_MAX_RETRIES`` and friends set every service's policy; a bad value is one line naming it."""
    from eotwin.errors import EotwinError
    from eotwin.io.remote.endpoints import Endpoints

    monkeypatch.setenv("EOTWIN_HTTP_MAX_RETRIES", "9")
    monkeypatch.setenv("EOTWIN_HTTP_TIMEOUT_S", "2.5")
    endpoints = Endpoints.from_env(backoff_s=0.1)
    assert (endpoints.max_retries, endpoints.timeout_s, endpoints.backoff_s) == (9, 2.5, 0.1)
    for value in ("many", "-1", "nan", "1000"):
        monkeypatch.setenv("EOTWIN_HTTP_MAX_RETRIES", value)
        with pytest.raises(EotwinError, match="EOTWIN_HTTP_MAX_RETRIES"):
            Endpoints.from_env()
