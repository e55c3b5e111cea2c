"""Disk full: each long job in a child whose files may not grow past a few kilobytes (``RLIMIT_FSIZE``, SIGXFSZ
ignored so write() fails with EFBIG as on a full disk). It must end with one ``error:`` line that says the disk
is full, a non-zero exit, no traceback, and nothing at or beside the output (no ``.part``, no staging)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.hardening.conftest import child_env, eotwin_argv, files_under, run_limited

GDAL_OWN = re.compile(r"^(_tiffWriteProc: File too large\.|ERROR 1: TIFFAppendToStrip:Write error.*)$")
LIMIT = 8192  # bytes per file: the inputs are read, every output is larger


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("diskfull-inputs")
    for args in (["sample", "-o", str(root / "sample")], ["atmocorr", "sample-l1c", "-o", str(root / "l1c")]):
        done = subprocess.run(eotwin_argv(*args), capture_output=True, text=True, env=child_env(), timeout=300)
        assert done.returncode == 0, done.stderr
    return root


def _commands(inputs: Path, ben: Path, out: Path) -> dict[str, list[str]]:
    return {
        "pointcloud build": ["pointcloud", "build", "--dem", str(inputs / "sample" / "dem.tif"), "--image",
                             str(inputs / "sample" / "tci.tif"), "-o", str(out / "cloud.laz"), "--no-viewer"],
        "atmocorr run": ["atmocorr", "run", str(inputs / "l1c" / "l1c_stack.tif"), "-o", str(out / "l2a"),
                         "--method", "dos"],
        "ben encode": ["ben", "encode", str(ben), "-o", str(out / "store"), "-j", "1", "--batch-size", "4"],
    }


@pytest.mark.parametrize("command", ["pointcloud build", "atmocorr run", "ben encode"])
def test_a_full_disk_is_one_line_and_leaves_nothing(inputs, ben_mock_dir, tmp_path, command):
    out = tmp_path / "out"
    out.mkdir()
    staging = tmp_path / "tmp"
    staging.mkdir()
    done = run_limited(_commands(inputs, ben_mock_dir, out)[command], LIMIT, cwd=tmp_path, TMPDIR=str(staging),
                       EOTWIN_CACHE_DIR=str(tmp_path / "cache"))
    err = done.stderr.strip()
    assert done.returncode != 0, done.stdout
    lines = err.splitlines()
    assert "Traceback" not in err and lines[-1].startswith("error:") and "disk full" in lines[-1], err
    # GDAL's bundled libtiff prints its own write failures straight to stderr (not through GDAL's error handler,
    # out of Python's reach): those lines may come before ours, and nothing else
    assert all(GDAL_OWN.match(line) for line in lines[:-1]), err
    assert files_under(out) == set() and files_under(staging) == set(), (files_under(out), files_under(staging))
