"""CPU training of the AI correction on simulated scenes (``eotwin atmocorr train``).

Every step draws fresh scenes (:func:`eotwin.atmocorr.ai.synth.make_batch`): random crops of the
training BigEarthNet patches with 6S built-in spectra painted in, each under its own atmosphere and
geometry, so the network never sees the same TOA twice. The loss is the BOA error plus auxiliary
terms on the 6S terms and the AOT (all known in simulation), which guide the context branch towards
the atmosphere rather than towards memorising surfaces. AdamW with a cosine learning-rate decay;
the run stops at ``steps`` or ``max_minutes``, whichever comes first, then writes the weights
(``.pt``: state dict, configuration, training record) and the ONNX export.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import math
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from eotwin.atmocorr.ai import DEFAULT_MODEL_PATH, DEFAULT_WEIGHTS_PATH
from eotwin.errors import EotwinError
from eotwin.progress import ProgressReporter, ensure_progress

MODEL_VERSION = "atmonet-1"
REFERENCE_ATMOSPHERE = {"aot": 0.15, "wv": 1.5, "o3": 0.33, "sza": 40.0, "vza": 5.0, "raa": 90.0}


class TrainOptions(BaseModel):
    """``eotwin atmocorr train``: shared by the CLI and tests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Path = DEFAULT_MODEL_PATH  # the ONNX file; the weights go beside it with suffix .pt
    steps: int = Field(1500, ge=1, le=1_000_000)
    batch: int = Field(12, ge=1, le=256)
    crop: int = Field(96, ge=16, le=120)
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    seed: int = 0
    max_minutes: float = Field(18.0, gt=0.0)
    threads: int | None = Field(1, ge=1, le=64)  # torch threads: one is fastest on a shared 2-core machine
    workers: int = Field(1, ge=0, le=16)  # processes simulating the next batches while torch trains (0: inline)
    features: int = Field(16, ge=1, le=128)
    hidden: int = Field(64, ge=4, le=512)
    windows: tuple[int, ...] = (9, 25)  # in cells of 4 x 4 pixels
    lut: Path | None = None
    ben_dir: Path | None = None
    init: Path | None = None  # continue from these weights (.pt); their architecture and normalisation win


@dataclass(frozen=True)
class TrainResult:
    onnx_path: Path
    weights_path: Path
    steps: int
    seconds: float
    final_loss: float
    validation: dict[str, float]


def _reference_terms(lut) -> dict[str, list[float]]:
    from eotwin.atmocorr.products import L2A_BANDS

    r = REFERENCE_ATMOSPHERE
    sensor = "S2A" if "S2A" in lut.sensors else lut.sensors[0]
    aerosol = "continental" if "continental" in lut.aerosols else lut.aerosols[0]
    clip = {k: float(np.clip(v, lut.axes[k][0], lut.axes[k][-1])) for k, v in r.items()}
    t = lut.terms_for(sensor, L2A_BANDS, aerosol, clip["aot"], clip["sza"], clip["vza"], clip["raa"], clip["wv"],
                      clip["o3"], clamp=True)
    return {
        "ref_path": [float(v) for v in t.path],
        "ref_gain": [float(v) for v in t.tg * t.t_down * t.t_up],
        "ref_s_alb": [float(v) for v in t.s_alb],
        "ref_aot": clip["aot"],
    }


class _BatchMaker:
    """Simulates one batch from a seed (picklable, so worker processes can run it)."""

    def __init__(self, surfaces, lut, spectra, batch: int, crop: int) -> None:
        self.args = (surfaces, lut, spectra, batch, crop)

    def __call__(self, seed: np.random.SeedSequence):
        from eotwin.atmocorr.ai import synth

        surfaces, lut, spectra, batch, crop = self.args
        return synth.make_batch(surfaces, lut, np.random.default_rng(seed), batch, crop, spectra=spectra, jitter=True)


def _prefetch(pool, fn, items, ahead: int):
    """``map(fn, items)`` on a pool with at most ``ahead`` results waiting (``imap`` would run ahead unbounded)."""
    pending: collections.deque = collections.deque()
    it = iter(items)
    for item in itertools.islice(it, ahead):
        pending.append(pool.apply_async(fn, (item,)))
    while pending:
        result = pending.popleft().get()
        for item in itertools.islice(it, 1):
            pending.append(pool.apply_async(fn, (item,)))
        yield result


def _tensors(batch, torch) -> dict:
    return {
        k: torch.from_numpy(getattr(batch, k))
        for k in ("toa", "angles", "boa", "aot", "path", "gain", "s_alb")
    }


def loss_terms(model, t: dict, torch) -> tuple:
    """Total loss and its parts (BOA RMSE is what matters; the rest guides the context branch)."""
    valid = torch.ones_like(t["aot"])
    boa, aot, terms = model(t["toa"], t["angles"], valid)
    n = boa.shape[1]
    boa_mse = torch.mean((boa - t["boa"]) ** 2)
    path_mse = torch.mean((terms[:, :n] - t["path"]) ** 2)
    gain_mse = torch.mean((torch.log(terms[:, n : 2 * n]) - torch.log(t["gain"])) ** 2)
    salb_mse = torch.mean((terms[:, 2 * n :] - t["s_alb"]) ** 2)
    aot_mse = torch.mean((torch.log(aot + 0.02) - torch.log(t["aot"] + 0.02)) ** 2)
    total = boa_mse / 1e-4 + path_mse / 1e-4 + gain_mse / 1e-3 + salb_mse / 1e-3 + 0.1 * aot_mse
    return total, {"boa_rmse": float(boa_mse.detach().sqrt()), "aot_log_rmse": float(aot_mse.detach().sqrt())}


