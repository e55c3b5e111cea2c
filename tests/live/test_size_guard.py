"""Live mode estimates the work first and refuses what cannot finish, before any request is made."""

from __future__ import annotations

import pytest

from eotwin.cli.main import run

CLOSED = "http://127.0.0.1:9"  # nothing listens: a request would fail with a different message


@pytest.mark.parametrize("extra,expected", [
    (["--bbox", "10,46,10.1,46.1", "--crs", "EPSG:4326"], "not a projected CRS in metres"),
    (["--bbox", "10,46,10.1,46.1", "--crs", "EPSG:99999999"], "not a CRS pyproj knows"),
    (["--bbox", "-10,35,30,60"], "give --tile-size"),
    (["--bbox", "10,46,10.5,46.5", "--tile-size", "1"], "below 500 m"),
    (["--bbox", "-10,35,30,60", "--tile-size", "1000"], "tiles of 1000 m, more than 10,000"),
])
def test_oversized_or_ill_posed_requests_are_refused_up_front(tmp_path, capsys, extra, expected):
    out = tmp_path / "o" / "c.laz"
    code = run(["-q", "pointcloud", "build", *extra, "--date", "2024-07-01", "--stac-url", CLOSED, "--s3-endpoint",
                "127.0.0.1:9", "--dem-url", CLOSED + "/x.zarr", "--no-cache", "-o", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and expected in lines[0], err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
