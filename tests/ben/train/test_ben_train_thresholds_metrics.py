"""Per-class threshold tuning, and our scores against scikit-learn on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest

from eotwin.ben.train.metrics import multilabel_scores
from eotwin.ben.train.thresholds import f1_per_class, tune_thresholds
from eotwin.errors import EotwinError


def test_thresholds_by_hand():
    # class 0: positives score 0.30 and 0.35, negatives 0.10 and 0.20 -> any cut in (0.20, 0.30] is perfect
    # class 1: never positive in validation -> keeps the default
    # class 2: positives 0.9, negative 0.95 and 0.1: best is to flag everything above 0.1 (F1 2/3)...
    probs = np.array([[0.30, 0.6, 0.90], [0.35, 0.7, 0.95], [0.10, 0.2, 0.10], [0.20, 0.9, 0.05]])
    targets = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 0], [0, 0, 0]])
    t = tune_thresholds(probs, targets)
    assert 0.20 < t[0] <= 0.30
    assert t[0] == pytest.approx(0.30)  # of the perfect cuts, the one closest to 0.5
    assert t[1] == pytest.approx(0.5)
    f1 = f1_per_class(probs, targets, t)
    assert f1[0] == pytest.approx(1.0)
    assert f1[2] == pytest.approx(max(f1_per_class(probs, targets, g)[2] for g in np.arange(0.02, 0.99, 0.01)))
    # tuned F1 is never below the 0.5 F1 on the set it was tuned on
    assert np.all(f1 >= f1_per_class(probs, targets, 0.5) - 1e-12)


def test_thresholds_random_never_worse_than_default():
    rng = np.random.default_rng(3)
    targets = (rng.random((200, 19)) < 0.15).astype(np.float32)
    probs = np.clip(0.3 * targets + 0.7 * rng.random((200, 19)), 0, 1)
    t = tune_thresholds(probs, targets)
    assert t.shape == (19,) and t.dtype == np.float32
    assert np.all(f1_per_class(probs, targets, t) >= f1_per_class(probs, targets, 0.5) - 1e-12)
    with pytest.raises(EotwinError):
        tune_thresholds(probs[:, :3], targets)


def test_scores_equal_scikit_learn():
    from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

    rng = np.random.default_rng(7)
    targets = (rng.random((300, 19)) < 0.2).astype(int)
    targets[0] = 1  # every class present
    probs = np.clip(0.35 * targets + 0.65 * rng.random((300, 19)), 0, 1).astype(np.float32)
    thresholds = rng.uniform(0.3, 0.7, 19).astype(np.float32)
    s = multilabel_scores(probs, targets, thresholds)
    pred = (probs >= thresholds).astype(int)
    assert s["f1_micro"] == pytest.approx(f1_score(targets, pred, average="micro"), abs=1e-6)
    assert s["f1_macro"] == pytest.approx(f1_score(targets, pred, average="macro"), abs=1e-6)
    assert s["precision_micro"] == pytest.approx(precision_score(targets, pred, average="micro"), abs=1e-6)
    assert s["recall_micro"] == pytest.approx(recall_score(targets, pred, average="micro"), abs=1e-6)
    assert s["map_micro"] == pytest.approx(average_precision_score(targets, probs, average="micro"), abs=1e-5)
    assert s["map_macro"] == pytest.approx(average_precision_score(targets, probs, average="macro"), abs=1e-5)
    per_f1 = f1_score(targets, pred, average=None)
    per_ap = average_precision_score(targets, probs, average=None)
    for i, values in enumerate(s["per_class"].values()):
        assert values["f1"] == pytest.approx(per_f1[i], abs=1e-6)
        assert values["ap"] == pytest.approx(per_ap[i], abs=1e-5)
        assert values["support"] == targets[:, i].sum()


def test_macro_scores_skip_absent_classes():
    from sklearn.metrics import average_precision_score, f1_score

    rng = np.random.default_rng(11)
    targets = (rng.random((50, 5)) < 0.4).astype(int)
    targets[:, 3] = 0  # class 3 absent from this split
    targets[0, [0, 1, 2, 4]] = 1
    probs = rng.random((50, 5)).astype(np.float32)
    s = multilabel_scores(probs, targets, 0.5)
    present = [0, 1, 2, 4]
    assert s["classes_present"] == 4
    assert s["per_class"]["3"]["ap"] is None and s["per_class"]["3"]["f1"] is None
    assert s["map_macro"] == pytest.approx(average_precision_score(targets[:, present], probs[:, present], average="macro"),
                                           abs=1e-5)
    assert s["f1_macro"] == pytest.approx(f1_score(targets[:, present], probs[:, present] >= 0.5, average="macro"),
                                          abs=1e-6)
    assert s["f1_micro"] == pytest.approx(f1_score(targets, probs >= 0.5, average="micro"), abs=1e-6)
