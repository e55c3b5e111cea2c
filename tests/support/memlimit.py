"""A command under an enforced memory limit, with its peak memory measured (tests and benchmarks/memory.py).

The limit is enforced two ways, as the offline DeltaTwin runner does: ``RLIMIT_AS`` on the child (set
between fork and exec, inherited by its own children; an allocation past it fails inside the process)
and a resident-memory watchdog that sums resident memory (PSS: shared pages split between their
holders) over the child's whole process tree and kills the group once it passes the limit (what a
container's memory limit does). The address-space limit can be left off (``address_space=False``) for programs whose reserved-but-unused virtual memory (thread stacks,
allocator arenas, CUDA/BLAS mappings) passes the limit while their resident memory stays far below it.

The peak reported is the larger of the sampled tree sum (every ``poll_s``) and the kernel's high-water
mark of the largest process (``ru_maxrss`` from ``wait4``, exact even for peaks between samples).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eotwin.deltatwin.process import SustainedMemory
from eotwin.deltatwin.process import tree_memory as process_tree_memory

GIB = 2**30
DEFAULT_LIMIT = 2 * GIB  # a DeltaTwin container's default memory (the service's 2 GB)


@dataclass
class LimitedRun:
    """What a command did under its limit."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_bytes: int  # max over time of the tree's resident memory (or the largest process's high-water mark)
    peak_vms_bytes: int  # the largest single process's address space seen (what RLIMIT_AS counts)
    limit_bytes: int
    address_space_limited: bool
    stopped: str | None  # why the watchdog killed it (memory or timeout), None when it ended by itself

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.stopped is None

    def to_dict(self) -> dict[str, Any]:
        return {"argv": self.argv, "returncode": self.returncode, "wall_s": round(self.wall_s, 3),
                "peak_rss_bytes": self.peak_rss_bytes, "peak_vms_bytes": self.peak_vms_bytes,
                "limit_bytes": self.limit_bytes, "address_space_limited": self.address_space_limited,
                "stopped": self.stopped, "ok": self.ok}


def tree_memory(pid: int) -> tuple[int, int]:
    """(resident memory, PSS summed, over ``pid`` and its descendants, largest single address space)."""
    import psutil

    try:
        return process_tree_memory(psutil.Process(pid))
    except psutil.Error:
        return 0, 0


def run_under_memory_limit(argv: Sequence[str], *, limit_bytes: int = DEFAULT_LIMIT, address_space: bool = True,
                           cwd: Path | None = None, env: Mapping[str, str] | None = None,
                           timeout_s: float | None = None, poll_s: float = 0.05) -> LimitedRun:
    """Run ``argv`` to its end (or until the watchdog stops it) and report its peak memory."""

    def limits() -> None:  # in the child, between fork and exec
        if address_space:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env) if env is not None else None,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, preexec_fn=limits,
                                start_new_session=True)
        memory, peak_vms, hwm, stopped, status = SustainedMemory(), 0, 0, None, None
        try:
            while status is None:
                pid, raw, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    status, hwm = raw, usage.ru_maxrss * 1024  # kilobytes on Linux
                    break
                sample, vms = tree_memory(proc.pid)
                rss, peak_vms = memory.add(sample), max(peak_vms, vms)
                if stopped is None and rss > limit_bytes:
                    stopped = f"resident memory {rss} bytes passed the limit of {limit_bytes} bytes"
                    _kill_group(proc.pid)
                if stopped is None and timeout_s is not None and time.monotonic() - started > timeout_s:
                    stopped = f"ran past {timeout_s:g} s"
                    _kill_group(proc.pid)
                time.sleep(poll_s)
        except BaseException:
            _kill_group(proc.pid)
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        _kill_group(proc.pid)  # descendants left behind by the command (none expected)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    return LimitedRun(argv=list(argv), returncode=proc.returncode, stdout=stdout, stderr=stderr,
                      wall_s=time.monotonic() - started, peak_rss_bytes=max(memory.peak, hwm), peak_vms_bytes=peak_vms,
                      limit_bytes=limit_bytes, address_space_limited=address_space, stopped=stopped)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
