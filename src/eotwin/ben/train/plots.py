"""Training curves from the CSV logs (every resumed segment, in order) as one PNG."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from eotwin.io.files import atomic_path


def read_metrics(log_root: Path) -> list[dict[str, Any]]:
    """Rows of every ``version_*/metrics.csv`` under ``log_root``, later segments last (a resume appends)."""
    rows: list[dict[str, Any]] = []
    files = sorted(log_root.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
    for path in files:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
    return rows


def epoch_series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of ``key``; a later row for the same epoch replaces an earlier one."""
    series: dict[float, float] = {}
    for row in rows:
        if key in row and "epoch" in row:
            series[row["epoch"]] = row[key]
    epochs = sorted(series)
    return [e + 1 for e in epochs], [series[e] for e in epochs]


def plot_curves(log_root: Path, target: Path, title: str = "BigEarthNet training") -> Path | None:
    """Loss, validation scores and learning rate per epoch / step; None when nothing was logged yet."""
    from eotwin.report.plotting import pyplot

    plt = pyplot()

    rows = read_metrics(log_root)
    if not rows:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for key, label in (("train/loss_epoch", "train"), ("val/loss", "validation")):
        x, y = epoch_series(rows, key)
        if x:
            axes[0].plot(x, y, marker="o", label=label)
    axes[0].set(title="Loss", xlabel="epoch")
    for key, label in (("val/f1_micro", "micro F1 @0.5"), ("val/f1_macro", "macro F1 @0.5"),
                       ("val/f1_micro_tuned", "micro F1 (tuned thresholds)"), ("val/map_micro", "micro mAP"),
                       ("val/map_macro", "macro mAP")):
        x, y = epoch_series(rows, key)
        if x:
            axes[1].plot(x, y, marker="o", label=label)
    axes[1].set(title="Validation scores", xlabel="epoch", ylim=(0, 1.02))
    lr_keys = sorted({k for row in rows for k in row if k.startswith("lr-")})
    shown: list[list[tuple[float, float]]] = []
    for key in lr_keys:
        points = [(row["step"], row[key]) for row in rows if key in row and "step" in row]
        if points and points not in shown and len(shown) < 4:  # parameter groups sharing a schedule: one line
            shown.append(points)
            axes[2].plot([p[0] for p in points], [p[1] for p in points], label=key.removeprefix("lr-"))
    axes[2].set(title="Learning rate", xlabel="step")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return target
