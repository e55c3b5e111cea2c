"""Multi-label losses for imbalanced BigEarthNet labels (logits in, a scalar out).

* ``bce``: binary cross-entropy with ``pos_weight`` = negatives / positives per class, from the train
  labels (the original project's method): rare classes weigh as much as frequent ones in the gradient.
* ``focal``: sigmoid focal loss (Lin et al. 2017), ``alpha``-balanced, ``gamma`` down-weights easy examples;
  identical to ``torchvision.ops.sigmoid_focal_loss`` with mean reduction.
* ``asl``: asymmetric loss (Ridnik et al. 2021): separate focusing for positives and negatives and a
  probability margin ``clip`` that discards very easy negatives, made for many-negative multi-label sets.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from eotwin.errors import EotwinError

LossName = Literal["bce", "focal", "asl"]


def pos_weight_from_targets(targets: np.ndarray, max_weight: float | None = 100.0) -> np.ndarray:
    """Per-class negatives / positives of an (N, K) multi-hot matrix; classes with no positive get 1.

    ``max_weight`` caps the weight of very rare classes (None: no cap) so one patch cannot dominate.
    """
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2 or targets.shape[0] == 0:
        raise EotwinError(f"need an (N, classes) label matrix with N > 0, got shape {targets.shape}")
    positives = targets.sum(axis=0)
    negatives = targets.shape[0] - positives
    weight = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    if max_weight is not None:
        weight = np.minimum(weight, max_weight)
    return weight.astype(np.float32)


class WeightedBCE(nn.Module):
    """``BCEWithLogitsLoss`` whose ``pos_weight`` is a buffer, so it travels with checkpoints and devices."""

    def __init__(self, pos_weight: torch.Tensor | np.ndarray | None = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), pos_weight=self.pos_weight)


class FocalLoss(nn.Module):
    """Sigmoid focal loss: ``-alpha_t (1 - p_t)^gamma log(p_t)``, averaged over samples and classes."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.25) -> None:
        super().__init__()
        if gamma < 0 or (alpha is not None and not 0 <= alpha <= 1):
            raise EotwinError("focal loss needs gamma >= 0 and alpha in [0, 1] (or none)")
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce * (1 - p_t) ** self.gamma
        if self.alpha is not None:
            loss = (self.alpha * targets + (1 - self.alpha) * (1 - targets)) * loss
        return loss.mean()


class AsymmetricLoss(nn.Module):
    """Asymmetric loss: positives ``(1-p)^gp log p``, negatives ``p_m^gn log(1-p_m)`` with ``p_m = max(p - clip, 0)``.

    Reduction: sum over classes, mean over samples (the paper sums over everything; the mean keeps the
    learning rate independent of the batch size).
    """

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05, eps: float = 1e-8) -> None:
        super().__init__()
        if gamma_pos < 0 or gamma_neg < 0 or not 0 <= clip < 1:
            raise EotwinError("asymmetric loss needs gamma_pos, gamma_neg >= 0 and clip in [0, 1)")
        self.gamma_pos, self.gamma_neg, self.clip, self.eps = gamma_pos, gamma_neg, clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        p = torch.sigmoid(logits)
        p_neg = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        loss_pos = targets * (1 - p) ** self.gamma_pos * torch.log(p.clamp(min=self.eps))
        loss_neg = (1 - targets) * p_neg**self.gamma_neg * torch.log((1 - p_neg).clamp(min=self.eps))
        return -(loss_pos + loss_neg).sum(dim=1).mean()


def make_loss(name: LossName, *, pos_weight: np.ndarray | None = None, gamma: float = 2.0, alpha: float | None = 0.25,
              gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05) -> nn.Module:
    """The loss module named in the config."""
    if name == "bce":
        return WeightedBCE(pos_weight)
    if name == "focal":
        return FocalLoss(gamma=gamma, alpha=alpha)
    if name == "asl":
        return AsymmetricLoss(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip)
    raise EotwinError(f"unknown loss '{name}': use bce, focal or asl")
