"""kill -9 of ``eotwin atmocorr run`` on a full Sentinel-2 tile, then the rerun (issue 14's kill table, full size).

The suite kills ``atmocorr run`` on the 600 px sample (tests/cli/test_signals.py); this script does it on a
10980 x 10980 px, 13-band L1C stack (:func:`eotwin.atmocorr.sample_l1c.make_tiled_l1c`), where a run takes
minutes and its staging folder holds gigabytes:

1. a clean run, for reference;
2. a second run onto another output, killed with SIGKILL once ``--kill-after`` of the clean run's wall time
   has passed: the output must not exist, the dead run's staging must be there (nothing could clean it);
3. the rerun onto that output: it must succeed, remove the dead run's staging, and write an ``l2a.tif`` whose
   pixels equal the clean run's;
4. a run onto a third output stopped with SIGTERM at the same time (a container stop): exit 143 within
   60 s, no traceback, no output, and its staging removed by the run itself.

Prints each check and the sizes and times; exit status 1 when a check fails.

Usage: ``.venv/bin/python benchmarks/kill_full_tile.py [--size 10980] [--workdir DIR] [--kill-after 0.5]``
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio


def eotwin(*args: str) -> list[str]:
    return [sys.executable, "-m", "eotwin", "-q", *args]


def staging(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.part-*"))


def folder_bytes(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file())


def same_pixels(a: Path, b: Path) -> bool:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        if (x.count, x.width, x.height) != (y.count, y.width, y.height):
            return False
        for _, window in x.block_windows(1):
            if not np.array_equal(x.read(window=window), y.read(window=window)):
                return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--kill-after", type=float, default=0.5, help="share of the clean run's time")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="eotwin-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    l1c = work / "tiled_l1c" / "l1c_stack.tif"
    if not l1c.exists():
        from eotwin.atmocorr.sample_l1c import make_tiled_l1c

        make_tiled_l1c(l1c.parent, size=args.size)
    run_args = ["atmocorr", "run", str(l1c), "--method", "6s-ddv"]
    clean, killed = work / "clean", work / "killed"
    for path in (clean, killed):
        shutil.rmtree(path, ignore_errors=True)

    started = time.monotonic()
    done = subprocess.run(eotwin(*run_args, "-o", str(clean)), capture_output=True, text=True)
    clean_s = time.monotonic() - started
    if done.returncode != 0:
        print(f"clean run failed: {done.stderr.strip()[-300:]}")
        return 1
    print(f"clean run: {clean_s:.1f} s, l2a.tif {(clean / 'l2a.tif').stat().st_size / 1e6:.0f} MB")

    proc = subprocess.Popen(eotwin(*run_args, "-o", str(killed)), stderr=subprocess.DEVNULL)
    wait_s = args.kill_after * clean_s
    time.sleep(wait_s)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = staging(killed)
    checks = {
        "the run was still going when killed": alive,
        "no output after the kill": not killed.exists(),
        "the dead run's staging is left (nothing could clean it)": bool(left),
    }
    print(f"killed after {wait_s:.1f} s: staging {len(left)} folder(s), {folder_bytes(left) / 1e6:.0f} MB")

    started = time.monotonic()
    rerun = subprocess.run(eotwin(*run_args, "-o", str(killed)), capture_output=True, text=True)
    rerun_s = time.monotonic() - started
    print(f"rerun: {rerun_s:.1f} s, exit {rerun.returncode}")
    checks["the rerun succeeds"] = rerun.returncode == 0
    checks["the rerun removed the dead run's staging"] = not staging(killed)
    checks["the rerun's l2a.tif equals the clean run's, pixel for pixel"] = (
        rerun.returncode == 0 and same_pixels(clean / "l2a.tif", killed / "l2a.tif"))

    # 4. SIGTERM (a container stop, `docker stop`): the run must clean its own staging and exit 143
    stopped = work / "stopped"
    shutil.rmtree(stopped, ignore_errors=True)
    proc = subprocess.Popen(eotwin(*run_args, "-o", str(stopped)), stderr=subprocess.PIPE, text=True)
    time.sleep(wait_s)
    alive = proc.poll() is None
    had_staging = bool(staging(stopped))
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
    exit_s = time.monotonic() - sent
    print(f"SIGTERM after {wait_s:.1f} s: exit {proc.returncode} {exit_s:.1f} s later, staging before "
          f"{'yes' if had_staging else 'no'}, after {len(staging(stopped))} folder(s)")
    checks["SIGTERM: the run was still going, with its staging"] = alive and had_staging
    checks["SIGTERM: exit 143 within 60 s"] = proc.returncode == 143
    checks["SIGTERM: no output and the staging removed by the run itself"] = (
        not stopped.exists() and not staging(stopped))
    checks["SIGTERM: no traceback"] = "Traceback" not in (stderr or "")
    for name, ok in checks.items():
        print(f"  {'OK    ' if ok else 'FAILED'} {name}")
    print("all checks hold" if all(checks.values()) else "SOME CHECKS FAILED")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
