"""Every malformed input of ``cases.py`` through the real CLI in a subprocess: one ``error:`` line naming the
cause, a non-zero exit, no traceback, and nothing left at or beside the output (no ``.part``, no staging)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.badinput.cases import CASES, Case, World

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120


def eotwin(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m eotwin -q ARGS`` with a wide terminal (no wrapping decides a pass)."""
    full = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", **(env or {})}  # warnings shown, as a user sees them
    return subprocess.run([sys.executable, "-m", "eotwin", "-q", *args], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_fixtures, ben_mock_dir) -> World:
    from eotwin.atmocorr.sample_l1c import make_sample_l1c
    from eotwin.sample.files import write_sample
    from eotwin.sample.scene import make_scene
    from tests.deltatwin.conftest import ECHO_MANIFEST, ECHO_PY, ECHO_WORKFLOW, write_component
    from tests.sentinel2.test_products import build_safe

    root = tmp_path_factory.mktemp("badinput-world")
    sample = write_sample(root / "sample", make_scene(size=64, seed=3)).directory
    l1c = root / "l1c"
    make_sample_l1c(l1c, make_scene(size=64, seed=3))
    safe = build_safe(shared_fixtures, root / "safe", size10=60)
    laz = root / "cloud.laz"
    done = eotwin(["pointcloud", "build", "--dem", str(sample / "dem.tif"), "--image", str(sample / "tci.tif"), "-o",
                   str(laz), "--no-viewer", "--no-preview"])
    assert done.returncode == 0, done.stderr
    comp = write_component(root / "component", ECHO_MANIFEST, ECHO_WORKFLOW, {"models/echo.py": ECHO_PY})
    return World(root=root, sample=sample, l1c=l1c, safe=safe, laz=laz, ben=ben_mock_dir, component=comp)


@pytest.fixture(scope="module")
def empty_stac(world):
    from tests.support.loopback import StacApiServer

    with StacApiServer([]) as stac:
        world.empty_stac_url = stac.url
        yield stac


def _snapshot(folder: Path) -> set[str]:
    """Every file under ``folder`` (an output folder created then left empty holds nothing half-written)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_error_and_leaves_nothing(case: Case, world: World, empty_stac, tmp_path: Path) -> None:
    d = tmp_path / "case"
    d.mkdir()
    args = case.make(world, d)
    staging = tmp_path / "tmp"
    staging.mkdir()
    before = _snapshot(d)
    env = {"TMPDIR": str(staging), "EOTWIN_CACHE_DIR": str(tmp_path / "cache"), "CDSE_S3_ACCESS_KEY": "k",
           "CDSE_S3_SECRET_KEY": "s", "EDH_TOKEN": "t", "HOME": str(tmp_path / "home"),
           **{k: v.format(d=d) for k, v in case.env.items()}}
    done = eotwin(args, env=env, cwd=tmp_path)
    stderr, stdout = done.stderr.strip(), done.stdout.strip()
    assert "Traceback" not in stderr + stdout, stderr[-3000:]
    assert done.returncode != 0, f"exit 0 for bad input; stdout: {stdout[-500:]}"
    if case.validate_json:
        findings = json.loads(stdout)["findings"]
        errors = [f"{f['file']}:{f.get('key') or ''}: {f['message']}" for f in findings if f["severity"] == "error"]
        assert any(re.search(case.error, e) for e in errors), errors
    else:
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
        assert "internal error" not in lines[0], lines[0]
        assert re.search(case.error, lines[0]), lines[0]
    assert _snapshot(d) == before, f"left behind: {sorted(_snapshot(d) - before)} / gone: {sorted(before - _snapshot(d))}"
    assert not _snapshot(staging), f"staging left: {sorted(_snapshot(staging))}"
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    assert not (d / "pwned").exists(), "a pickle ran code"
