"""SIGTERM (a container stop) unwinds like Ctrl-C: staging files are removed, the exit status is 143."""

from __future__ import annotations

import signal
import subprocess
import sys
import time


def _slow_run_argv(tmp_path, out) -> list[str]:
    """The sample L1C, and an ``atmocorr run`` on it in small blocks (slow enough to be stopped mid-way)."""
    sample = tmp_path / "s"
    made = subprocess.run([sys.executable, "-m", "eotwin", "-q", "atmocorr", "sample-l1c", "-o", str(sample)],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    l1c = next(sample.glob("*l1c*.tif"))
    return [sys.executable, "-m", "eotwin", "-q", "atmocorr", "run", str(l1c), "-o", str(out), "--method", "6s-ddv",
            "--block-rows", "16"]


def test_sigterm_mid_atmocorr_run_leaves_no_staging(tmp_path):
    out = tmp_path / "out"
    argv = _slow_run_argv(tmp_path, out)
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".out.part-*")) and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert not list(tmp_path.glob(".out.part-*")) and not out.exists()


def test_a_killed_atmocorr_run_leaves_staging_that_the_rerun_reclaims(tmp_path):
    """kill -9 (no clean-up possible) mid-run; the next run on the same output removes the dead run's staging."""
    out = tmp_path / "out"
    argv = _slow_run_argv(tmp_path, out)
    proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.is_dir() and any(p.iterdir()) for p in tmp_path.glob(".out.part-*")):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = list(tmp_path.glob(".out.part-*"))
    assert left and not out.exists()  # a kill leaves staging behind: nothing could run
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(tmp_path.glob(".out.part-*")) and (out / "l2a.tif").is_file()
