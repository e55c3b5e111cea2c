"""Fine-tuning the atmosphere network on a user's real L1C/L2A pairs (``eotwin atmocorr train --pairs``).

The network keeps its job: it estimates the *atmosphere* (AOT, water vapour, ozone, P(maritime))
and the 6S table turns that into the terms of the exact Lambertian inversion
(:func:`eotwin.atmocorr.ai.train.forward`: :class:`~eotwin.atmocorr.ai.model.TableLayer`,
:func:`~eotwin.atmocorr.ai.model.upsample`, :func:`~eotwin.atmocorr.ai.model.invert`). What changes
is the target: instead of the true surface of simulated scenes, the L2A reference of each pair
(sen2cor's), on its SCL-clear land pixels, in every band both products have. So the gradient only
ever reaches the weights through the atmosphere: the result is still a physical correction.

Why each choice:

- Huber loss per band (quadratic below ``huber`` reflectance, linear above): sen2cor's L2A is
  terrain- and illumination-corrected, a flat correction cannot reproduce a slope re-lit by 20 %;
  those pixels would dominate a squared loss and drag the AOT to wherever the slopes' mean lies.
- SCL 4 (vegetation) and 5 (not vegetated) by default: water (6) is optional, sen2cor's water
  reflectance carries glint and adjacency effects the table does not model; clouds, shadows, snow
  and unclassified pixels never count.
- A pull towards the initial model's atmosphere on the same scenes (``anchor``): a few pairs say
  little, and the atmosphere should only move as far as the pairs demand.
- The scene geometry of the table layer is each pair's mean geometry (as in training: one geometry
  per scene); the network still sees its angles per cell. The ozone is the product's own when it has
  one (``OZONE`` tag, ECMWF), as the ``ai`` corrector uses it; else the network's estimate.

Everything is read and checked before the first step, so bad input is a one-line error with
nothing written; the weights (``.pt``) and the ONNX model are written atomically at the end.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from eotwin.atmocorr.ai import DEFAULT_MODEL_PATH, DEFAULT_WEIGHTS_PATH
from eotwin.errors import EotwinError
from eotwin.geo.grid import Window
from eotwin.progress import ProgressReporter, ensure_progress

FINETUNE_SCL = (4, 5)  # vegetation, not vegetated (6: water, optional)
ALLOWED_SCL = (4, 5, 6, 7)  # never clouds, shadows, snow, saturated or no data
MIN_CLEAR_PIXELS = 36  # one cell of the network
# a pair above this many pixels (a full tile: 120 M) is read as windows: whole, 12 bands of TOA, reference and mask
# would take some 12 GB; 16 windows of 512 px hold 4.2 M pixels (about 0.7 GB with the network's inputs)
WHOLE_PAIR_MAX_PIXELS = 2048 * 2048
# the loss of one scene looks at every k-th pixel, k the smallest step leaving at most this many: the graph kept
# for the backward pass holds some 15 tensors of 12 bands per loss pixel (1.4 M pixels whole took 2 GiB)
LOSS_MAX_PIXELS = 256 * 256
PAIR_WINDOW_PX, PAIR_WINDOWS_PER_SIDE, PAIR_WINDOW_ALIGN = 512, 4, 256  # windows start on whole 256 px tiles


class FinetuneOptions(BaseModel):
    """``eotwin atmocorr train --pairs DIR``: shared by the CLI and tests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pairs: Path  # DIR/<pair_id>/{l1c.tif, l2a.tif, pair.json}
    output: Path  # the ONNX file; the weights go beside it with suffix .pt
    init: Path = DEFAULT_WEIGHTS_PATH
    steps: int = Field(60, ge=1, le=100_000)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    huber: float = Field(0.01, gt=0.0, le=1.0)  # reflectance where the loss turns from squared to linear
    anchor: float = Field(0.05, ge=0.0, le=100.0)  # weight of the pull towards the initial atmosphere
    scl: tuple[int, ...] = FINETUNE_SCL
    seed: int = 0
    threads: int | None = Field(1, ge=1, le=64)
    max_minutes: float = Field(30.0, gt=0.0)
    lut: Path | None = None


