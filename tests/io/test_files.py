import pytest

from eotwin.errors import EotwinError
from eotwin.io.files import atomic_path, write_json_atomic


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_renames_on_success(tmp_path):
    target = write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert target.read_text().strip().startswith("{") and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_unwritable_directory_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EotwinError, match="cannot create output directory"), atomic_path(blocker / "sub" / "out.json"):
        pass


def test_leftovers_of_killed_writers_are_reclaimed_and_live_ones_kept(tmp_path):
    """A kill -9 leaves the temporary file; the next write of the same target removes it if its writer is gone."""
    import os
    import subprocess
    import sys

    from eotwin.io.files import atomic_path

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    target = tmp_path / "cloud.laz"
    killed = tmp_path / f".cloud.{dead_pid}.k1ll3d.part.laz"
    live = tmp_path / f".cloud.{os.getpid()}.l1v3.part.laz"
    other = tmp_path / f".cloud.5.{dead_pid}.x.part.laz"  # the temporary file of a target named cloud.5.laz
    for path in (killed, live, other):
        path.write_bytes(b"partial")
    with atomic_path(target) as tmp:
        assert f".cloud.{os.getpid()}." in tmp.name
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done" and not killed.exists() and live.exists() and other.exists()
