"""Two processes writing the same cache entry, or the same output, at once: no reader ever sees a corrupt or
mixed entry (temporaries renamed into place, the entry checked against its hash), and the output is whole."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from tests.hardening.conftest import child_env
from tests.hardening.test_kills import finish, laz_points, start

WRITER = """
import sys
from pathlib import Path
from eotwin.io.remote.cache import Cache
cache, source, rounds = Cache(Path(sys.argv[1])), Path(sys.argv[2]), int(sys.argv[3])
for _ in range(rounds):
    cache.put("dem", "ab" * 16, source)
"""


def test_two_processes_writing_one_cache_entry_never_show_a_corrupt_one(tmp_path):
    from eotwin.io.remote.cache import Cache

    rng = np.random.default_rng(0)
    versions = {}
    for name in ("a", "b"):  # two different bodies for one key (a server that changed between two requests)
        body = rng.integers(0, 256, 3 * 2**20, dtype=np.uint8).tobytes()
        (tmp_path / name).write_bytes(body)
        versions[name] = body
    root = tmp_path / "cache"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(tmp_path / name), "40"],
                                env=child_env(), stderr=subprocess.PIPE, text=True) for name in versions]
    reader, seen, reads = Cache(root), {"a": 0, "b": 0}, 0
    while any(w.poll() is None for w in writers):
        found = reader.get("dem", "ab" * 16)
        if found is None:
            continue
        try:
            data = found.read_bytes()
        except FileNotFoundError:  # replaced between the check and the read: the next get sees the new one
            continue
        reads += 1
        # the hash matched when get() answered; a rename may swap in the other whole version after that
        assert data in (versions["a"], versions["b"]), f"a corrupt entry was read ({len(data)} bytes)"
        seen["a" if data == versions["a"] else "b"] += 1
    for w in writers:
        assert w.wait() == 0, w.stderr.read()
    assert reads >= 5, (reads, seen)
    leftovers = [p.name for p in (root / "dem" / "ab").iterdir() if ".part" in p.name]
    assert leftovers == [] and reader.get("dem", "ab" * 16) is not None


def test_two_builds_onto_one_output_leave_one_whole_cloud(tmp_path):
    finish(["sample", "--size", "400", "-o", str(tmp_path / "s")], tmp_path)
    args = ["pointcloud", "build", "--dem", str(tmp_path / "s" / "dem.tif"), "--image", str(tmp_path / "s" / "tci.tif"),
            "--no-viewer", "--no-preview"]
    out = tmp_path / "out" / "cloud.laz"
    out.parent.mkdir()
    procs = [start([*args, "-o", str(out)], tmp_path) for _ in range(2)]
    deadline = time.monotonic() + 300
    for proc in procs:
        _, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
        assert proc.returncode == 0, err
    finish([*args, "-o", str(tmp_path / "clean.laz")], tmp_path)
    assert (laz_points(out) == laz_points(tmp_path / "clean.laz")).all()
    assert sorted(p.name for p in out.parent.iterdir()) == ["cloud.laz", "cloud.laz.json"]


def test_interleaved_puts_leave_a_file_and_hash_of_the_same_body(tmp_path, monkeypatch):
    """Writer A renames its body in, hashes it and is slow to write the hash; writer B puts another body
    meanwhile. Without the shard lock the entry ended as B's file beside A's hash: a miss for every reader
    after (seen once in the two-process test above). With it, B waits and the entry is B's whole."""
    import threading

    from eotwin.io.remote import cache as cache_module

    bodies = {"a": b"A" * 100_000, "b": b"B" * 100_000}
    for name, body in bodies.items():
        (tmp_path / name).write_bytes(body)
    real_sha256 = cache_module._sha256

    def slow_for_a(path):
        digest = real_sha256(path)
        if path.read_bytes()[:1] == b"A":
            time.sleep(0.4)  # A has its hash, not yet written
        return digest

    monkeypatch.setattr(cache_module, "_sha256", slow_for_a)
    cache = cache_module.Cache(tmp_path / "cache")
    first = threading.Thread(target=cache.put, args=("dem", "cd" * 16, tmp_path / "a"))
    first.start()
    time.sleep(0.15)
    cache.put("dem", "cd" * 16, tmp_path / "b")
    first.join()
    monkeypatch.setattr(cache_module, "_sha256", real_sha256)
    found = cache.get("dem", "cd" * 16)
    assert found is not None and found.read_bytes() in bodies.values()
