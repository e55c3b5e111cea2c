"""Demo steps used by tests/cli/test_demo_isolation.py: importable by the demo's spawned step process."""

from __future__ import annotations

import os
import signal

from eotwin.errors import EotwinError


def writes_a_note(context):
    from eotwin.report.demo import Artifact

    (context.step_dir("ok") / "pid.txt").write_text(str(os.getpid()))
    context.notes.append("note from the child")
    return [Artifact("child pid", context.output_dir.joinpath("ok", "pid.txt").relative_to(context.output_dir))]


def fails_cleanly(context):
    raise EotwinError("no such band: B99")


def is_killed(context):
    os.kill(os.getpid(), signal.SIGKILL)
