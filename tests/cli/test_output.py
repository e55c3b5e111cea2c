"""Results printed to a pipe are plain and unwrapped; text from paths is never read as rich markup."""

import json
import subprocess
import sys


def _eotwin(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eotwin", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_piped_results_are_never_wrapped(tmp_path):
    deep = tmp_path / ("a-folder-name-long-enough-to-pass-eighty-columns-" * 3) / "cloud.laz"
    scene = tmp_path / "s"
    assert _eotwin("sample", "-o", str(scene), "--size", "64").returncode == 0
    proc = _eotwin("-q", "pointcloud", "build", "--dem", str(scene / "dem.tif"), "--image", str(scene / "tci.tif"),
                   "-o", str(deep), "--no-viewer", "--no-preview")
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert str(deep) in first and len(first) > 200  # one line, whatever the width of a terminal
    assert "\x1b[" not in proc.stdout  # no styling in a pipe
    as_json = _eotwin("-q", "pointcloud", "build", "--dem", str(scene / "dem.tif"), "--image", str(scene / "tci.tif"),
                      "-o", str(deep), "--no-viewer", "--no-preview", "--json")
    assert json.loads(as_json.stdout)["output"] == str(deep)


def test_markup_in_a_path_is_printed_as_text(tmp_path):
    odd = tmp_path / "x[/]y[bold]" / "cloud.laz"
    proc = _eotwin("pointcloud", "info", str(odd))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "x[/]y[bold]" in lines[0]
