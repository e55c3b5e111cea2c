"""Per-class decision thresholds tuned on validation predictions (stored with the model).

A single 0.5 cut-off is rarely the F1-optimal one for rare classes under a weighted loss, so each class
gets the threshold that maximises its own F1 on the validation split. Classes without a positive in
validation keep the default (nothing to tune on). Ties go to the threshold closest to the default.
"""

from __future__ import annotations

import numpy as np

from eotwin.errors import EotwinError

DEFAULT_GRID = np.round(np.arange(0.02, 0.99, 0.01), 2)


def f1_per_class(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray | float) -> np.ndarray:
    """Per-class F1 of ``probs >= thresholds`` (0 where a class has no positive and no prediction)."""
    pred = np.asarray(probs, dtype=np.float32) >= np.asarray(thresholds, dtype=np.float32)
    truth = np.asarray(targets) > 0.5
    tp = (pred & truth).sum(axis=0)
    fp = (pred & ~truth).sum(axis=0)
    fn = (~pred & truth).sum(axis=0)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, grid: np.ndarray | None = None,
                    default: float = 0.5) -> np.ndarray:
    """(K,) thresholds maximising each class's F1 over ``grid`` on (N, K) probabilities and targets."""
    probs = np.asarray(probs, dtype=np.float32)  # compared in float32, as the stored thresholds are used
    targets = np.asarray(targets)
    if probs.shape != targets.shape or probs.ndim != 2:
        raise EotwinError(f"probabilities {probs.shape} and targets {targets.shape} must both be (N, classes)")
    if probs.shape[0] == 0:
        raise EotwinError("no validation predictions to tune thresholds on")
    grid = (DEFAULT_GRID if grid is None else np.asarray(grid)).astype(np.float32)
    truth = targets > 0.5
    pred = probs[None, :, :] >= grid[:, None, None]  # (T, N, K)
    tp = (pred & truth[None]).sum(axis=1)
    fp = (pred & ~truth[None]).sum(axis=1)
    fn = (~pred & truth[None]).sum(axis=1)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)  # (T, K)
    best = f1.max(axis=0)
    closeness = -np.abs(grid.astype(np.float64) - default)[:, None]
    candidates = np.where(np.isclose(f1, best[None]), closeness, -np.inf)
    chosen = grid[np.argmax(candidates, axis=0)]
    has_positive = truth.any(axis=0)
    return np.where(has_positive, chosen, default).astype(np.float32)
