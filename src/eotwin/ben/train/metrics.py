"""Multi-label scores of BigEarthNet predictions (pure: probabilities and targets in, numbers out).

F1 at a threshold (0.5 or per-class tuned) and average precision (AP, threshold-free), micro and macro,
plus per-class values, computed with torchmetrics' functional API (the library reBEN and ConfigILM use).
Macro averages run over the classes with at least one positive in the evaluated set: a class absent
from a small split has no defined recall or AP, and counting it as 0 would score the split, not the
model. On the official test split every class is present and the two conventions agree.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from eotwin.errors import EotwinError


def _as_tensor(values: Any, dtype: torch.dtype) -> torch.Tensor:
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    return tensor.detach().to("cpu", dtype)


def multilabel_scores(probs: Any, targets: Any, thresholds: float | Sequence[float] | np.ndarray | torch.Tensor = 0.5,
                      classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Micro / macro F1 and mAP, micro precision and recall, and per-class F1, AP and support."""
    with warnings.catch_warnings():  # classes absent from a small split are handled below, not warned about
        warnings.simplefilter("ignore", UserWarning)
        return _scores(probs, targets, thresholds, classes)


def _scores(probs: Any, targets: Any, thresholds: Any, classes: Sequence[str] | None) -> dict[str, Any]:
    from torchmetrics.functional.classification import (
        multilabel_average_precision,
        multilabel_f1_score,
        multilabel_precision,
        multilabel_recall,
    )

    p = _as_tensor(probs, torch.float32)
    t = _as_tensor(targets, torch.float32).round().long()
    if p.ndim != 2 or p.shape != t.shape:
        raise EotwinError(f"probabilities {tuple(p.shape)} and targets {tuple(t.shape)} must both be (N, classes)")
    if p.shape[0] == 0:
        raise EotwinError("no predictions to score")
    k = p.shape[1]
    thr = _as_tensor(thresholds, torch.float32).reshape(-1)
    if thr.numel() not in (1, k):
        raise EotwinError(f"{thr.numel()} thresholds for {k} classes")
    binary = (p >= thr).float()
    support = t.sum(dim=0)
    present = support > 0
    f1_each = multilabel_f1_score(binary, t, num_labels=k, average="none", threshold=0.5, zero_division=0)
    ap_each = multilabel_average_precision(p, t, num_labels=k, average="none")
    ap_each = torch.where(present, torch.nan_to_num(ap_each, nan=0.0), torch.full_like(ap_each, float("nan")))
    scores: dict[str, Any] = {
        "samples": int(p.shape[0]),
        "f1_micro": float(multilabel_f1_score(binary, t, num_labels=k, average="micro", threshold=0.5, zero_division=0)),
        "f1_macro": float(f1_each[present].mean()) if present.any() else float("nan"),
        "map_micro": float(multilabel_average_precision(p, t, num_labels=k, average="micro")),
        "map_macro": float(ap_each[present].mean()) if present.any() else float("nan"),
        "precision_micro": float(multilabel_precision(binary, t, num_labels=k, average="micro", threshold=0.5,
                                                      zero_division=0)),
        "recall_micro": float(multilabel_recall(binary, t, num_labels=k, average="micro", threshold=0.5, zero_division=0)),
        "classes_present": int(present.sum()),
    }
    names = list(classes) if classes is not None else [str(i) for i in range(k)]
    scores["per_class"] = {
        name: {"f1": float(f1_each[i]) if present[i] else None, "ap": float(ap_each[i]) if present[i] else None,
               "support": int(support[i]), "threshold": float(thr[i] if thr.numel() == k else thr[0])}
        for i, name in enumerate(names)
    }
    return scores


def headline(scores: dict[str, Any]) -> str:
    """One line of the four published figures, in percent."""
    return (f"F1 micro {100 * scores['f1_micro']:.1f} macro {100 * scores['f1_macro']:.1f} | "
            f"mAP micro {100 * scores['map_micro']:.1f} macro {100 * scores['map_macro']:.1f}")


SEED_METRICS = ("f1_micro", "f1_macro", "map_micro", "map_macro", "precision_micro", "recall_micro")


def seed_summary(scores_by_seed: dict[int, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Mean and spread over seeds of each headline metric, per split and threshold kind.

    ``scores_by_seed[seed][split][kind]`` is a :func:`multilabel_scores` dict. The spread is the sample standard
    deviation (ddof 1; 0 for one seed) plus min and max, so the whole distribution is reported, not the best seed
    (reBEN's model cards give the best seed, chosen on test).
    """
    if not scores_by_seed:
        raise EotwinError("no seeds to summarise")
    seeds = sorted(scores_by_seed)
    splits = [split for split in scores_by_seed[seeds[0]] if all(split in scores_by_seed[s] for s in seeds)]
    summary: dict[str, Any] = {}
    for split in splits:
        summary[split] = {}
        for kind in scores_by_seed[seeds[0]][split]:
            summary[split][kind] = {}
            for metric in SEED_METRICS:
                values = np.array([scores_by_seed[s][split][kind][metric] for s in seeds], dtype=np.float64)
                summary[split][kind][metric] = {
                    "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "min": float(values.min()), "max": float(values.max()), "values": values.tolist(),
                }
    return {"seeds": seeds, "splits": summary}


def summary_line(metrics: dict[str, dict[str, float]]) -> str:
    """The four published figures as mean +- std over seeds, in percent."""
    return " | ".join(f"{name} {100 * metrics[key]['mean']:.1f} +- {100 * metrics[key]['std']:.1f}"
                      for name, key in (("F1 micro", "f1_micro"), ("F1 macro", "f1_macro"),
                                        ("mAP micro", "map_micro"), ("mAP macro", "map_macro")))