def train(options: TrainOptions, progress: ProgressReporter | None = None) -> TrainResult:
    """Train, save the weights and export the ONNX model; see the module docstring."""
    import torch

    from eotwin.atmocorr.ai import synth
    from eotwin.atmocorr.ai.model import AtmoNet, ModelConfig, count_parameters
    from eotwin.atmocorr.ai.onnx_infer import export_onnx
    from eotwin.atmocorr.lut import load_lut
    from eotwin.io.files import atomic_path

    if any(w < 3 or w % 2 == 0 for w in options.windows):
        raise EotwinError(f"context windows must be odd and at least 3, got {list(options.windows)}")
    progress = ensure_progress(progress)
    torch.manual_seed(options.seed)
    if options.threads:
        torch.set_num_threads(options.threads)
    lut = load_lut(options.lut)
    surfaces_by_id = synth.ben_surfaces(options.ben_dir, synth.TRAIN_SPLITS)
    surfaces = list(surfaces_by_id.values())
    spectra = synth.builtin_spectra()

    # input normalisation from a sample of simulated scenes
    probe = synth.make_batch(surfaces, lut, np.random.default_rng(options.seed + 1), 16, options.crop, spectra=spectra)
    config = ModelConfig(
        features=options.features,
        hidden=options.hidden,
        windows=tuple(options.windows),
        toa_mean=[float(v) for v in probe.toa.mean(axis=(0, 2, 3))],
        toa_std=[float(v) for v in probe.toa.std(axis=(0, 2, 3)) + 1e-3],
        **_reference_terms(lut),
    )
    model = AtmoNet(config)
    previous: dict = {}
    if options.init is not None:
        model, previous = load_torch_model(options.init)
        config = model.config
    opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=1e-4)
    val_batch = _tensors(
        synth.make_batch(surfaces, lut, np.random.default_rng(options.seed + 2), 8, options.crop, spectra=spectra),
        torch,
    )
    model.eval()
    with torch.no_grad():
        _, initial = loss_terms(model, val_batch, torch)
    started = time.perf_counter()
    deadline = started + options.max_minutes * 60.0
    history: list[dict[str, float]] = []
    last = float("nan")
    step = 0
    seeds = np.random.SeedSequence(options.seed).spawn(options.steps)
    maker = _BatchMaker(surfaces, lut, spectra, options.batch, options.crop)
    pool = multiprocessing.get_context("fork").Pool(options.workers) if options.workers else None
    batches = _prefetch(pool, maker, seeds, ahead=2 * options.workers) if pool else map(maker, seeds)
    with contextlib.ExitStack() as stack, progress.task(
        f"training ({count_parameters(model)} parameters)", total=options.steps
    ) as task:
        if pool is not None:
            stack.callback(pool.terminate)
        for step in range(1, options.steps + 1):
            # cosine decay over the steps or the time limit, whichever runs out first
            done = max((step - 1) / options.steps, (time.perf_counter() - started) / (deadline - started))
            lr = options.lr * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
            for group in opt.param_groups:
                group["lr"] = max(lr, options.lr * 0.01)
            batch = next(batches)
            model.train()
            loss, parts = loss_terms(model, _tensors(batch, torch), torch)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            last = float(loss.detach())
            if not math.isfinite(last):
                raise EotwinError(f"training diverged at step {step} (loss {last}); lower --lr")
            if step % 50 == 0 or step == options.steps:
                history.append({"step": step, "loss": last, **parts, "seconds": time.perf_counter() - started})
            task.advance()
            if time.perf_counter() > deadline:
                break
    model.eval()
    with torch.no_grad():
        _, val_parts = loss_terms(model, val_batch, torch)
    seconds = time.perf_counter() - started
    record = {
        "version": MODEL_VERSION,
        "steps": step,
        "seconds": round(seconds, 1),
        "options": json.loads(options.model_dump_json()),
        "train_patches": sorted(surfaces_by_id),
        "sampling": {k: v for k, v in synth.SAMPLING.items()},
        "lut": lut.metadata.get("generated", str(options.lut or "committed")),
        "validation": val_parts,
        "validation_initial": initial,
        "history": history,
        "parameters": count_parameters(model),
        "continued_from": {"path": str(options.init), "steps": previous.get("steps"),
                           "seconds": previous.get("seconds"), "earlier": previous.get("continued_from")}
        if options.init is not None else None,
    }
    onnx_path = Path(options.output)
    weights_path = onnx_path.with_suffix(".pt")
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights_path) as tmp:
        torch.save({"state_dict": model.state_dict(), "config": config.to_dict(), "record": record}, tmp)
    export_onnx(model, onnx_path, {"version": MODEL_VERSION, "steps": step, "validation": val_parts})
    return TrainResult(onnx_path, weights_path, step, seconds, last, val_parts)


def load_torch_model(path: str | Path = DEFAULT_WEIGHTS_PATH):
    """The torch network from a ``.pt`` file written by :func:`train` (for tests and fine-tuning)."""
    import torch

    from eotwin.atmocorr.ai.model import AtmoNet, ModelConfig

    path = Path(path)
    if not path.is_file():
        raise EotwinError(f"weights not found: {path}")
    data = torch.load(path, map_location="cpu", weights_only=False)
    model = AtmoNet(ModelConfig.from_dict(data["config"]))
    model.load_state_dict(data["state_dict"])
    return model.eval(), data.get("record", {})
