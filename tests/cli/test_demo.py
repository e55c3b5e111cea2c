"""``eotwin demo`` runs every registered capability on the sample scene and links each output."""

from __future__ import annotations

import re

import laspy

from eotwin.cli.main import run


def test_demo_links_every_output(tmp_path):
    out = tmp_path / "demo"
    assert run(["-q", "demo", "-o", str(out)]) == 0
    index = (out / "index.html").read_text()
    links = re.findall(r"href='([^']+)'", index)
    assert links, "index links nothing"
    for link in links:
        assert (out / link).is_file(), f"broken link {link}"
    assert "pointcloud/valley.html" in links and "pointcloud/valley.png" in links
    cloud = laspy.read(out / "pointcloud/valley.laz")
    assert len(cloud) > 100_000 and cloud.header.parse_crs().to_epsg() == 32632
