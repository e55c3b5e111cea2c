"""Out-of-distribution score of a scene for the AI correction: does the network know scenes like this?

The network estimates the atmosphere from the *context* of each atmosphere cell: window means of
its cell inputs (TOA means, minima and the surfaces under hypothetical atmospheres,
:func:`eotwin.atmocorr.ai.cells.network_inputs`) over up to ``max(windows)`` cells. A scene whose
contexts look unlike any the network was trained on (a desert, open water, a tropical forest when it
saw Austrian farmland) gets an atmosphere the network has no evidence for, with no sign of it in its
output. So the score is a density model of those contexts:

1. per cell the network's own inputs, as it normalises them: log TOA means, log TOA minima and the
   hypothesis surfaces (clamped to [-0.5, 1]); per atmosphere cell their weighted mean over the
   network's largest context window and the window minimum of the log minima (its dark-object
   evidence) (:func:`context_features`);
2. the Mahalanobis distance of each atmosphere cell's context to the mean and covariance of the
   contexts of the training scenes (:func:`fit_statistics` draws them with
   :func:`eotwin.atmocorr.ai.synth.make_batch` exactly as training does), divided by the square root
   of the number of features, so 1 is a typical training context;
3. the scene score: the mean of that distance over the atmosphere cells the network can use.

The statistics depend on the inputs and the training data, not on the weights: they are stored
beside the model (``<model>.ood.json``) with the cell configuration they were computed for, and a
retrained model whose cells differ, or a model without statistics, is reported, never scored silently.
The threshold is calibrated on held-out scenes only (:func:`calibrate_threshold`).

Pure numpy, except :func:`load_statistics` / :func:`write_statistics` (files) and :func:`fit_statistics`
(which draws its scenes through :mod:`~eotwin.atmocorr.ai.synth`, reading the BigEarthNet patches).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eotwin.atmocorr.ai import cells as cellmath
from eotwin.errors import EotwinError

FEATURES = "ood-context-1"  # the feature definition below; statistics of another one are refused
STATS_SUFFIX = ".ood.json"
SHRINKAGE = 0.05  # the correlation matrix is shrunk towards the identity by this much (rank, noise)
# an atmosphere cell counts when its window holds this share of usable cells, or half the best share in
# the scene when the scene is smaller than the window (a 24 x 42 px scene fills a tenth of it)
MIN_WINDOW_WEIGHT = 0.25
CONFIG_KEYS = ("cell", "out_stride", "bright_toa", "hypotheses", "windows")


def stats_path(model_path: Path) -> Path:
    """Where a model's OOD statistics live: beside it, ``ai_atmocorr.onnx`` -> ``ai_atmocorr.ood.json``."""
    return Path(model_path).with_suffix(STATS_SUFFIX)


@dataclass
class OodStatistics:
    """Mean and precision of the training contexts, and the threshold calibrated on held-out scenes."""

    mean: np.ndarray  # (k,)
    scale: np.ndarray  # (k,) standard deviation per feature
    precision: np.ndarray  # (k, k) inverse of the shrunk correlation matrix
    config: dict  # the model's cell configuration the features were computed with (CONFIG_KEYS)
    threshold: float = math.inf
    calibration: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"features": FEATURES, "config": self.config, "threshold": self.threshold,
                "calibration": self.calibration, "training": self.training,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "precision": self.precision.tolist()}

    @classmethod
    def from_json(cls, data: dict, source: str = "statistics") -> OodStatistics:
        if data.get("features") != FEATURES:
            raise EotwinError(f"{source}: OOD features {data.get('features')!r}, expected {FEATURES!r}: "
                              "recompute them (benchmarks/atmocorr_ood.py --fit)")
        return cls(np.asarray(data["mean"], np.float64), np.asarray(data["scale"], np.float64),
                   np.asarray(data["precision"], np.float64), dict(data["config"]), float(data["threshold"]),
                   dict(data.get("calibration", {})), dict(data.get("training", {})))


def model_cell_config(config: dict) -> dict:
    """The part of a model's configuration the features depend on (see :data:`CONFIG_KEYS`)."""
    return {"cell": int(config["cell"]), "out_stride": int(config["out_stride"]),
            "bright_toa": float(config["bright_toa"]), "hypotheses": int(config.get("hypotheses", 0)),
            "windows": [int(w) for w in config["windows"]]}


def check_config(stats: OodStatistics, config: dict, source: str = "OOD statistics") -> None:
    """A one-line error when the statistics were computed for other cells than the model's."""
    want = model_cell_config(config)
    if model_cell_config(stats.config) != want:
        raise EotwinError(f"{source} were computed for cells {stats.config}, the model uses {want}: "
                          "recompute them (benchmarks/atmocorr_ood.py --fit)")


