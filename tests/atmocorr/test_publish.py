"""A rerun into the same output folder leaves no file of an earlier run that this run did not make."""

from __future__ import annotations

from eotwin.atmocorr import pipeline
from eotwin.io.files import publish_staged


def test_publish_removes_stale_outputs_of_an_earlier_run_only(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    for name in ("l2a.tif", "evaluation.json", "evaluation.png", "notes.txt"):
        (target / name).write_text("old")
    staging = tmp_path / ".out.part-x"
    staging.mkdir()
    for name in ("l2a.tif", "tci.tif", "item.json"):
        (staging / name).write_text("new")
    published = publish_staged(staging, target, stale=pipeline.FILES.values())
    assert sorted(published) == ["item.json", "l2a.tif", "tci.tif"]
    assert sorted(p.name for p in target.iterdir()) == ["item.json", "l2a.tif", "notes.txt", "tci.tif"]
    assert (target / "l2a.tif").read_text() == "new" and (target / "notes.txt").read_text() == "old"
    assert not staging.exists()


def test_make_options_accepts_a_field_named_model(tmp_path):
    """Regression: the shared validation helper once took ``model`` as its own first argument."""
    options = pipeline.make_options(input=tmp_path / "x.tif", output=tmp_path / "o", method="ai",
                                    model=tmp_path / "m.onnx")
    assert options.model == tmp_path / "m.onnx"
