"""Staged output folders: written beside the target, moved in whole, leftovers of dead writers reclaimed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from eotwin.errors import EotwinError
from eotwin.io.files import publish_staged, reclaim_dead_staging, staging_dir


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_staging_folder_is_hidden_beside_the_target_with_the_usual_mode(tmp_path):
    target = tmp_path / "deeper" / "out"
    staging = staging_dir(target)
    assert staging.parent == target.parent and staging.name.startswith(f".out.part-{os.getpid()}-")
    umask = os.umask(0)
    os.umask(umask)
    assert staging.stat().st_mode & 0o777 == 0o777 & ~umask
    (staging / "a.txt").write_text("a")
    assert publish_staged(staging, target) == ["a.txt"]
    assert (target / "a.txt").read_text() == "a" and not staging.exists()


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(EotwinError, match="exists and is not a directory"):
        staging_dir(tmp_path / "out")


def test_leftovers_of_dead_writers_go_and_live_ones_stay(tmp_path):
    dead = tmp_path / f".out.part-{_dead_pid()}-abc"
    alive = tmp_path / f".out.part-{os.getpid()}-def"
    other = tmp_path / ".output.part-1-x"  # another target's
    legacy = tmp_path / ".out.part-xyz"  # no owner in the name: left alone
    for folder in (dead, alive, other, legacy):
        folder.mkdir()
    assert reclaim_dead_staging(tmp_path, "out") == [dead]
    staging_dir(tmp_path / "out")
    assert not dead.exists() and alive.exists() and other.exists() and legacy.exists()


def test_publishing_into_an_existing_folder_replaces_entries_of_the_same_name(tmp_path):
    target = tmp_path / "out"
    (target / "pair-1").mkdir(parents=True)
    (target / "pair-1" / "old.tif").write_text("old")
    (target / "pair-2").mkdir()
    (target / "keep.json").write_text("kept")
    staging = staging_dir(target)
    (staging / "pair-1").mkdir()
    (staging / "pair-1" / "new.tif").write_text("new")
    (staging / "keep.json").write_text("new")
    assert sorted(publish_staged(staging, target, stale=["pair-3.json"])) == ["keep.json", "pair-1"]
    assert sorted(p.name for p in (target / "pair-1").iterdir()) == ["new.tif"]
    assert (target / "pair-2").is_dir() and (target / "keep.json").read_text() == "new"
    assert not staging.exists()