def model_digest(path: Path) -> str:
    """SHA-256 of a model file: the statistics record the model they were fitted and calibrated for."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def stale_note(stats: OodStatistics, model_path: Path) -> str | None:
    """A note when the statistics were made for another model file (a retrained model: the cells match, so
    the score still means "unlike the old training scenes", but the new training data may differ)."""
    recorded = stats.training.get("model_sha256")
    if recorded is None or recorded == model_digest(model_path):
        return None
    return "computed for another model file: refit them (benchmarks/atmocorr_ood.py --fit)"


# ----------------------------------------------------------------------------- features (pure)
def _box_sum(x: np.ndarray, size: int) -> np.ndarray:
    """Sum over a ``size`` x ``size`` window centred on each element of the last two axes (zeros outside)."""
    r = size // 2
    pad = [(0, 0)] * (x.ndim - 2) + [(r + 1, r), (r + 1, r)]
    c = np.cumsum(np.cumsum(np.pad(x.astype(np.float64), pad), axis=-2), axis=-1)
    h, w = x.shape[-2:]
    return (c[..., size:size + h, size:size + w] - c[..., :h, size:size + w]
            - c[..., size:size + h, :w] + c[..., :h, :w])


def _window_min(x: np.ndarray, size: int) -> np.ndarray:
    """Minimum over a ``size`` x ``size`` window of the last two axes (separable, +inf outside)."""
    from scipy.ndimage import minimum_filter1d

    out = minimum_filter1d(x, size, axis=-2, mode="constant", cval=np.inf)
    return minimum_filter1d(out, size, axis=-1, mode="constant", cval=np.inf)


def context_features(cells: np.ndarray, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """Context features (k, Ha, Wa) per atmosphere cell and the share of usable cells in each window (Ha, Wa).

    ``cells`` are the network's inputs (:func:`cells.network_inputs`, H and W multiples of ``out_stride``).
    """
    n = cellmath.N_BANDS
    frac = cells[2 * n]
    usable = (frac > 0).astype(np.float64)
    weight = frac * usable
    per_cell = [np.log(np.clip(cells[:n], 1e-3, None)), np.log(np.clip(cells[n:2 * n], 1e-3, None))]
    if cells.shape[0] > cellmath.N_BASE_INPUTS:
        per_cell.append(np.clip(cells[cellmath.N_BASE_INPUTS:], -0.5, 1.0))
    x = np.concatenate(per_cell).astype(np.float64)
    size = int(max(config["windows"]))
    count = _box_sum(weight, size)
    mean = _box_sum(x * weight, size) / np.maximum(count, 1e-9)
    low = _window_min(np.where(usable > 0, per_cell[1], np.inf), size)
    low = np.where(np.isfinite(low), low, 0.0)
    s = int(config["out_stride"])
    feats = np.concatenate([mean, low])
    pooled = cellmath.pool(feats, s)
    share = cellmath.pool(count / float(size * size), s)
    return pooled, share


def scene_context(toa: np.ndarray, angles: np.ndarray, lut, sensor: str, config: dict,
                  valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Context features (k, n) of the atmosphere cells of a scene the network can use, and their weights (n,).

    ``angles`` as for :func:`cells.network_inputs` (per pixel, or (3, 1, 1) for the same everywhere).
    """
    toa = np.asarray(toa, np.float32)
    if valid is None:
        valid = np.isfinite(toa).all(axis=0)
    cells, _, _ = cellmath.network_inputs(
        toa, valid, angles, lut, sensor, cell=int(config["cell"]), out_stride=int(config["out_stride"]),
        bright_toa=float(config["bright_toa"]), hypotheses=int(config.get("hypotheses", 0)))
    feats, share = context_features(cells, config)
    best = float(share.max()) if share.size else 0.0
    keep = (share.ravel() >= min(MIN_WINDOW_WEIGHT, 0.5 * best)) & (share.ravel() > 0)
    return feats.reshape(feats.shape[0], -1)[:, keep], share.ravel()[keep]


def distances(feats: np.ndarray, stats: OodStatistics) -> np.ndarray:
    """Mahalanobis distance per column of ``feats`` (k, n), divided by sqrt(k): about 1 for training contexts."""
    z = (feats - stats.mean[:, None]) / stats.scale[:, None]
    d2 = np.einsum("in,ij,jn->n", z, stats.precision, z)
    return np.sqrt(np.maximum(d2, 0.0) / z.shape[0])


def scene_score(toa: np.ndarray | Sequence[np.ndarray], angles: np.ndarray, lut, sensor: str,
                stats: OodStatistics, valid: np.ndarray | None = None) -> tuple[float, int]:
    """The scene's OOD score and the number of atmosphere cells it rests on.

    ``toa``: the scene (12, h, w) at full resolution, or a list of full-resolution windows of it (their
    atmosphere cells pooled; ``valid`` then unused: no data is NaN). A scene where no atmosphere cell has
    usable pixels (all cloud, snow or no data) scores infinity: the network has nothing to read there.
    """
    parts = [toa] if isinstance(toa, np.ndarray) else list(toa)
    contexts = [scene_context(p, angles, lut, sensor, stats.config, valid if len(parts) == 1 else None)
                for p in parts]
    feats = np.concatenate([f for f, _ in contexts], axis=1)
    weights = np.concatenate([w for _, w in contexts])
    if feats.shape[1] == 0:
        return math.inf, 0
    d = distances(feats, stats)
    return float(np.average(d, weights=weights)), int(d.size)


