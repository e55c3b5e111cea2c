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
