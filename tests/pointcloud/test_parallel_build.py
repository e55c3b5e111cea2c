"""Parallel building: LAZ compressed in a child process, blocks packed by threads; same bytes as in one process."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import laspy
import numpy as np
import pytest

import eotwin.io.pointcloud_writer as point_writer
import eotwin.pointcloud.pipeline as pipeline
from eotwin.cli.main import run
from eotwin.errors import EotwinError
from eotwin.io.laz_child import ChildLazCompressor
from eotwin.pointcloud.pipeline import map_ahead


def _build(sample_files, out: Path, *extra: str) -> None:
    assert run(["-q", "pointcloud", "build", "--dem", str(sample_files.dem), "--image", str(sample_files.tci),
                "-o", str(out), "--no-viewer", "--no-preview", "--block-rows", "64", *extra]) == 0


@pytest.mark.parametrize("fmt", ["laz", "copc"])
def test_child_compressor_and_prepare_threads_write_the_same_bytes(sample_files, tmp_path, monkeypatch, fmt):
    suffix = ".copc.laz" if fmt == "copc" else ".laz"
    monkeypatch.setattr(pipeline, "PREPARE_WORKERS", 1)
    monkeypatch.setattr(point_writer, "CHILD_MIN_POINTS", 10**12)  # one process, one packing thread
    _build(sample_files, tmp_path / f"serial{suffix}")
    monkeypatch.setattr(pipeline, "PREPARE_WORKERS", 2)
    monkeypatch.setattr(point_writer, "CHILD_MIN_POINTS", 1000)  # the child from the first blocks on
    _build(sample_files, tmp_path / f"parallel{suffix}")
    serial, parallel = (tmp_path / f"serial{suffix}").read_bytes(), (tmp_path / f"parallel{suffix}").read_bytes()
    assert len(serial) > 100_000 and serial == parallel
    assert len(laspy.read(tmp_path / f"parallel{suffix}").points) == laspy.read(tmp_path / f"serial{suffix}").header.point_count


def _shm_names() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def test_a_dead_child_is_one_error_and_nothing_is_left(tmp_path):
    target = tmp_path / "x.laz"
    target.write_bytes(b"\0" * 512)
    before = _shm_names()
    compressor = ChildLazCompressor(target, 512)
    try:
        records = np.zeros(200_000 * 36, np.uint8)
        compressor.compress_many(records)
        os.kill(compressor._process.pid, 9)
        with pytest.raises(EotwinError, match="compressor process stopped"):
            for _ in range(5):  # the next slot waits for an answer that never comes
                compressor.compress_many(records)
            compressor.done()
    finally:
        compressor.close()
    assert not compressor._process.is_alive()
    assert _shm_names() <= before, "shared-memory slots are unlinked"


def test_close_stops_a_running_child(tmp_path):
    target = tmp_path / "x.laz"
    target.write_bytes(b"\0" * 512)
    before = _shm_names()
    compressor = ChildLazCompressor(target, 512)
    compressor.compress_many(np.zeros(100_000 * 36, np.uint8))
    compressor.close()
    assert not compressor._process.is_alive() and _shm_names() <= before


def test_map_ahead_keeps_order_runs_in_parallel_and_reraises():
    running, peak, lock = [0], [0], threading.Lock()

    def slow_square(x: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05 if x % 2 else 0.01)
        with lock:
            running[0] -= 1
        return x * x

    assert list(map_ahead(slow_square, range(10), workers=2)) == [x * x for x in range(10)]
    assert peak[0] == 2

    def failing(x: int) -> int:
        if x == 3:
            raise ValueError("block 3")
        return x

    with pytest.raises(ValueError, match="block 3"):
        list(map_ahead(failing, range(10), workers=2))


def test_map_ahead_stops_pulling_when_the_consumer_stops():
    pulled = []

    def items():
        for i in range(1000):
            pulled.append(i)
            yield i

    results = map_ahead(lambda x: x, items(), workers=2)
    assert next(results) == 0
    results.close()
    assert len(pulled) <= 3


def test_large_blocks_go_over_in_pieces_that_fit_a_small_dev_shm(tmp_path):
    """Docker gives /dev/shm 64 MB: a 100 MB block in one slot would die of SIGBUS there."""
    import eotwin.io.laz_child as laz_child

    assert 2 * laz_child.SLOTS * laz_child.SLOT_POINTS * laz_child.RECORD_BYTES <= 64 * 2**20
    target = tmp_path / "x.laz"
    target.write_bytes(b"\0" * 512)
    compressor = ChildLazCompressor(target, 512)
    try:
        compressor.compress_many(np.zeros((laz_child.SLOT_POINTS * 3 + 7) * 36, np.uint8))
        assert all(slot.size <= laz_child.SLOT_POINTS * 36 for slot in [*compressor._free, *compressor._busy])
        compressor.done()
    finally:
        compressor.close()
    with pytest.raises(EotwinError, match="36 bytes"):
        ChildLazCompressor.compress_many(compressor, np.zeros(35, np.uint8))
