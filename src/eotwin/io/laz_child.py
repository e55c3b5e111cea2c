"""LAZ compression in a child process, so that preparing the next blocks keeps a core of its own.

lazrs holds the GIL while it compresses (about 14 s of a 20 s full-tile build), so in one process the
thread that reads, warps and packs the next blocks mostly waits. A spawned child runs lazrs'
``ParLasZipCompressor`` on the output file itself; blocks reach it through two shared-memory slots (one
copy each) and a pipe that carries only slot names and sizes. The bytes written are those the same
compressor writes in-process: the chunking depends only on the sequence of points.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections import deque
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import numpy as np

from eotwin.errors import EotwinError

SLOTS = 2  # one piece being compressed while the next is copied in
POINT_FORMAT = 7
RECORD_BYTES = 36  # point format 7
# blocks go over in pieces of at most this many points (14.4 MB), so both slots fit in a container's
# /dev/shm (Docker gives 64 MB by default); how the points are split does not change the bytes written
SLOT_POINTS = 400_000


def child_fits() -> bool:
    """Whether /dev/shm can hold the slots (else pages past its size would kill the process with SIGBUS)."""
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize >= 2 * SLOTS * SLOT_POINTS * RECORD_BYTES


class ChildLazCompressor:
    """The ``compress_many`` / ``done`` of lazrs' compressors, run by a child on ``path`` from ``offset`` on."""

    def __init__(self, path: Path, offset: int) -> None:
        context = multiprocessing.get_context("spawn")  # not fork: the parent has threads (prefetch, GDAL)
        self._conn, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_end, str(path), offset), daemon=True,
                                        name="eotwin-laz-compressor")
        self._process.start()
        child_end.close()
        self._free: list[SharedMemory] = []
        self._busy: deque[SharedMemory] = deque()
        self._slots = 0
        self._closed = False

    def compress_many(self, data: np.ndarray) -> None:
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if data.nbytes % RECORD_BYTES:
            raise EotwinError(f"LAZ records of point format {POINT_FORMAT} are {RECORD_BYTES} bytes each")
        piece = SLOT_POINTS * RECORD_BYTES
        for start in range(0, data.nbytes, piece):
            self._compress_piece(data[start:start + piece])

    def _compress_piece(self, data: np.ndarray) -> None:
        slot = self._slot_for(data.nbytes)
        self._busy.append(slot)  # before anything can fail: close() unlinks every slot it knows
        np.frombuffer(slot.buf, np.uint8, data.nbytes)[:] = data
        self._send(("data", slot.name, data.nbytes))

    def done(self) -> None:
        """Finish the file (the chunk table and its offset), then stop the child."""
        self._send(("finish",))
        while self._busy:
            self._acknowledged()
        reply = self._receive()
        if reply[0] != "finished":
            raise EotwinError(f"LAZ compressor process: unexpected reply {reply[0]!r}")
        self._process.join(timeout=30)
        self.close()

    def close(self) -> None:
        """Stop the child (if still running) and release the shared memory; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=10)
        self._conn.close()
        for slot in [*self._free, *self._busy]:
            slot.close()
            slot.unlink()
        self._free.clear()
        self._busy.clear()

    # --- the protocol ----------------------------------------------------------------------------
    def _slot_for(self, nbytes: int) -> SharedMemory:
        if not self._free and self._slots >= SLOTS:
            self._acknowledged()
        if self._free:
            slot = self._free.pop()
            if slot.size >= nbytes:
                return slot
            self._send(("drop", slot.name))  # the child lets go of it before it is unlinked
            slot.close()
            slot.unlink()
            self._slots -= 1
        self._slots += 1
        return SharedMemory(create=True, size=nbytes)

    def _acknowledged(self) -> None:
        reply = self._receive()
        if reply[0] != "done" or not self._busy or reply[1] != self._busy[0].name:
            raise EotwinError(f"LAZ compressor process: unexpected reply {reply!r}")
        self._free.append(self._busy.popleft())

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except (BrokenPipeError, ConnectionResetError, OSError):
            raise EotwinError(self._death()) from None

    def _receive(self) -> tuple:
        try:
            reply = self._conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            raise EotwinError(self._death()) from None
        if reply[0] == "error":
            raise EotwinError(f"LAZ compression failed: {reply[1]}")
        return reply

    def _death(self) -> str:
        self._process.join(timeout=5)
        return f"the LAZ compressor process stopped (exit code {self._process.exitcode})"


def _serve(conn, path: str, offset: int) -> None:
    """The child: compress what the slots hold into ``path`` until told to finish, or the parent is gone."""
    import lazrs

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the child
    attached: dict[str, SharedMemory] = {}
    try:
        with open(path, "r+b") as handle:
            handle.seek(offset)
            compressor = lazrs.ParLasZipCompressor(handle, lazrs.LazVlr.new_for_compression(POINT_FORMAT, 0))
            while True:
                try:
                    message = conn.recv()
                except EOFError:  # the parent died: nothing to finish for anyone
                    return
                if message[0] == "data":
                    _, name, nbytes = message
                    if name not in attached:
                        # a spawned child shares the parent's resource tracker, which keeps a set of names:
                        # attaching registers the name again (a no-op); the parent's unlink unregisters it
                        attached[name] = SharedMemory(name=name)
                    view = np.frombuffer(attached[name].buf, np.uint8, nbytes)
                    compressor.compress_many(view)
                    del view
                    conn.send(("done", name))
                elif message[0] == "drop":
                    slot = attached.pop(message[1], None)
                    if slot is not None:
                        slot.close()
                elif message[0] == "finish":
                    compressor.done()
                    handle.flush()
                    conn.send(("finished",))
                    return
    except Exception as exc:  # reported to the parent, which turns it into one line
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        for slot in attached.values():
            slot.close()
