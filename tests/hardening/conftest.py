"""Helpers of the hardening tests: the CLI in a child process, optionally under a file-size limit."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def eotwin_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "eotwin", "-q", *args]


def child_env(**extra: str) -> dict[str, str]:
    """A wide terminal and no byte-code writes (a file-size limit must fail our writes, not Python's)."""
    return {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1", **extra}


def file_size_limit(limit_bytes: int):
    """A ``preexec_fn``: files may not grow past ``limit_bytes`` (a full disk), and write() then fails with
    EFBIG instead of the process being killed by SIGXFSZ."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def run_limited(args: list[str], limit_bytes: int, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(eotwin_argv(*args), capture_output=True, text=True, cwd=cwd, env=child_env(**env),
                          preexec_fn=file_size_limit(limit_bytes), timeout=300)


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def default_sigint() -> None:
    """``preexec_fn`` for a child that must see Ctrl-C: a suite started from a background shell (``cmd &``) passes
    SIGINT on as ignored, and Python keeps it ignored (a served viewer once never stopped so); a terminal delivers it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
