"""Losses against values computed by hand from their formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eotwin.ben.train.losses import AsymmetricLoss, FocalLoss, WeightedBCE, make_loss, pos_weight_from_targets
from eotwin.errors import EotwinError


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_pos_weight_is_negatives_over_positives():
    targets = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]], dtype=np.float32)
    # class 0: 3 pos 1 neg -> 1/3; class 1: 2 pos 2 neg -> 1; class 2: no positive -> 1
    np.testing.assert_allclose(pos_weight_from_targets(targets), [1 / 3, 1.0, 1.0], rtol=1e-6)
    rare = np.zeros((1000, 1), dtype=np.float32)
    rare[0] = 1
    assert pos_weight_from_targets(rare)[0] == pytest.approx(100.0)  # 999 capped at 100
    assert pos_weight_from_targets(rare, max_weight=None)[0] == pytest.approx(999.0)
    with pytest.raises(EotwinError):
        pos_weight_from_targets(np.zeros((0, 3)))


def test_weighted_bce_by_hand():
    logits = torch.tensor([[2.0, -1.0]])
    targets = torch.tensor([[1.0, 0.0]])
    loss = WeightedBCE(np.array([3.0, 0.5], dtype=np.float32))(logits, targets)
    # positive term weighted by pos_weight, negative term not: mean over the 2 entries
    expected = (3.0 * -math.log(_sig(2.0)) + -math.log(1 - _sig(-1.0))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert "pos_weight" in dict(WeightedBCE(np.ones(2)).named_buffers())


def test_focal_by_hand_and_torchvision():
    from torchvision.ops import sigmoid_focal_loss

    logits = torch.tensor([[1.5, -0.5], [0.2, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    got = float(FocalLoss(gamma=2.0, alpha=0.25)(logits, targets))
    terms = []
    for x, y in ((1.5, 1), (-0.5, 0), (0.2, 0), (3.0, 1)):
        p = _sig(x)
        p_t = p if y else 1 - p
        a_t = 0.25 if y else 0.75
        terms.append(-a_t * (1 - p_t) ** 2 * math.log(p_t))
    assert got == pytest.approx(sum(terms) / 4, rel=1e-6)
    assert got == pytest.approx(float(sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="mean")), rel=1e-6)
    # gamma 0 and no alpha: plain BCE
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert float(FocalLoss(gamma=0.0, alpha=None)(logits, targets)) == pytest.approx(float(bce), rel=1e-6)


def test_asymmetric_by_hand():
    logits = torch.tensor([[0.0, 1.0, -3.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0]])
    got = float(AsymmetricLoss(gamma_pos=1.0, gamma_neg=4.0, clip=0.05)(logits, targets))
    p0, p1, p2 = _sig(0.0), _sig(1.0), _sig(-3.0)
    pos = (1 - p0) ** 1 * math.log(p0)
    m1 = max(p1 - 0.05, 0.0)
    neg1 = m1**4 * math.log(1 - m1)
    m2 = max(p2 - 0.05, 0.0)  # p2 = 0.047 < clip: this easy negative is discarded entirely
    assert m2 == 0.0
    assert got == pytest.approx(-(pos + neg1), rel=1e-6)
    # gamma 0, clip 0: sum over classes of BCE
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    assert float(AsymmetricLoss(0.0, 0.0, 0.0)(logits, targets)) == pytest.approx(float(bce), rel=1e-5)


def test_make_loss_and_bad_parameters():
    assert isinstance(make_loss("asl"), AsymmetricLoss)
    assert isinstance(make_loss("focal"), FocalLoss)
    assert isinstance(make_loss("bce", pos_weight=np.ones(19)), WeightedBCE)
    with pytest.raises(EotwinError):
        make_loss("hinge")  # type: ignore[arg-type]
    with pytest.raises(EotwinError):
        FocalLoss(alpha=1.5)
