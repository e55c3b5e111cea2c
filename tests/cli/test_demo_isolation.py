"""Each demo step runs in its own process: its memory goes back before the next step, and its failures stay one line."""

from __future__ import annotations

import os

import pytest

from eotwin.errors import EotwinError
from eotwin.report import demo

STEPS = "tests.cli.demo_steps_for_tests"


def test_step_runs_in_another_process_and_its_notes_and_artifacts_come_back(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_STEPS", [("Ok step", f"{STEPS}:writes_a_note")])
    index = demo.run_demo(tmp_path)
    child_pid = int((tmp_path / "ok" / "pid.txt").read_text())
    assert child_pid != os.getpid()
    text = index.read_text()
    assert "href='ok/pid.txt'" in text and "note from the child" in text


@pytest.mark.parametrize(("step", "message"), [
    ("fails_cleanly", "demo step 'Bad step' failed: no such band: B99"),
    ("is_killed", "demo step 'Bad step' failed: its process ended abruptly (killed, or out of memory)"),
])
def test_a_failing_step_is_one_eotwin_error_and_no_index_is_written(tmp_path, monkeypatch, step, message):
    monkeypatch.setattr(demo, "DEMO_STEPS", [("Bad step", f"{STEPS}:{step}")])
    with pytest.raises(EotwinError) as caught:
        demo.run_demo(tmp_path)
    assert str(caught.value) == message
    assert not (tmp_path / "index.html").exists()