@dataclass
class PairData:
    """One pair ready for the network and the loss (numpy; the table terms of its mean geometry)."""

    pair_id: str
    sensor: str
    batch: dict[str, np.ndarray]  # cells, cell_angles, toa (NaN -> 0), table_* (as train.forward wants them)
    ref: np.ndarray  # (12, h, w) the reference's reflectance (0 where absent)
    mask: np.ndarray  # (12, h, w) bool: clear pixel, valid TOA and reference, band in both products
    bands: tuple[str, ...]  # the bands that count
    ozone: float | None
    toa_valid: np.ndarray  # (h, w) bool
    shape: tuple[int, int]  # (h, w) of the scene; toa, ref, mask and toa_valid hold every ``step``-th pixel
    step: int = 1
    clear_pixels: int = 0  # of the whole scene (the loss sample holds about 1 / step**2 of them)


@dataclass(frozen=True)
class FinetuneResult:
    onnx_path: Path
    weights_path: Path
    steps: int
    seconds: float
    summary: dict


def load_pairs(directory: Path, lut, config: dict, scl: tuple[int, ...] = FINETUNE_SCL) -> list[PairData]:
    """Every pair of ``directory`` read and checked (I/O): one-line errors before anything is trained.

    A pair larger than :data:`WHOLE_PAIR_MAX_PIXELS` (a full tile from ``atmocorr pairs``) is read as
    windows of the network's full-resolution cells spread over it, each a scene of its own, so memory stays
    bounded whatever the pair's size."""
    from eotwin.atmocorr.realpairs import list_pairs

    bad = [c for c in scl if c not in ALLOWED_SCL]
    if bad or not scl:
        raise EotwinError(f"SCL classes for fine-tuning must be among {list(ALLOWED_SCL)}, got {list(scl)}")
    return [part for p in list_pairs(Path(directory)) for part in load_pair(p, lut, config, scl)]


def pair_windows(height: int, width: int) -> list[Window] | None:
    """None for a pair read whole; else the windows a large pair is fine-tuned on."""
    from eotwin.atmocorr.ai.ood import sample_windows

    if height * width <= WHOLE_PAIR_MAX_PIXELS:
        return None
    return [Window(*w) for w in sample_windows(height, width, size=PAIR_WINDOW_PX, per_side=PAIR_WINDOWS_PER_SIDE,
                                              align=PAIR_WINDOW_ALIGN)]


def load_pair(pair, lut, config: dict, scl: tuple[int, ...] = FINETUNE_SCL) -> list[PairData]:
    """One pair folder as :class:`PairData`, whole or as windows (reads the L1C stack, the L2A reference and
    its SCL); windows with too few clear pixels are left out, a pair with none is an error."""
    from eotwin.atmocorr.physics import relative_azimuth
    from eotwin.sentinel2.products import open_l1c, open_l2a_reference

    reference = open_l2a_reference(pair.l2a)
    if "SCL" not in reference.bands:
        raise EotwinError(f"{pair.l2a}: the L2A reference has no SCL band (clear pixels cannot be told)")
    product = open_l1c(pair.l1c)
    means = product.angles.means()
    sza, vza = means["sun_zenith"], min(means["view_zenith"], float(lut.axes["vza"][-1]))
    raa = float(relative_azimuth(means["sun_azimuth"], means["view_azimuth"]))
    if not lut.contains("sza", sza):
        raise EotwinError(f"{pair.path}: sun zenith {sza:.1f} deg is outside the 6S table")
    ozone = product.ozone
    if ozone is not None and not lut.contains("o3", ozone):
        raise EotwinError(f"{pair.l1c}: ozone {ozone} cm-atm is outside the 6S table")
    windows = pair_windows(*product.grid.shape)
    parts = []
    for window in windows or [None]:
        part = _load_part(pair, product, reference, window, lut, config, scl, (sza, vza, raa))
        if part is not None:
            parts.append(part)
    if not parts:
        where = f"any of its {len(windows)} windows" if windows else "it"
        raise EotwinError(f"{pair.path}: fewer than {MIN_CLEAR_PIXELS} clear pixels (SCL {list(scl)}) with valid "
                          f"TOA in {where}")
    return parts


