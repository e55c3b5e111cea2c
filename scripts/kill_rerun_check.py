"""Kill -9 a long eotwin job mid-way, rerun it, and print what was left and what the rerun reclaimed.

    .venv/bin/python scripts/kill_rerun_check.py --after-s 60 -- atmocorr run L1C -o OUT --method 6s-ddv

The job starts; ``--after-s`` seconds after its staging beside ``OUT`` (``.OUT.part-*``) holds a file, it
is killed with SIGKILL (with its process group); the same command then runs again.
Printed: when the kill landed, the bytes the killed run left, the rerun's time, and what is left after it (must
be nothing but the output). The suite does the same on a small tile (tests/cli/test_signals.py); this script is
for a full-size tile, once, by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def staging_of(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.part-*"))


def size_of(paths: list[Path]) -> int:
    return sum(p.stat().st_size for d in paths for p in ([d] if d.is_file() else d.rglob("*")) if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after-s", type=float, default=0.0, help="Wait this long after staging appears.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the eotwin arguments (with -o OUT)")
    args = parser.parse_args()
    command = [a for a in args.command if a != "--"]
    out = Path(command[command.index("-o") + 1] if "-o" in command else command[command.index("--output") + 1])
    if out.exists() or staging_of(out):
        print(f"{out} or its staging exists: choose a new output", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "eotwin", "-q", *command]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    while proc.poll() is None and not any(p.is_dir() and any(p.iterdir()) for p in staging_of(out)):
        time.sleep(0.05)
    time.sleep(args.after_s)
    if proc.poll() is not None:
        print(f"the job ended (exit {proc.returncode}) before it could be killed", file=sys.stderr)
        return 1
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.monotonic() - started
    left = staging_of(out)
    left_bytes = size_of(left)
    output_after_kill = out.exists()
    rerun_started = time.monotonic()
    rerun = subprocess.run(argv, capture_output=True, text=True)
    figures = {
        "command": " ".join(command), "killed_after_s": round(killed_at, 1), "output_after_kill": output_after_kill,
        "staging_left_by_kill": len(left), "staging_bytes_left_by_kill": left_bytes,
        "rerun_exit": rerun.returncode, "rerun_s": round(time.monotonic() - rerun_started, 1),
        "staging_after_rerun": len(staging_of(out)), "output_files": sorted(p.name for p in out.iterdir())
        if out.is_dir() else [],
    }
    print(json.dumps(figures, indent=2))
    if rerun.returncode != 0:
        print(rerun.stderr[-2000:], file=sys.stderr)
    ok = not figures["output_after_kill"] and rerun.returncode == 0 and not figures["staging_after_rerun"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