def sample_windows(height: int, width: int, size: int = 512, per_side: int = 3, align: int = 256
                   ) -> list[tuple[int, int, int, int]]:
    """(row_off, col_off, height, width) of ``per_side`` x ``per_side`` windows of ``size`` px spread evenly
    over a scene, starting on multiples of ``align`` px (256: whole tiles of a stack or staging file).

    The score must see full-resolution cells: on a decimated view a cell covers more ground, its minima
    rise and its contexts widen, and held-out scenes decimated 3x score above the threshold.
    """
    def starts(n: int) -> list[int]:
        if n <= size:
            return [0]
        out = []
        for i in range(per_side):
            centre = (i + 0.5) * n / per_side
            out.append(int(min(max(centre - size / 2, 0), n - size)) // align * align)
        return sorted(set(out))

    h, w = min(size, height), min(size, width)
    return [(r, c, h, w) for r in starts(height) for c in starts(width)]


# ----------------------------------------------------------------------------- fitting and calibration
def fit_from_features(feats: np.ndarray, config: dict, shrinkage: float = SHRINKAGE) -> OodStatistics:
    """Mean, scale and shrunk-correlation precision of training contexts (k, n)."""
    if feats.shape[1] < 2 * feats.shape[0]:
        raise EotwinError(f"too few training contexts ({feats.shape[1]}) for {feats.shape[0]} features")
    mean = feats.mean(axis=1)
    scale = np.maximum(feats.std(axis=1), 1e-6)
    z = (feats - mean[:, None]) / scale[:, None]
    corr = (z @ z.T) / z.shape[1]
    corr = (1.0 - shrinkage) * corr + shrinkage * np.eye(corr.shape[0])
    return OodStatistics(mean, scale, np.linalg.inv(corr), model_cell_config(config))


def fit_statistics(surfaces: Sequence[np.ndarray] | Mapping[str, Sequence[np.ndarray]], lut, config: dict, *,
                   scenes: int = 240, seed: int = 7,
                   spectra: np.ndarray | None = None, layout: tuple[int, int] = (2, 2), jitter: bool = True,
                   batch: int = 8) -> OodStatistics:
    """Statistics of the contexts of ``scenes`` training scenes drawn as :mod:`~eotwin.atmocorr.ai.train`
    draws them (:func:`synth.make_batch`: mosaics of ``layout`` training surfaces with the built-in spectra
    painted in and the surface jitter, each under its own atmosphere; ``surfaces`` a list, or lists by
    source as the trainer passes them). The trainer calls it with its surfaces and layout after a retraining."""
    from eotwin.atmocorr.ai import synth

    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, scenes, batch):
        made = synth.make_batch(surfaces, lut, rng, min(batch, scenes - start), 0, spectra=spectra, jitter=jitter,
                                layout=layout)
        for toa, angles, atm in zip(made.toa, made.angles, made.atmospheres, strict=True):
            feats, _ = scene_context(toa, angles[:, :1, :1], lut, atm.sensor, config)
            parts.append(feats)
    stats = fit_from_features(np.concatenate(parts, axis=1), config)
    stats.training = {"scenes": scenes, "seed": seed, "layout": list(layout), "jitter": jitter,
                      "spectra": spectra is not None,
                      "surfaces": {k: len(v) for k, v in surfaces.items()} if isinstance(surfaces, Mapping)
                      else len(surfaces),
                      "contexts": int(sum(p.shape[1] for p in parts))}
    return stats


def calibrate_threshold(stats: OodStatistics, held_out_scores: Iterable[float], margin: float = 1.25) -> float:
    """The threshold: ``margin`` x the highest score of held-out in-distribution scenes (set on those alone,
    never on the foreign scenes it is meant to catch); recorded in ``stats``."""
    scores = np.asarray(list(held_out_scores), np.float64)
    if scores.size == 0 or not np.isfinite(scores).all():
        raise EotwinError("calibration needs finite scores of held-out scenes")
    stats.threshold = float(round(margin * scores.max(), 3))
    stats.calibration = {"rule": f"{margin} x the highest held-out score", "held_out_scenes": int(scores.size),
                         "held_out_max": float(scores.max()), "held_out_mean": float(scores.mean()),
                         "held_out_p95": float(np.percentile(scores, 95))}
    return stats.threshold


# ----------------------------------------------------------------------------- files
def write_statistics(path: Path, stats: OodStatistics) -> Path:
    """Compact JSON, numbers to 7 significant digits (the distances change by less than 1e-5)."""
    from eotwin.io.files import write_text_atomic

    def compact(value: object) -> object:
        if isinstance(value, float):
            return float(f"{value:.7g}")
        if isinstance(value, list):
            return [compact(v) for v in value]
        if isinstance(value, dict):
            return {k: compact(v) for k, v in value.items()}
        return value

    write_text_atomic(Path(path), json.dumps(compact(stats.to_json()), separators=(",", ":")) + "\n")
    return Path(path)


def load_statistics(path: Path) -> OodStatistics:
    """The statistics at ``path`` (a one-line error when unreadable)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise EotwinError(f"cannot read OOD statistics {path}: {exc}") from None
    return OodStatistics.from_json(data, str(path))