def _load_part(pair, product, reference, window, lut, config: dict, scl: tuple[int, ...],
               geometry: tuple[float, float, float]) -> PairData | None:
    """The pair, or one window of it, as :class:`PairData`; None when it has too few clear pixels."""
    from eotwin.atmocorr.ai import cells as cellmath
    from eotwin.atmocorr.ai.cells import scene_tables
    from eotwin.atmocorr.ai.onnx_infer import block_angles
    from eotwin.atmocorr.realpairs import read_reflectance
    from eotwin.sentinel2.bands import L2A_BANDS

    data = read_reflectance(pair, window=window)
    toa, ref, classes = data["toa"], data["ref"], data["scl"]
    shared = tuple(b for b in L2A_BANDS if b in reference.bands)
    if not shared:
        raise EotwinError(f"{pair.l2a}: no band shared with the L1C")
    toa_valid = np.isfinite(toa).all(axis=0)
    clear = np.isin(classes, scl) & toa_valid
    if int(clear.sum()) < MIN_CLEAR_PIXELS:
        return None
    in_ref = np.zeros(toa.shape[0], bool)
    in_ref[[L2A_BANDS.index(b) for b in shared]] = True
    mask = clear[None] & np.isfinite(ref) & in_ref[:, None, None]
    h, w = toa.shape[1:]
    cell, out_stride = int(config["cell"]), int(config["out_stride"])
    at = window if window is not None else Window(0, 0, h, w)
    angles = block_angles(product.angles, product.grid, at, cell=cell)
    cells, per_cell, _ = cellmath.network_inputs(
        toa, toa_valid, angles, lut, product.spacecraft, cell=cell, out_stride=out_stride,
        bright_toa=float(config["bright_toa"]), angles_at_cells=True, hypotheses=int(config.get("hypotheses", 0)))
    tables = scene_tables(lut, [(product.spacecraft, *geometry)])
    clear_pixels = int(mask.any(axis=0).sum())
    step = max(1, math.ceil(math.sqrt(h * w / LOSS_MAX_PIXELS)))
    toa, ref, mask, toa_valid = (np.ascontiguousarray(a[..., ::step, ::step]) for a in (toa, ref, mask, toa_valid))
    np.nan_to_num(toa, copy=False, nan=0.0)
    np.nan_to_num(ref, copy=False, nan=0.0)
    batch = {
        "cells": cells[None], "cell_angles": per_cell[None], "toa": toa[None].astype(np.float32, copy=False),
        **{f"table_{k}": np.asarray(getattr(tables, k), np.float32)
           for k in ("aot_nodes", "wv_nodes", "o3_nodes", "path", "log_t", "s_alb", "log_tg")},
    }
    name = pair.pair_id if window is None else f"{pair.pair_id} window {window.row_off},{window.col_off}"
    return PairData(name, product.spacecraft, batch, ref.astype(np.float32, copy=False), mask, shared,
                    product.ozone, toa_valid, (h, w), step, clear_pixels)


def _with_ozone(model, ozone: float | None, torch):
    """The network with its ozone output replaced by the product's (as the ``ai`` corrector does)."""
    if ozone is None:
        return model

    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model
            self.config = model.config

        def forward(self, cells, angles):
            atm = self.net(cells, angles)
            return torch.cat([atm[:, :2], torch.full_like(atm[:, 2:3], ozone), atm[:, 3:]], dim=1)

    return Fixed()


def pair_loss(model, pair: PairData, tensors: dict, delta: float, torch) -> tuple:
    """Huber loss (in units of ``delta`` squared) of the inverted BOA against the reference, averaged
    over the counted bands, each band the mean over its clear pixels; also the atmosphere and BOA."""
    from eotwin.atmocorr.ai.train import forward

    atm, boa = forward(_with_ozone(model, pair.ozone, torch), tensors, torch, shape=pair.shape, step=pair.step)
    mask = tensors["mask"]
    per_pixel = torch.nn.functional.huber_loss(boa[0], tensors["ref"], reduction="none", delta=delta)
    counts = mask.sum(dim=(1, 2))
    used = counts > 0
    per_band = (per_pixel * mask).sum(dim=(1, 2))[used] / counts[used]
    return per_band.mean() / delta**2, atm, boa


