"""``eotwin demo`` runs every registered capability on the sample scene and links each output, within 2 GiB.

The demo runs as the real CLI in a child process under a resident-memory watchdog of 2 GiB (the process tree's
RSS; a DeltaTwin container's default). Not under ``RLIMIT_AS``: its training step imports torch, whose CUDA build
maps about 3 GiB of shared libraries that a CPU run never touches (see tests/hardening/test_memory_limits.py).
"""

from __future__ import annotations

import os
import re
import sys

import laspy

from tests.support.memlimit import DEFAULT_LIMIT, run_under_memory_limit


def test_demo_links_every_output(tmp_path):
    out = tmp_path / "demo"
    run = run_under_memory_limit([sys.executable, "-m", "eotwin", "-q", "demo", "-o", str(out)], address_space=False,
                                 env={**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}, timeout_s=900)
    assert run.ok, f"exit {run.returncode}, {run.stopped}: {run.stderr.strip()[-600:]}"
    assert 0 < run.peak_rss_bytes < DEFAULT_LIMIT
    index = (out / "index.html").read_text()
    links = re.findall(r"href='([^']+)'", index)
    assert links, "index links nothing"
    for link in links:
        assert (out / link).is_file(), f"broken link {link}"
    assert "pointcloud/valley.html" in links and "pointcloud/valley.png" in links
    assert f"run: eotwin pointcloud serve {out / 'pointcloud' / 'valley.copc.laz'} " in index  # the streaming viewer
    cloud = laspy.read(out / "pointcloud/valley.laz")
    assert len(cloud) > 100_000 and cloud.header.parse_crs().to_epsg() == 32632
