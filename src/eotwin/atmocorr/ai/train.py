"""CPU training of the AI correction on simulated scenes (``eotwin atmocorr train``).

Every step draws fresh scenes (:func:`eotwin.atmocorr.ai.synth.make_batch`): 2 x 2 mosaics of the
training patches of ``sources`` (:mod:`eotwin.atmocorr.ai.surfaces`; each tile a source with equal odds,
then one of its patches; 240 x 240 px) with 6S built-in spectra painted in, each under its own
atmosphere and geometry, so the network never sees the same TOA twice. The network's atmosphere goes
through the 6S table in torch (:class:`~eotwin.atmocorr.ai.model.TableLayer`) and the inversion, so
the loss is the surface (BOA) error itself, plus auxiliary errors of the AOT, water vapour, ozone and
aerosol model (all known in simulation), which keep the atmosphere physical where the surface error
alone cannot tell (a dark scene hides water vapour). AdamW with a cosine learning-rate decay;
the run stops at ``steps`` or ``max_minutes``, whichever comes first, then writes the weights
(``.pt``: state dict, configuration, training record) and the ONNX export.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
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

MODEL_VERSION = "atmonet-2"
_log = logging.getLogger(__name__)


class TrainOptions(BaseModel):
    """``eotwin atmocorr train``: shared by the CLI and tests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Path = DEFAULT_MODEL_PATH  # the ONNX file; the weights go beside it with suffix .pt
    steps: int = Field(1500, ge=1, le=1_000_000)
    batch: int = Field(8, ge=1, le=256)
    layout: tuple[int, int] = (2, 2)  # training scenes: mosaics of rows x cols BigEarthNet patches
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    seed: int = 0
    max_minutes: float = Field(18.0, gt=0.0)
    threads: int | None = Field(1, ge=1, le=64)  # torch threads: one is fastest on a shared 2-core machine
    workers: int = Field(1, ge=0, le=16)  # processes simulating the next batches while torch trains (0: inline)
    features: int = Field(24, ge=1, le=128)
    hidden: int = Field(64, ge=4, le=512)
    windows: tuple[int, ...] = (5, 17)  # in cells of 6 x 6 pixels
    # the cells carry the surface under hypothetical atmospheres (0 none, 1 continental, 2 both aerosol models)
    hypotheses: int = Field(2, ge=0, le=2)
    attention: int = Field(8, ge=0, le=64)  # attention-pooling heads (0: window means and minima only)
    lut: Path | None = None
    ben_dir: Path | None = None
    # surface sources (eotwin.atmocorr.ai.surfaces.SOURCES); BigEarthNet gives its train + validation
    # patches, the others all theirs: leave a source out here to judge the model on it (leave-one-source-out)
    sources: tuple[str, ...] = ("ben",)
    fixtures: Path | None = None  # the shared fixtures folder holding the real surfaces
    init: Path | None = None  # continue from these weights (.pt); their architecture and normalisation win


@dataclass(frozen=True)
class TrainResult:
    onnx_path: Path
    weights_path: Path
    steps: int
    seconds: float
    final_loss: float
    validation: dict[str, float]


class _BatchMaker:
    """Simulates one batch from a seed and prepares the network's inputs (picklable, so worker processes can run it)."""

    def __init__(self, surfaces, lut, spectra, batch: int, layout: tuple[int, int], config: dict) -> None:
        self.args = (surfaces, lut, spectra, batch, layout, config)

    def __call__(self, seed: np.random.SeedSequence) -> dict[str, np.ndarray]:
        from eotwin.atmocorr.ai import synth

        surfaces, lut, spectra, batch, layout, config = self.args
        scenes = synth.make_batch(surfaces, lut, np.random.default_rng(seed), batch, 0, spectra=spectra,
                                  jitter=True, layout=layout)
        return prepare_batch(scenes, lut, config)


_worker_maker: _BatchMaker | None = None


def _init_worker(maker: _BatchMaker) -> None:
    """Pool initializer: the batch maker (surfaces, table, spectra) reaches each worker once, not with every task."""
    global _worker_maker
    _worker_maker = maker


def _make_in_worker(seed: np.random.SeedSequence) -> dict[str, np.ndarray]:
    assert _worker_maker is not None, "the pool's initializer did not run"
    return _worker_maker(seed)