def anchor_loss(atm, init_atm, torch):
    """How far the atmosphere moved from the initial model's (the weights of train.loss_terms' atmosphere terms)."""
    aot = torch.mean((torch.log(atm[:, 0] + 0.02) - torch.log(init_atm[:, 0] + 0.02)) ** 2)
    wv = torch.mean((atm[:, 1] - init_atm[:, 1]) ** 2)
    o3 = torch.mean(((atm[:, 2] - init_atm[:, 2]) / 0.05) ** 2)
    mar = torch.mean((atm[:, 3] - init_atm[:, 3]) ** 2)
    return aot + 0.3 * wv + 0.1 * o3 + mar


def score(pair: PairData, boa: np.ndarray, atm: np.ndarray, loss: float) -> dict:
    """RMSE per counted band, their mean and the share within the L2A specification on the clear pixels,
    and the scene-mean atmosphere."""
    from eotwin.atmocorr.ai.cells import ATMOSPHERE
    from eotwin.sentinel2.bands import L2A_BANDS

    def rmse(x: np.ndarray) -> dict[str, float]:
        return {b: float(np.sqrt(np.mean((x[i][pair.mask[i]] - pair.ref[i][pair.mask[i]]) ** 2)))
                for b in pair.bands for i in [L2A_BANDS.index(b)] if pair.mask[i].any()}

    per_band = rmse(boa)
    idx = [L2A_BANDS.index(b) for b in per_band]
    spec = [np.mean(np.abs(boa[i] - pair.ref[i])[pair.mask[i]] <= 0.005 + 0.05 * pair.ref[i][pair.mask[i]])
            for i in idx]  # the L2A accuracy specification, share of pixels, mean over bands
    return {"loss": round(float(loss), 6), "mean_rmse": round(float(np.mean(list(per_band.values()))), 6),
            "within_spec": round(float(np.mean(spec)), 4), "rmse": {b: round(v, 6) for b, v in per_band.items()},
            "atmosphere": {k: round(float(np.mean(atm[i])), 5) for i, k in enumerate(ATMOSPHERE)}}


def _evaluate(model, pairs: list[PairData], tensors: list[dict], delta: float, torch) -> list[dict]:
    out = []
    with torch.no_grad():
        for pair, t in zip(pairs, tensors, strict=True):
            loss, atm, boa = pair_loss(model, pair, t, delta, torch)
            out.append(score(pair, boa[0].numpy(), atm[0].numpy(), float(loss)))
    return out


