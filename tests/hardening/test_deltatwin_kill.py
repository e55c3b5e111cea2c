"""``deltatwin run`` killed (kill -9) mid-run: its model dies with it, the folder is not a finished run (no
run.json), and a rerun on the same folder reclaims what the killed run left and completes."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from pathlib import Path

from tests.deltatwin.conftest import LICENSE, write_component
from tests.hardening.test_kills import finish, kill_when, start

SLOW_PY = textwrap.dedent('''
    import os, pathlib, sys, time
    pathlib.Path("pid.txt").write_text(str(os.getpid()))
    time.sleep(float(sys.argv[1]))
    pathlib.Path("out.txt").write_text("done\\n")
''')


def _component(root: Path) -> Path:
    manifest = {
        "deltaVersion": "1.4", "name": "slow-one", "description": "one slow model", "owner": "eotwin",
        "license": LICENSE,
        "inputs": {"seconds": {"type": "number", "description": "how long the model works"}},
        "outputs": {"out": {"type": "Data", "description": "what the model wrote"}},
        "models": {"slow": {
            "path": "models", "type": "python",
            "parameters": {"pythonVersion": "3.11", "hardwareRequirements": {"cpu": "1", "ram": "1Gi"},
                           "command": "python slow.py $(inputs.seconds)"},
            "inputs": {"seconds": {"type": "number"}}, "outputs": {"out": {"type": "Data", "glob": "out.txt"}},
        }},
    }
    workflow = {"nodes": [{"id": "seconds", "ref": "inputs.seconds"}, {"id": "slow", "ref": "models.slow"},
                          {"id": "out", "ref": "outputs.out"}],
                "edges": [{"from": {"id": "seconds"}, "to": {"id": "slow", "port": "seconds"}},
                          {"from": {"id": "slow", "port": "out"}, "to": {"id": "out"}}]}
    return write_component(root, manifest, workflow, {"models/slow.py": SLOW_PY})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_deltatwin_run_takes_its_model_and_the_rerun_reclaims_the_folder(tmp_path):
    root = _component(tmp_path / "component")
    inputs = tmp_path / "inputs.json"
    run_dir = tmp_path / "run"

    def args(seconds: float) -> list[str]:
        inputs.write_text(json.dumps({"seconds": {"type": "number", "value": seconds}}))
        return ["deltatwin", "run", str(root), "-i", str(inputs), "-o", str(run_dir)]

    proc = start(args(60), tmp_path)
    pid_files: list[Path] = []

    def model_started() -> bool:
        pid_files[:] = [p for p in run_dir.rglob("pid.txt") if p.read_text().strip()] if run_dir.is_dir() else []
        return bool(pid_files)

    kill_when(proc, model_started, timeout_s=120)
    os.kill(proc.pid, signal.SIGKILL)  # the runner only: its model runs in a session of its own
    proc.wait()
    model = int(pid_files[0].read_text())
    deadline = time.monotonic() + 10
    while _alive(model) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(model), "the model outlived its killed runner"
    assert run_dir.is_dir() and not (run_dir / "run.json").exists()  # never taken for a finished run
    finish(args(0.1), tmp_path)  # the same folder: the dead run's leftovers are reclaimed, not refused
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "succeeded" and not list(run_dir.rglob("pid.txt.part*"))
    assert Path(record["outputs"]["out"]["path"]).read_text() == "done\n"
    assert not (run_dir / ".running").exists()
