"""Label statistics of BigEarthNet metadata: frequency, imbalance, labels per patch, co-occurrence,
countries and snow/cloud exclusions. A pure core: a metadata frame in, plain numbers out.

Patches flagged with seasonal snow or cloud/shadow are outside the official splits; they are counted
under ``exclusions`` and left out of every per-split statistic, as in the published splits.

Imbalance measures (multi-label, per split):
* ``ratio``: most frequent / least frequent class count;
* ``irlbl``: per class, most frequent count / class count (Charte et al.'s imbalance ratio per label),
  and ``mean_ir``, its mean (above 1.5 the set is usually called imbalanced);
* ``pos_weight``: per class, negatives / positives, the weight of ``BCEWithLogitsLoss`` the original
  project used (computed on the train split for training).
"""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from eotwin.ben.labels import ClassOrder, class_names
from eotwin.errors import EotwinError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SPLITS = ("train", "validation", "test")


def label_matrix(labels: Any, order: ClassOrder = "original") -> np.ndarray:
    """(N, 19) boolean matrix from a sequence of label lists."""
    names = class_names(order)
    index = {name: i for i, name in enumerate(names)}
    lists = list(labels)
    lengths = np.fromiter((len(item) for item in lists), dtype=np.int64, count=len(lists))
    try:
        columns = np.fromiter((index[name] for name in chain.from_iterable(lists)), dtype=np.int64,
                              count=int(lengths.sum()))
    except KeyError as exc:
        raise EotwinError(f"'{exc.args[0]}' is not one of the 19 BigEarthNet classes") from None
    matrix = np.zeros((len(lists), len(names)), dtype=bool)
    matrix[np.repeat(np.arange(len(lists)), lengths), columns] = True
    return matrix


def imbalance(counts: np.ndarray, patches: int) -> dict[str, Any]:
    """Imbalance measures of one split from per-class positive counts and its patch count."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return {"max_count": 0, "min_count": 0, "ratio": None, "irlbl": [None] * len(counts), "mean_ir": None,
                "pos_weight": [None] * len(counts), "absent_classes": int((~present).sum())}
    top = counts.max()
    irlbl = np.where(present, top / np.where(present, counts, 1), np.nan)
    pos_weight = np.where(present, (patches - counts) / np.where(present, counts, 1), np.nan)
    return {
        "max_count": int(top),
        "min_count": int(counts[present].min()),
        "ratio": float(top / counts[present].min()),
        "irlbl": _nan_to_none(irlbl),
        "mean_ir": float(np.nanmean(irlbl)),
        "pos_weight": _nan_to_none(pos_weight),
        "absent_classes": int((~present).sum()),
    }


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def _labels_per_patch(matrix: np.ndarray) -> dict[str, Any]:
    per_patch = matrix.sum(axis=1)
    if per_patch.size == 0:
        return {"histogram": {}, "mean": None, "median": None, "max": None, "min": None}
    values, counts = np.unique(per_patch, return_counts=True)
    return {"histogram": {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
            "mean": float(per_patch.mean()), "median": float(np.median(per_patch)),
            "min": int(per_patch.min()), "max": int(per_patch.max())}


def analyse(frame: pd.DataFrame, order: ClassOrder = "original") -> dict[str, Any]:
    """Every statistic of the report, as JSON-ready plain values (class lists follow ``order``)."""
    names = class_names(order)
    if len(frame) == 0:
        raise EotwinError("the metadata holds no patches")
    matrix = label_matrix(frame["labels"], order)
    split = frame["split"].astype("string").fillna("none").to_numpy(dtype=object)
    snow = frame["contains_seasonal_snow"].to_numpy(dtype=bool)
    cloud = frame["contains_cloud_or_shadow"].to_numpy(dtype=bool)
    country = frame["country"].astype("string").fillna("unknown").to_numpy(dtype=object)
    kept = ~(snow | cloud)
    splits = [s for s in SPLITS if (split[kept] == s).any()] + sorted(set(split[kept]) - set(SPLITS))

    groups = {s: kept & (split == s) for s in splits}
    groups["all"] = kept
    result: dict[str, Any] = {
        "classes": list(names),
        "class_order": order,
        "splits": splits,
        "patches": {"total": len(frame), "in_splits": int(kept.sum()),
                    "by_split": {s: int(groups[s].sum()) for s in splits}},
        "label_counts": {}, "label_frequency": {}, "imbalance": {}, "labels_per_patch": {},
    }
    for name, mask in groups.items():
        counts = matrix[mask].sum(axis=0)
        patches = int(mask.sum())
        result["label_counts"][name] = counts.astype(int).tolist()
        result["label_frequency"][name] = (counts / patches).tolist() if patches else [0.0] * len(names)
        result["imbalance"][name] = imbalance(counts, patches)
        result["labels_per_patch"][name] = _labels_per_patch(matrix[mask])

    kept_matrix = matrix[kept].astype(np.float64)
    co = kept_matrix.T @ kept_matrix  # exact for integer counts far beyond BigEarthNet's size
    diagonal = np.diag(co)
    conditional = np.divide(co, diagonal[:, None], out=np.zeros_like(co), where=diagonal[:, None] > 0)
    result["cooccurrence"] = {"counts": co.astype(np.int64).tolist(),
                              "conditional": conditional.tolist(),
                              "description": "conditional[i][j] = P(class j present | class i present)"}

    if "train" in splits and len(splits) > 1:
        train = np.asarray(result["label_frequency"]["train"])
        result["split_shift"] = {
            s: {"max_abs_difference": float(np.abs(np.asarray(result["label_frequency"][s]) - train).max()),
                "class": names[int(np.abs(np.asarray(result["label_frequency"][s]) - train).argmax())]}
            for s in splits if s != "train"
        }

    countries: dict[str, Any] = {}
    for name in sorted(set(country)):
        in_country = country == name
        mask = kept & in_country
        countries[name] = {
            "patches": {s: int((mask & (split == s)).sum()) for s in splits},
            "total": int(mask.sum()),
            "excluded": int((in_country & ~kept).sum()),
            "label_frequency": (matrix[mask].mean(axis=0).tolist() if mask.any() else [0.0] * len(names)),
        }
    result["countries"] = countries

    excluded = ~kept
    result["exclusions"] = {
        "total": int(excluded.sum()),
        "seasonal_snow": int(snow.sum()),
        "cloud_or_shadow": int(cloud.sum()),
        "both": int((snow & cloud).sum()),
        "by_split": {s: int((excluded & (split == s)).sum()) for s in sorted(set(split[excluded]))},
        "by_country": {c: int((excluded & (country == c)).sum()) for c in sorted(set(country[excluded]))},
        "label_counts": matrix[excluded].sum(axis=0).astype(int).tolist(),
        "share_of_all_patches": float(excluded.mean()),
    }
    return result
