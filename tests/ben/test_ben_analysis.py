import json

import numpy as np
import pandas as pd
import pytest

from eotwin.ben.analysis import analyse, imbalance, label_matrix
from eotwin.ben.labels import CLASSES_ORIGINAL
from eotwin.ben.sources.metadata import normalise_metadata
from eotwin.cli.main import run
from eotwin.errors import EotwinError

U, A, M = "Urban fabric", "Arable land", "Marine waters"


def _frame():
    return normalise_metadata(pd.DataFrame({
        "patch_id": [f"p{i}" for i in range(6)],
        "labels": [[U, A], [A], [A, M], [U], [A], [M]],
        "split": ["train", "train", "train", "test", "test", "train"],
        "country": ["Austria", "Austria", "Portugal", "Portugal", "Austria", "Finland"],
        "contains_seasonal_snow": [False, False, False, False, False, True],
        "contains_cloud_or_shadow": [False] * 6,
    }))


def test_label_matrix_and_unknown_labels():
    matrix = label_matrix([[U, M], [], [A]])
    assert matrix.shape == (3, 19)
    assert np.argwhere(matrix).tolist() == [[0, 0], [0, 18], [2, 2]]
    with pytest.raises(EotwinError):
        label_matrix([["Rice fields"]])


def test_statistics_by_hand():
    stats = analyse(_frame())
    u, a, m = (CLASSES_ORIGINAL.index(x) for x in (U, A, M))
    assert stats["patches"] == {"total": 6, "in_splits": 5, "by_split": {"train": 3, "test": 2}}
    train = stats["label_counts"]["train"]
    assert (train[u], train[a], train[m], sum(train)) == (1, 3, 1, 5)
    assert stats["label_frequency"]["test"][u] == 0.5
    imb = stats["imbalance"]["train"]
    assert imb["ratio"] == 3.0 and imb["absent_classes"] == 16
    assert imb["irlbl"][u] == 3.0 and imb["irlbl"][a] == 1.0 and imb["irlbl"][1] is None
    assert imb["mean_ir"] == pytest.approx((3 + 1 + 3) / 3)
    assert imb["pos_weight"][u] == 2.0 and imb["pos_weight"][a] == 0.0
    assert stats["labels_per_patch"]["train"]["histogram"] == {"1": 1, "2": 2}
    co = np.asarray(stats["cooccurrence"]["counts"])
    assert co[a, a] == 4 and co[u, a] == co[a, u] == 1 and co[a, m] == 1 and co[m, m] == 1  # snowy p5 left out
    conditional = np.asarray(stats["cooccurrence"]["conditional"])
    assert conditional[a, u] == 0.25 and conditional[u, a] == 0.5 and conditional[m, a] == 1.0
    assert stats["countries"]["Austria"]["patches"] == {"train": 2, "test": 1}
    assert stats["countries"]["Finland"] == {"patches": {"train": 0, "test": 0}, "total": 0, "excluded": 1,
                                             "label_frequency": [0.0] * 19}
    ex = stats["exclusions"]
    assert (ex["total"], ex["seasonal_snow"], ex["cloud_or_shadow"], ex["by_country"]) == (1, 1, 0, {"Finland": 1})
    assert stats["split_shift"]["test"] == {"max_abs_difference": 0.5, "class": A}  # Arable land: 3/3 train, 1/2 test
    assert imbalance(np.zeros(19), 0)["ratio"] is None


def test_analyze_real_full_metadata(tmp_path, capsys, shared_fixtures):
    report = tmp_path / "report"
    assert run(["-q", "ben", "analyze", str(shared_fixtures / "ben" / "real" / "metadata.parquet"), "-o", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "480,038 patches" in printed and "train 237,871" in printed
    stats = json.loads((report / "analysis.json").read_text())
    assert stats["patches"]["by_split"] == {"train": 237871, "validation": 122342, "test": 119825}
    totals = dict(zip(stats["classes"], stats["label_counts"]["all"], strict=True))
    assert (totals["Arable land"], totals["Mixed forest"], totals["Coastal wetlands"], totals["Beaches, dunes, sands"]) == \
        (188025, 165780, 1397, 1316)
    train = dict(zip(stats["classes"], stats["label_counts"]["train"], strict=True))
    assert stats["imbalance"]["train"]["ratio"] == pytest.approx(train["Arable land"] / train["Coastal wetlands"])
    assert sum(stats["labels_per_patch"]["all"]["histogram"].values()) == 480038
    assert stats["labels_per_patch"]["all"]["max"] == 11
    assert sum(c["total"] for c in stats["countries"].values()) == 480038 and stats["countries"]["Finland"]["total"] == 155227
    assert stats["exclusions"]["total"] == 0
    for name in ("label_frequency", "imbalance", "labels_per_patch", "cooccurrence", "countries", "country_labels"):
        assert (report / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report / "index.html").read_text()
    assert "Coastal wetlands" in page and "analysis.json" in page and "cooccurrence.png" in page


def test_analyze_mock_reports_exclusions_and_demo_step(tmp_path, capsys, ben_mock_dir, monkeypatch):
    assert run(["-q", "ben", "analyze", str(ben_mock_dir), "-o", str(tmp_path / "r")]) == 0
    assert "6 excluded" in capsys.readouterr().out
    stats = json.loads((tmp_path / "r" / "analysis.json").read_text())
    assert stats["exclusions"]["seasonal_snow"] == 3 and stats["exclusions"]["cloud_or_shadow"] == 3
    assert (tmp_path / "r" / "exclusions.png").is_file()

    from eotwin.ben.demo import ben_analysis_demo
    from eotwin.progress import NullProgress
    from eotwin.report.demo import DemoContext

    monkeypatch.setenv("EOTWIN_BEN_METADATA", str(ben_mock_dir / "metadata.parquet"))
    context = DemoContext(tmp_path / "demo", None, NullProgress())  # type: ignore[arg-type]
    artifacts = ben_analysis_demo(context)
    assert artifacts[0].kind == "report" and "24 patches" in artifacts[0].description
    for artifact in artifacts:
        assert (context.output_dir / artifact.path).is_file()


def test_analyze_bad_input_leaves_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    assert run(["ben", "analyze", str(bad), "-o", str(tmp_path / "out")]) == 2
    assert "cannot read metadata" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
