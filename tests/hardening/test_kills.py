"""Kill -9 mid-way, then rerun, for the long jobs: the killed run leaves no finished-looking output, the rerun
reclaims what the killed one left (temporaries, staging) and ends as an uninterrupted run does. SIGINT (Ctrl-C)
cleans its staging like SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.hardening.conftest import child_env, default_sigint, eotwin_argv


def start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(eotwin_argv(*args), cwd=cwd, env=child_env(**env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=default_sigint)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float = 120.0,
              sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` as soon as ``ready()`` (the job is mid-way); fail when the job ended first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.001)
    assert proc.poll() is None, f"the job ended before it could be stopped: {proc.stderr.read()[-2000:]}"
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, sig)  # the job and anything it started
    else:
        proc.send_signal(sig)


def finish(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(eotwin_argv(*args), cwd=cwd, env=child_env(**env), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def laz_points(path: Path) -> np.ndarray:
    import laspy

    las = laspy.read(path)
    return np.stack([las.X, las.Y, las.Z, las.red, las.green, las.blue], axis=1)


# ----------------------------------------------------------------------------- pointcloud build (single)
def test_a_killed_pointcloud_build_leaves_no_output_and_the_rerun_reclaims(tmp_path):
    finish(["sample", "--size", "1000", "-o", str(tmp_path / "s")], tmp_path)
    args = ["pointcloud", "build", "--dem", str(tmp_path / "s" / "dem.tif"), "--image", str(tmp_path / "s" / "tci.tif"),
            "--no-viewer", "--no-preview"]
    out = tmp_path / "out"
    out.mkdir()
    proc = start([*args, "-o", str(out / "cloud.laz")], tmp_path)
    kill_when(proc, lambda: any(p.name.endswith(".part.laz") for p in out.iterdir()))
    proc.wait()
    left = sorted(p.name for p in out.iterdir())
    assert left and all(".part." in n for n in left), left  # a temporary only, never a cloud.laz
    finish([*args, "-o", str(out / "cloud.laz")], tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["cloud.laz", "cloud.laz.json"]  # the dead run's part is gone
    finish([*args, "-o", str(tmp_path / "clean.laz")], tmp_path)
    assert (laz_points(out / "cloud.laz") == laz_points(tmp_path / "clean.laz")).all()


# ----------------------------------------------------------------------------- ben encode
def _store_entries(store: Path) -> dict[bytes, bytes]:
    import lmdb

    env = lmdb.open(str(store), readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn:
            return {bytes(k): bytes(v) for k, v in txn.cursor()}
    finally:
        env.close()


def test_a_killed_ben_encode_is_incomplete_and_the_rerun_completes_it(tmp_path, ben_mock_dir):
    from eotwin.ben.geotiff import export_geotiff
    from eotwin.ben.sources import open_source

    with open_source(ben_mock_dir) as source:  # the GeoTIFF layout reads slower than LMDB: the kill lands mid-way
        geotiffs = export_geotiff(source, tmp_path / "geotiff")
    args = ["ben", "encode", str(geotiffs), "-j", "1", "--batch-size", "1"]
    store = tmp_path / "store"
    proc = start([*args, "-o", str(store)], tmp_path)

    def some_committed() -> bool:
        try:
            return json.loads((store / "eotwin_store.json").read_text()).get("written", 0) >= 2
        except (OSError, ValueError):
            return False

    kill_when(proc, some_committed)
    proc.wait()
    manifest = json.loads((store / "eotwin_store.json").read_text())
    assert manifest["complete"] is False and 2 <= manifest["written"] < manifest["patches"], manifest
    refused = subprocess.run(eotwin_argv("ben", "info", str(store)), env=child_env(), capture_output=True, text=True)
    assert refused.returncode != 0 and "error:" in refused.stderr  # a half-encoded store is never read as whole
    before = _store_entries(store)  # what the killed run committed: kept, not encoded again
    finish([*args, "-o", str(store)], tmp_path)  # the same options: a resume, no --overwrite needed
    assert len(before) >= 2 and all(_store_entries(store)[k] == v for k, v in before.items())
    finish([*args, "-o", str(tmp_path / "straight")], tmp_path)
    assert _store_entries(store) == _store_entries(tmp_path / "straight")
    assert json.loads((store / "eotwin_store.json").read_text())["complete"] is True
    assert not [p for p in store.iterdir() if ".part" in p.name]


# ----------------------------------------------------------------------------- atmocorr run, SIGINT
@pytest.fixture(scope="module")
def l1c(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("l1c")
    finish(["atmocorr", "sample-l1c", "-o", str(root / "s")], root)
    return next((root / "s").glob("*l1c*.tif"))


def test_ctrl_c_mid_atmocorr_run_leaves_no_staging(tmp_path, l1c):
    out = tmp_path / "out"
    proc = start(["atmocorr", "run", str(l1c), "-o", str(out), "--method", "6s-ddv", "--block-rows", "16"], tmp_path)
    kill_when(proc, lambda: any(p.is_dir() and any(p.iterdir()) for p in tmp_path.glob(".out.part-*")),
              sig=signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert not list(tmp_path.glob(".out.part-*")) and not out.exists()
