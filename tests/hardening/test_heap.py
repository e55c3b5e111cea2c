"""eotwin.heap: freed batch-sized buffers leave the process instead of fragmenting its heap."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

LOOP = textwrap.dedent("""
    import os, sys
    import numpy as np
    from eotwin.heap import steady_heap
    if sys.argv[1] == "steady":
        assert steady_heap()
    rng = np.random.default_rng(0)
    survivors = []
    for _ in range(300):  # batch after batch: large buffers freed, a small survivor allocated between them
        batch = [np.ones(int(rng.integers(1_000_000, 16_000_000)), np.uint8) for _ in range(4)]
        survivors.append(np.ones(int(rng.integers(20_000, 120_000)), np.uint8))
        del batch
    status = dict(line.split(":", 1) for line in open(f"/proc/{os.getpid()}/status"))
    print(int(status["RssAnon"].split()[0]) // 1024)
""")


def _anon_mib(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", LOOP, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_a_steady_heap_gives_freed_batches_back():
    dynamic, steady = _anon_mib("dynamic"), _anon_mib("steady")
    assert steady + 20 <= dynamic, (steady, dynamic)


TRIM = textwrap.dedent("""
    import os, sys
    from eotwin.heap import release_free_memory
    def anon_mib():
        status = dict(line.split(":", 1) for line in open(f"/proc/{os.getpid()}/status"))
        return int(status["RssAnon"].split()[0]) // 1024
    chunks = [bytearray(2000) for _ in range(200_000)]  # 400 MB of small heap blocks
    survivor = bytearray(2000)  # above them: freeing them leaves nothing at the heap's top to trim by itself
    del chunks
    if sys.argv[1] == "release":
        release_free_memory()
    print(anon_mib())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_release_free_memory_hands_freed_heap_pages_back():
    def anon_mib(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", TRIM, mode], capture_output=True, text=True, check=True)
        return int(done.stdout.strip())

    kept, released = anon_mib("keep"), anon_mib("release")
    assert kept > 300 and released < kept - 300, (kept, released)
