"""Accuracy metrics of a corrected product against a reference, per band (pure arrays in, numbers out).

:class:`MetricsAccumulator` streams over blocks (the run's ``--reference``, ``atmocorr evaluate``);
:func:`band_metrics` scores whole arrays at once (the held-out scenes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from eotwin.sentinel2.bands import L2A_BANDS

SPEC_ABS, SPEC_REL = 0.005, 0.05  # L2A accuracy specification: |error| <= 0.005 + 0.05 x reflectance


@dataclass
class MetricsAccumulator:
    """Streaming per-band RMSE, MAE, bias, R2 and share within the L2A specification, and the mean
    spectral angle, over valid pixels.

    The specification (the VIIRS/Sentinel-2 L2A objective) is |error| <= 0.005 + 0.05 x reference
    reflectance; ``within_spec`` is that share per band, and its mean over bands at the top.
    """

    bands: tuple[str, ...]
    n: int = 0
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    sam_sum: float = 0.0

    def __post_init__(self) -> None:
        for key in ("d", "ad", "d2", "r", "r2", "spec"):
            self.sums[key] = np.zeros(len(self.bands), dtype=np.float64)

    def add(self, pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> None:
        p = pred[:, mask].astype(np.float64)
        r = ref[:, mask].astype(np.float64)
        if p.shape[1] == 0:
            return
        d = p - r
        self.n += p.shape[1]
        self.sums["d"] += d.sum(axis=1)
        self.sums["ad"] += np.abs(d).sum(axis=1)
        self.sums["d2"] += (d * d).sum(axis=1)
        self.sums["r"] += r.sum(axis=1)
        self.sums["r2"] += (r * r).sum(axis=1)
        # + 1e-6 (a hundredth of a DN): integer DN often land exactly on the limit, float32 rounding must not decide
        self.sums["spec"] += (np.abs(d) <= SPEC_ABS + SPEC_REL * np.maximum(r, 0.0) + 1e-6).sum(axis=1)
        cos = (p * r).sum(axis=0) / np.maximum(np.linalg.norm(p, axis=0) * np.linalg.norm(r, axis=0), 1e-12)
        self.sam_sum += float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).sum())

    def result(self) -> dict[str, object]:
        if self.n == 0:
            return {"pixels": 0, "bands": {}}
        n = self.n
        mean_r = self.sums["r"] / n
        sst = self.sums["r2"] - n * mean_r**2
        bands = {}
        for i, b in enumerate(self.bands):
            bands[b] = {
                "rmse": float(math.sqrt(self.sums["d2"][i] / n)),
                "mae": float(self.sums["ad"][i] / n),
                "bias": float(self.sums["d"][i] / n),
                "r2": float(1.0 - self.sums["d2"][i] / sst[i]) if sst[i] > 0 else None,
                "within_spec": float(self.sums["spec"][i] / n),
            }
        return {
            "pixels": n,
            "bands": bands,
            "mean_rmse": float(np.mean([v["rmse"] for v in bands.values()])),
            "within_spec": float(np.mean([v["within_spec"] for v in bands.values()])),
            "sam_degrees": self.sam_sum / n,
        }


def band_metrics(
    pred: np.ndarray, truth: np.ndarray, bands: tuple[str, ...] = L2A_BANDS
) -> dict[str, dict[str, float]]:
    """RMSE, MAE and bias per band over pixels finite in both (bands first)."""
    ok = np.isfinite(pred).all(axis=0) & np.isfinite(truth).all(axis=0)
    d = pred[:, ok].astype(np.float64) - truth[:, ok]
    return {b: {"rmse": float(np.sqrt(np.mean(d[i] ** 2))), "mae": float(np.mean(np.abs(d[i]))),
                "bias": float(np.mean(d[i]))} for i, b in enumerate(bands)}
