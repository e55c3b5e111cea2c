"""One model process: spawned in its own session with its limits, watched for memory and time, killed with its group.

The runner stops a model whose process tree passes its resident-memory limit or its timeout, kills the
whole group when the runner itself is interrupted (Ctrl-C, SIGTERM), and on Linux the model dies with
the runner even on kill -9.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eotwin.deltatwin.runenv import Secrets

_MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory",
                 "failed to map segment", "mmap failed")


@dataclass
class Outcome:
    detail: dict[str, Any]
    error: str | None


def spawn(command: str, work: Path, env: dict[str, str], log_path: Path, ram: int | None,
           cpu_set: list[int] | None, secrets: Secrets, timeout_s: float | None) -> Outcome:
    def limits() -> None:  # runs in the child between fork and exec
        _die_with_parent()
        if ram is not None:
            resource.setrlimit(resource.RLIMIT_AS, (ram, ram))
        if cpu_set:
            os.sched_setaffinity(0, cpu_set)

    import psutil

    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["/bin/bash", "-c", command], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=limits,
                                start_new_session=True)
        pump = threading.Thread(target=_pump, args=(proc.stdout, log, secrets), daemon=True)
        pump.start()
        memory, peak_vms, watchdog = SustainedMemory(), 0, None
        try:
            root = psutil.Process(proc.pid)
        except psutil.Error:
            root = None
        try:
            while proc.poll() is None:
                sample, vms = tree_memory(root) if root is not None else (0, 0)
                rss, peak_vms = memory.add(sample), max(peak_vms, vms)
                if ram is not None and rss > ram and watchdog is None:
                    watchdog = f"resident memory {rss} bytes passed the limit of {ram} bytes"
                    kill_group(proc)
                timeout = timeout_s
                if timeout and time.monotonic() - started > timeout and watchdog is None:
                    watchdog = f"ran past the {timeout:g} s timeout"
                    kill_group(proc)
                time.sleep(0.05)
        except BaseException:  # Ctrl-C, SIGTERM: the model runs in its own session and would outlive the runner
            kill_group(proc)
            proc.wait()
            raise
        pump.join(timeout=10)
    code = proc.returncode
    # peak_rss_bytes: the whole tree's resident memory (what the service's container limit counts);
    # peak_vms_bytes: the largest single process's address space (what RLIMIT_AS limits), for sizing `ram`
    detail = {"exit_code": code, "wall_s": round(time.monotonic() - started, 3), "peak_rss_bytes": memory.peak,
              "peak_vms_bytes": peak_vms}
    if code == 0 and watchdog is None:
        return Outcome(detail, None)
    tail = _tail(log_path)
    memory_hit = (watchdog is not None and "memory" in watchdog) or any(s in tail for s in _MEMORY_SIGNS)
    detail["memory_limit_hit"] = bool(memory_hit and ram is not None)
    if watchdog:
        why = f"stopped: {watchdog}"
    elif code < 0:
        why = f"killed by {signal.Signals(-code).name}"
    else:
        why = f"exit status {code}"
    if memory_hit and ram is not None and not watchdog:
        why += f"; stopped by its memory limit of {ram} bytes (hardwareRequirements.ram)"
    last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
    if last:
        why += f"; last log line: {last.strip()[:200]}"
    return Outcome(detail, f"{why} (log: {log_path})")


def _die_with_parent() -> None:
    """Linux: the model is killed when the runner dies, even by kill -9 (its own session would outlive it)."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _pump(stream, log, secrets: Secrets) -> None:
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", errors="replace")
        log.write(secrets.scrub(text).encode("utf-8"))
        log.flush()
    stream.close()


class SustainedMemory:
    """A watchdog's reading of sampled tree memory: a value counts once two samples in a row reach it.

    PSS (:func:`tree_memory`) splits pages shared after ``fork``, but a child made with ``vfork`` (how
    ``subprocess`` starts most commands) shares its parent's very address space until it ``exec``s, and reads
    as a second copy of it for that instant. Memory a process really holds lasts longer than one sample.
    """

    def __init__(self) -> None:
        self.previous, self.sustained_peak, self.samples = 0, 0, 0

    def add(self, value: int) -> int:
        """Record a sample; return the sustained value (the smaller of this sample and the one before)."""
        sustained = min(value, self.previous) if self.samples else 0
        self.previous, self.samples = value, self.samples + 1
        self.sustained_peak = max(self.sustained_peak, sustained)
        return sustained

    @property
    def peak(self) -> int:
        """The highest sustained value; a command that lived for one sample only: that sample."""
        return self.sustained_peak if self.samples > 1 else self.previous


def tree_memory(root) -> tuple[int, int]:
    """(resident memory of the process tree, largest single address space).

    Each process counts its proportional set size (PSS: a page shared by n processes counts 1/n in each), so
    the sum is the memory the tree holds, as a container's limit counts it. A sum of RSS counts shared pages
    once per process: a child between ``fork`` and ``exec`` (every ``subprocess`` or spawned worker) shows
    its parent's whole resident memory for an instant, and a watchdog sampling then sees twice the truth.
    RSS only where PSS cannot be read (another user's process, no ``/proc/PID/smaps_rollup``).
    """
    import psutil

    total, largest = 0, 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            info = p.memory_info()
            largest = max(largest, info.vms)
            try:
                total += p.memory_full_info().pss
            except (psutil.AccessDenied, AttributeError):
                total += info.rss
    return total, largest


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(path: Path, size: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