def finetune(options: FinetuneOptions, progress: ProgressReporter | None = None) -> FinetuneResult:
    """Fine-tune, then write the weights and the ONNX export; see the module docstring."""
    import copy

    import torch

    from eotwin.atmocorr.ai.onnx_infer import export_onnx
    from eotwin.atmocorr.ai.train import MODEL_VERSION, load_torch_model
    from eotwin.atmocorr.lut import load_lut
    from eotwin.io.files import atomic_path, ensure_writable_dir
    from eotwin.sentinel2.bands import L2A_BANDS

    onnx_path = Path(options.output)
    if onnx_path.suffix.lower() != ".onnx":
        raise EotwinError(f"{onnx_path}: the output must be an .onnx file (the weights go beside it as .pt)")
    weights_path = onnx_path.with_suffix(".pt")
    committed = {DEFAULT_MODEL_PATH.resolve(), DEFAULT_WEIGHTS_PATH.resolve()}
    if onnx_path.resolve() in committed or weights_path.resolve() in committed:
        raise EotwinError("fine-tuning never replaces the committed model: give another --output")
    progress = ensure_progress(progress)
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    model, previous = load_torch_model(options.init)
    lut = load_lut(options.lut)
    config = model.config.to_dict()
    pairs = load_pairs(options.pairs, lut, config, tuple(options.scl))
    ensure_writable_dir(onnx_path.parent)  # before the work: a read-only target is a user error, not a lost run

    tensors = []
    for p in pairs:
        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in p.batch.items()}
        t["ref"], t["mask"] = torch.from_numpy(p.ref), torch.from_numpy(p.mask.astype(np.float32))
        tensors.append(t)
    initial_model = copy.deepcopy(model).eval()
    for param in initial_model.parameters():
        param.requires_grad_(False)
    before = _evaluate(initial_model, pairs, tensors, options.huber, torch)
    with torch.no_grad():
        init_atms = [pair_loss(initial_model, p, t, options.huber, torch)[1] for p, t in zip(pairs, tensors, strict=True)]

    opt = torch.optim.Adam(model.parameters(), lr=options.lr)
    started = time.perf_counter()
    deadline = started + options.max_minutes * 60.0
    history: list[dict] = []
    step = 0
    with progress.task(f"fine-tuning on {len(pairs)} pair(s)", total=options.steps) as task:
        for step in range(1, options.steps + 1):
            model.train()
            opt.zero_grad()
            fit = anchor = 0.0
            for p, t, init_atm in zip(pairs, tensors, init_atms, strict=True):
                # one scene's graph at a time: the loss is a mean over scenes, so its gradient is the sum of theirs
                loss, atm, _ = pair_loss(model, p, t, options.huber, torch)
                moved = anchor_loss(atm, init_atm, torch)
                ((loss + options.anchor * moved) / len(pairs)).backward()
                fit += float(loss.detach()) / len(pairs)
                anchor += float(moved.detach()) / len(pairs)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            value = fit + options.anchor * anchor
            if not math.isfinite(value):
                raise EotwinError(f"fine-tuning diverged at step {step} (loss {value}); lower --lr")
            if step == 1 or step % 10 == 0 or step == options.steps:
                history.append({"step": step, "loss": round(value, 6), "fit": round(fit, 6),
                                "anchor": round(anchor, 6)})
            task.advance()
            if time.perf_counter() > deadline:
                break
    model.eval()
    after = _evaluate(model, pairs, tensors, options.huber, torch)
    seconds = time.perf_counter() - started

    per_pair = {p.pair_id: {"bands": list(p.bands), "clear_pixels": p.clear_pixels,
                            "pixel_step": p.step,
                            "toa_unchanged": {k: v for k, v in score(p, p.batch["toa"][0], np.zeros((4, 1, 1)), 0.0).items()
                                              if k in ("mean_rmse", "within_spec", "rmse")},
                            "before": b, "after": a}
                for p, b, a in zip(pairs, before, after, strict=True)}
    fine_tuned = {
        "pairs": [p.pair_id for p in pairs],
        "pairs_dir": str(options.pairs),
        "init": str(options.init),
        "steps": step,
        "loss": f"Huber (delta {options.huber:g}) of the inverted BOA vs the L2A reference on SCL "
                f"{list(options.scl)} pixels, per band, + {options.anchor:g} x pull towards the initial atmosphere",
        "mean_rmse_before": {k: v["before"]["mean_rmse"] for k, v in per_pair.items()},
        "mean_rmse_after": {k: v["after"]["mean_rmse"] for k, v in per_pair.items()},
    }
    train_sources = list(previous.get("train_sources") or ["ben"])
    record = {
        **{k: v for k, v in previous.items() if k not in ("history",)},
        "version": MODEL_VERSION,
        "fine_tuned": {**fine_tuned, "options": json.loads(options.model_dump_json()), "history": history,
                       "seconds": round(seconds, 1), "per_pair": per_pair},
        "continued_from": {"path": str(options.init), "steps": previous.get("steps"),
                           "seconds": previous.get("seconds"), "earlier": previous.get("continued_from")},
    }
    with atomic_path(weights_path) as tmp:
        torch.save({"state_dict": model.state_dict(), "config": model.config.to_dict(), "record": record}, tmp)
    export_onnx(model, onnx_path, {"version": MODEL_VERSION, "steps": previous.get("steps"),
                                   "train_sources": train_sources, "fine_tuned": fine_tuned})
    summary = {"onnx": str(onnx_path), "weights": str(weights_path), "steps": step, "seconds": round(seconds, 1),
               "bands": list(L2A_BANDS), "pairs": per_pair, "history": history}
    return FinetuneResult(onnx_path, weights_path, step, seconds, summary)