def prepare_batch(scenes, lut, config: dict) -> dict[str, np.ndarray]:
    """Network inputs (cells, cell angles), the scenes' 6S tables and the truth, as numpy arrays."""
    from eotwin.atmocorr.ai import cells as cellmath
    from eotwin.atmocorr.ai.cells import scene_tables

    cell, out_stride, bright = config["cell"], config["out_stride"], config["bright_toa"]
    ones = np.ones(scenes.toa.shape[2:], bool)
    inputs = [cellmath.network_inputs(t, ones, a[:, :1, :1], lut, atm.sensor, cell=cell, out_stride=out_stride,
                                      bright_toa=bright, hypotheses=int(config.get("hypotheses", 0)))
              for t, a, atm in zip(scenes.toa, scenes.angles, scenes.atmospheres, strict=True)]
    tables = scene_tables(lut, [(a.sensor, a.sza, a.vza, a.raa) for a in scenes.atmospheres])
    truth_atm = np.stack([
        np.stack([cellmath.pool(aot[0], cell * out_stride),
                  *(np.full((aot.shape[1] // (cell * out_stride),) * 2, v, np.float32)
                    for v in (a.wv, a.o3, float(a.aerosol == "maritime")))])
        for aot, a in zip(scenes.aot, scenes.atmospheres, strict=True)
    ])
    return {
        "cells": np.stack([i[0] for i in inputs]),
        "cell_angles": np.stack([i[1] for i in inputs]),
        "toa": scenes.toa,
        "boa": scenes.boa,
        "atmosphere": truth_atm.astype(np.float32),
        **{f"table_{k}": np.asarray(getattr(tables, k), np.float32)
           for k in ("aot_nodes", "wv_nodes", "o3_nodes", "path", "log_t", "s_alb", "log_tg")},
    }


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


def _tensors(batch: dict[str, np.ndarray], torch) -> dict:
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def forward(model, t: dict, torch, *, shape: tuple[int, int] | None = None, step: int = 1) -> tuple:
    """Atmosphere, then BOA through the 6S table layer and the inversion (the training graph).

    ``step`` > 1: ``t["toa"]`` holds every step-th pixel of a ``shape`` (h, w) scene, and the BOA comes at those
    pixels only (:func:`~eotwin.atmocorr.ai.model.upsample_every`; fine-tuning on large pairs)."""
    from eotwin.atmocorr.ai.model import TableLayer, invert, upsample, upsample_every

    atm = model(t["cells"], t["cell_angles"])
    tables = {k[len("table_"):]: v for k, v in t.items() if k.startswith("table_")}
    path, gain, s_alb = TableLayer()(atm, tables)
    c = model.config
    if step == 1:
        h, w = t["toa"].shape[-2:]
        up = lambda x: upsample(x, c.out_stride, c.cell, h, w)  # noqa: E731
    else:
        up = lambda x: upsample_every(x, c.out_stride, c.cell, shape, step)  # noqa: E731
    boa = invert(t["toa"], up(path), up(gain), up(s_alb))
    return atm, boa


def loss_terms(model, t: dict, torch) -> tuple:
    """Total loss and its parts (the surface error is what matters; the rest keeps the atmosphere physical)."""
    atm, boa = forward(model, t, torch)
    truth = t["atmosphere"]
    boa_mse = torch.mean((boa - t["boa"]) ** 2)
    aot_mse = torch.mean((torch.log(atm[:, 0] + 0.02) - torch.log(truth[:, 0] + 0.02)) ** 2)
    wv_mse = torch.mean((atm[:, 1] - truth[:, 1]) ** 2)
    o3_mse = torch.mean((atm[:, 2] - truth[:, 2]) ** 2)
    p = atm[:, 3].clamp(1e-4, 1 - 1e-4)
    bce = -torch.mean(truth[:, 3] * torch.log(p) + (1 - truth[:, 3]) * torch.log(1 - p))
    total = boa_mse / 1e-5 + aot_mse + 0.3 * wv_mse + 0.1 * o3_mse / 0.05**2 + 0.1 * bce
    parts = {"boa_rmse": float(boa_mse.detach().sqrt()), "aot_log_rmse": float(aot_mse.detach().sqrt()),
             "wv_rmse": float(wv_mse.detach().sqrt()), "o3_rmse": float(o3_mse.detach().sqrt()),
             "aerosol_bce": float(bce.detach())}
    return total, parts


def train(options: TrainOptions, progress: ProgressReporter | None = None) -> TrainResult:
    """Train, save the weights and export the ONNX model; see the module docstring."""
    import torch

    from eotwin.atmocorr.ai import surfaces as surface_library
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
    names = surface_library.parse_sources(options.sources)
    by_source = {n: surface_library.load_source(n, split="train", root=options.fixtures, ben_dir=options.ben_dir)
                 for n in names}
    surfaces = {n: list(p.values()) for n, p in by_source.items()}
    spectra = synth.builtin_spectra()

    # input normalisation from a sample of simulated scenes
    probe = synth.make_batch(surfaces, lut, np.random.default_rng(options.seed + 1), 16, 0, spectra=spectra,
                             layout=options.layout)
    config = ModelConfig(
        features=options.features,
        hidden=options.hidden,
        windows=tuple(options.windows),
        toa_mean=[float(v) for v in probe.toa.mean(axis=(0, 2, 3))],
        toa_std=[float(v) for v in probe.toa.std(axis=(0, 2, 3)) + 1e-3],
        aot_range=(0.005, float(lut.axes["aot"][-1])),
        wv_range=(float(lut.axes["wv"][0]), float(lut.axes["wv"][-1])),
        o3_range=(float(lut.axes["o3"][0]), float(lut.axes["o3"][-1])),
        hypotheses=options.hypotheses,
        attention=options.attention,
    )
    model = AtmoNet(config)
    previous: dict = {}
    if options.init is not None:
        model, previous = load_torch_model(options.init)
        config = model.config
    opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=1e-4)
    config_dict = config.to_dict()
    val_batch = _tensors(prepare_batch(synth.make_batch(surfaces, lut, np.random.default_rng(options.seed + 2), 8, 0,
                                                        spectra=spectra, layout=options.layout), lut, config_dict),
                         torch)
    model.eval()
    with torch.no_grad():
        _, initial = loss_terms(model, val_batch, torch)
    started = time.perf_counter()
    deadline = started + options.max_minutes * 60.0
    history: list[dict[str, float]] = []
    last = float("nan")
    step = 0
    seeds = np.random.SeedSequence(options.seed).spawn(options.steps)
    maker = _BatchMaker(surfaces, lut, spectra, options.batch, tuple(options.layout), config_dict)
    # spawned, not forked: a forked worker starts with the trainer's whole resident memory (torch, the model, the
    # validation batch) in its page tables, which a container's limit on the tree's resident memory counts twice
    pool = (multiprocessing.get_context("spawn").Pool(options.workers, initializer=_init_worker, initargs=(maker,))
            if options.workers else None)
    batches = _prefetch(pool, _make_in_worker, seeds, ahead=2 * options.workers) if pool else map(maker, seeds)
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
                _log.info("step %d: loss %.3f, " + ", ".join(f"{k} {v:.4f}" for k, v in parts.items()), step, last)
            task.advance()
            if time.perf_counter() > deadline:
                break
    model.eval()
    with torch.no_grad():
        _, val_parts = loss_terms(model, val_batch, torch)
    seconds = time.perf_counter() - started
    # a model continued from earlier weights knows their surfaces too (models before the library: BigEarthNet)
    earlier = tuple(previous.get("train_sources") or ("ben",)) if options.init is not None else ()
    trained_on = tuple(dict.fromkeys((*earlier, *names)))
    record = {
        "version": MODEL_VERSION,
        "steps": step,
        "seconds": round(seconds, 1),
        "options": json.loads(options.model_dump_json()),
        "train_sources": list(trained_on),
        "train_patches": {n: sorted(p) for n, p in by_source.items()},
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
    export_onnx(model, onnx_path, {"version": MODEL_VERSION, "steps": step, "validation": val_parts,
                                   "train_sources": list(trained_on)})
    return TrainResult(onnx_path, weights_path, step, seconds, last, val_parts)


def load_torch_model(path: str | Path = DEFAULT_WEIGHTS_PATH):
    """The torch network from a ``.pt`` file written by :func:`train` (for tests and fine-tuning)."""
    import torch

    from eotwin.atmocorr.ai.model import AtmoNet, ModelConfig

    path = Path(path)
    if not path.is_file():
        raise EotwinError(f"weights not found: {path}")
    import pickle
    import warnings

    try:  # weights only: a .pt is a pickle, and a pickle from elsewhere must never run code here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol before refusing
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise EotwinError(f"{path}: not a weights-only eotwin atmosphere model (it holds objects other than "
                          "tensors and plain values; refused without running them)") from None
    except Exception as exc:  # truncated or not a torch file at all
        raise EotwinError(f"{path}: not a readable eotwin atmosphere model ({type(exc).__name__})") from None
    if not isinstance(data, dict) or "state_dict" not in data or "config" not in data:
        raise EotwinError(f"{path}: not an eotwin atmosphere model (no state_dict/config)")
    model = AtmoNet(ModelConfig.from_dict(data["config"]))
    model.load_state_dict(data["state_dict"])
    return model.eval(), data.get("record", {})
