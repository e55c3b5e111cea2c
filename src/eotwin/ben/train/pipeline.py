"""Training and evaluation pipelines: config -> data module + Lightning module -> checkpoints, logs, results.

Run layout under ``config.output``::

    config.yaml              the resolved configuration
    checkpoints/last.ckpt    every epoch (``--resume`` continues from it: weights, optimiser, schedule, epoch;
                             raising ``trainer.max_epochs`` on resume stretches the cosine over the new total)
    checkpoints/best.ckpt    best epoch by ``trainer.monitor`` (with its tuned thresholds)
    logs/version_N/          CSV metrics, one folder per run segment (a resume adds one)
    tensorboard/             TensorBoard events
    curves.png               loss, validation scores and learning rate
    results.json             config, data, scores of the best checkpoint on ``evaluate_splits``, speed

Several seeds (``eotwin ben train --seeds 0,1,2``) give one such run per seed under ``seed-<n>/`` and
``summary.json`` beside them: mean, standard deviation, min and max over the seeds of every headline
score on each evaluated split (all seeds reported, none picked).
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eotwin.ben.train.config import EvaluateOptions, TrainConfig, config_yaml
from eotwin.errors import EotwinError
from eotwin.io.files import ensure_writable_dir, write_json_atomic, write_text_atomic
from eotwin.progress import ProgressReporter, ensure_progress

CHECKPOINTS = "checkpoints"


@dataclass
class TrainResult:
    output: Path
    best_checkpoint: Path
    last_checkpoint: Path
    epochs: int
    global_step: int
    seconds: float
    images_per_second: float
    results_json: Path
    curves_png: Path | None
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    resumed_from_epoch: int | None = None
    global_zero: bool = True  # False in the other processes of a DDP run (they write and print nothing)


def _progress_callback(progress: ProgressReporter):
    import lightning as L

    class ProgressCallback(L.Callback):
        """Drives an eotwin progress bar over all training batches and measures training throughput."""

        def __init__(self) -> None:
            self._stack = ExitStack()
            self._task = None
            self.images = 0
            self.seconds = 0.0
            self._t0 = 0.0

        def on_train_start(self, trainer, pl_module) -> None:
            per_epoch = trainer.num_training_batches if np.isfinite(trainer.num_training_batches) else 0
            remaining = max(0, (trainer.max_epochs or 1) - trainer.current_epoch)
            if trainer.is_global_zero:  # one bar per run, not per DDP process
                self._task = self._stack.enter_context(progress.task("training", total=remaining * per_epoch or None))

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.seconds += time.perf_counter() - self._t0
            self.images += int(batch[0].shape[0])
            if self._task is not None:
                self._task.advance()

        def on_train_end(self, trainer, pl_module) -> None:
            self._stack.close()

        def on_exception(self, trainer, pl_module, exception) -> None:
            self._stack.close()

    return ProgressCallback()


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    for pattern in (".*does not have many workers.*", ".*Experiment logs directory.*", ".*LeafSpec.*",
                    ".*number of training batches.*", ".*Checkpoint directory.*exists and is not empty.*",
                    ".*all_gather is deprecated.*"):
        warnings.filterwarnings("ignore", message=pattern)


def _precision(value: str) -> str:
    import torch

    if value != "auto":
        return value
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def run_training(config: TrainConfig, *, resume: bool = False, progress: ProgressReporter | None = None) -> TrainResult:
    """Train (or continue) the run of ``config``; write checkpoints, logs, curves and results."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from eotwin.ben.train.checkpoint_io import AtomicCheckpointIO
    from eotwin.ben.train.datamodule import BenDataModule
    from eotwin.ben.train.losses import pos_weight_from_targets
    from eotwin.ben.train.module import BenClassifier
    from eotwin.ben.train.plots import plot_curves

    progress = ensure_progress(progress)
    _quiet_lightning()
    output = Path(config.output)
    ckpt_dir = output / CHECKPOINTS
    last = ckpt_dir / "last.ckpt"
    if resume and not last.is_file():
        raise EotwinError(f"nothing to resume: {last} does not exist")
    if not resume and last.is_file():
        raise EotwinError(f"{output} already holds a run: add --resume to continue it, or choose another output")
    resumed_from = None
    if resume:
        resumed_from = int(_checkpoint_meta(last)["epoch"]) + 1
        if resumed_from >= config.trainer.max_epochs:
            raise EotwinError(f"the run already finished {resumed_from} epochs: raise trainer.max_epochs to continue")

    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    datamodule = BenDataModule(config.data, config.augment, seed=config.trainer.seed)
    data = datamodule.describe()
    train_targets = datamodule.dataset("train").targets
    pos_weight = pos_weight_from_targets(train_targets, config.loss.max_pos_weight)
    datamodule.dataset("val")  # open early: a missing split is an error before any training
    module = BenClassifier(config.model_dump(mode="json"), data, pos_weight.tolist(), load_weights=not resume)
    # data and model are valid: only now does the run folder appear
    ensure_writable_dir(output)
    write_text_atomic(output / "config.yaml", config_yaml(config))

    tc = config.trainer
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=tc.monitor, mode=tc.monitor_mode,
                                 save_top_k=1, enable_version_counter=False, auto_insert_metric_name=False)
    # every epoch, whatever the score (Lightning's save_last only copies when the best one changes)
    latest = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                             enable_version_counter=False, auto_insert_metric_name=False)
    timing = _progress_callback(progress)
    callbacks: list[Any] = [checkpoint, latest, LearningRateMonitor(logging_interval="step"), timing]
    if tc.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor=tc.monitor, mode=tc.monitor_mode, patience=tc.early_stopping_patience))
    loggers = [CSVLogger(save_dir=output, name="logs"), TensorBoardLogger(save_dir=output, name="tensorboard", version="")]
    extra: dict[str, Any] = {}
    if tc.limit_train_batches is not None:
        extra["limit_train_batches"] = tc.limit_train_batches
    if tc.limit_val_batches is not None:
        extra["limit_val_batches"] = tc.limit_val_batches
    trainer = L.Trainer(max_epochs=tc.max_epochs, accelerator=tc.accelerator, devices=tc.devices, num_nodes=tc.num_nodes,
                        strategy=tc.strategy, precision=_precision(tc.precision), callbacks=callbacks, logger=loggers,
                        log_every_n_steps=tc.log_every_n_steps, gradient_clip_val=tc.gradient_clip_val,
                        accumulate_grad_batches=tc.accumulate_grad_batches, deterministic=tc.deterministic,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=output,
                        num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()], **extra)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    seconds = time.perf_counter() - started
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    results_json = output / "results.json"
    curves = None
    scores: dict[str, dict[str, Any]] = {}
    if trainer.is_global_zero:
        for split in config.evaluate_splits:
            scores[split] = evaluate_checkpoint(best, split, data_config=config.data, progress=progress)["scores"]
        curves = plot_curves(output / "logs", output / "curves.png", title=f"{config.name}: {config.model.name}")
        write_json_atomic(results_json, {
            "name": config.name, "model": config.model.name, "config": config.model_dump(mode="json"), "data": data,
            "pretrained": module.load_report, "pos_weight": pos_weight.tolist(),
            "epochs": trainer.current_epoch, "global_step": trainer.global_step, "resumed_from_epoch": resumed_from,
            "best_checkpoint": str(best), "best_score": _float(checkpoint.best_model_score), "monitor": tc.monitor,
            "seconds": seconds, "train_images": timing.images,
            "train_images_per_second": timing.images / timing.seconds if timing.seconds else None,
            "thresholds": _checkpoint_thresholds(best), "scores": scores,
            "note": "scores: '@0.5' uses a 0.5 threshold for every class, 'tuned' the per-class thresholds "
                    "stored in the checkpoint (tuned on the validation split)",
        })
    return TrainResult(output=output, best_checkpoint=best, last_checkpoint=last, epochs=trainer.current_epoch,
                       global_step=trainer.global_step, seconds=seconds,
                       images_per_second=timing.images / timing.seconds if timing.seconds else 0.0,
                       results_json=results_json, curves_png=curves, scores=scores, resumed_from_epoch=resumed_from,
                       global_zero=trainer.is_global_zero)


@dataclass
class SeedsResult:
    output: Path
    runs: dict[int, TrainResult | None]  # None: finished earlier, reused on --resume
    results: dict[int, Path]
    summary_json: Path
    summary: dict[str, Any]
    global_zero: bool = True


SUMMARY_NAME = "summary.json"


def run_seeds(config: TrainConfig, seeds: list[int], *, resume: bool = False,
              progress: ProgressReporter | None = None) -> SeedsResult:
    """Train ``config`` once per seed into ``<output>/seed-<n>/`` and summarise the scores over the seeds.

    On ``--resume`` a seed whose run finished (its results.json exists) is reused, one with a last checkpoint is
    continued and one not started yet is trained; without it, any existing seed run is an error (nothing is
    overwritten).
    """
    import json

    from eotwin.ben.train.metrics import seed_summary

    if not seeds:
        raise EotwinError("--seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise EotwinError(f"--seeds lists a seed twice: {','.join(str(s) for s in seeds)}")
    output = Path(config.output)
    if not resume:
        taken = [seed for seed in seeds if (output / f"seed-{seed}" / CHECKPOINTS / "last.ckpt").is_file()]
        if taken:
            raise EotwinError(f"{output / f'seed-{taken[0]}'} already holds a run: add --resume to continue the seeds, "
                              "or choose another output")
    runs: dict[int, TrainResult | None] = {}
    results: dict[int, Path] = {}
    scores: dict[int, dict[str, dict[str, Any]]] = {}
    global_zero = True
    for seed in seeds:
        run_dir = output / f"seed-{seed}"
        cfg = config.model_copy(update={"output": run_dir, "name": f"{config.name}-seed{seed}",
                                        "trainer": config.trainer.model_copy(update={"seed": seed})})
        done = run_dir / "results.json"
        if resume and done.is_file():
            runs[seed] = None
            try:
                scores[seed] = json.loads(done.read_text(encoding="utf-8"))["scores"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise EotwinError(f"{done} is not a results file of `eotwin ben train` ({exc})") from None
        else:
            result = run_training(cfg, resume=resume and (run_dir / CHECKPOINTS / "last.ckpt").is_file(),
                                  progress=progress)
            runs[seed] = result
            global_zero = result.global_zero
            scores[seed] = result.scores
        results[seed] = done
    summary_json = output / SUMMARY_NAME
    summary: dict[str, Any] = {}
    if global_zero:
        summary = {"name": config.name, "model": config.model.name, "bands": list(config.data.bands),
                   **seed_summary(scores), "results": {str(seed): str(path) for seed, path in results.items()},
                   "note": "per split and threshold kind ('@0.5', 'tuned'): mean, sample std (ddof 1), min, max and "
                           "the value of every seed, each seed scored with its own best checkpoint"}
        write_json_atomic(summary_json, summary)
    return SeedsResult(output=output, runs=runs, results=results, summary_json=summary_json, summary=summary,
                       global_zero=global_zero)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _checkpoint_meta(path: Path) -> dict[str, Any]:
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    return {"epoch": payload.get("epoch", -1), "global_step": payload.get("global_step", 0)}


def _checkpoint_thresholds(path: Path) -> list[float] | None:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True).get("state_dict", {})
    value = state.get("thresholds")
    return None if value is None else [round(float(v), 4) for v in value]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EotwinError("device cuda requested but no CUDA GPU is available")
    return device


def check_checkpoint(path: Path) -> None:
    """Refuse a truncated, foreign or pickled-code file with torch alone (weights only, memory-mapped), before
    Lightning and timm are imported: a one-line reason in seconds instead of a half-minute import first."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol before refusing: the error says it
            warnings.simplefilter("ignore", UserWarning)
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                payload = torch.load(path, map_location="cpu", weights_only=True)  # an old (non-zip) torch.save
    except Exception as exc:  # torch.load raises many types for a damaged or unsafe file
        text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if "Weights only load failed" in text:
            text = "it holds pickled objects other than tensors: refused, weights only"
        raise EotwinError(f"{path}: not a loadable checkpoint ({text})") from None
    hparams = payload.get("hyper_parameters") if isinstance(payload, dict) else None
    if not isinstance(hparams, dict) or not {"config", "data"} <= set(hparams):
        raise EotwinError(f"{path}: not an eotwin BigEarthNet checkpoint (no eotwin training config in it)")


def load_classifier(checkpoint: str | Path, device: str = "cpu"):
    """A trained :class:`BenClassifier` in eval mode (pretrained files are not needed any more)."""
    import pickle

    from eotwin.ben.train.models import error_detail
    from eotwin.ben.train.module import BenClassifier

    path = Path(checkpoint)
    if not path.is_file():
        raise EotwinError(f"{path}: no such checkpoint")
    check_checkpoint(path)
    try:
        module = BenClassifier.load_from_checkpoint(str(path), map_location="cpu", load_weights=False, weights_only=True)
    except (KeyError, RuntimeError, TypeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise EotwinError(f"{path}: not an eotwin BigEarthNet checkpoint ({error_detail(exc)})") from None
    return module.to(resolve_device(device)).eval()


def predict_dataset(module, dataset, *, batch_size: int = 64, num_workers: int = 0,
                    progress: ProgressReporter | None = None, description: str = "predict") -> tuple[np.ndarray, np.ndarray]:
    """(N, K) probabilities and targets of a core dataset, no augmentation, in dataset order."""
    import torch
    from torch.utils.data import DataLoader

    from eotwin.ben.train.datamodule import TorchBenDataset, worker_context
    from eotwin.heap import steady_heap

    steady_heap()  # batch after batch of freed tensors would otherwise stay resident (see eotwin.heap)
    progress = ensure_progress(progress)
    loader = DataLoader(TorchBenDataset(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        multiprocessing_context=worker_context(num_workers))
    probs, targets = [], []
    device = module.device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    with progress.task(description, total=len(loader)) as task, torch.inference_mode(), autocast:
        for x, y in loader:
            probs.append(module.predict_proba(x.to(device)).float().cpu().numpy())
            targets.append(y.numpy())
            task.advance()
    return np.concatenate(probs), np.concatenate(targets)


def evaluate_checkpoint(checkpoint: str | Path, split: str, *, data_config=None, source: Path | None = None,
                        metadata: Path | None = None, batch_size: int = 64, num_workers: int = 0,
                        include_snow: bool | None = None, include_cloud: bool | None = None, limit: int | None = None,
                        device: str = "auto", progress: ProgressReporter | None = None) -> dict[str, Any]:
    """Scores of a checkpoint on ``split`` at 0.5 and at its stored per-class thresholds."""
    from eotwin.ben.train.datamodule import open_split
    from eotwin.ben.train.metrics import multilabel_scores

    module = load_classifier(checkpoint, resolve_device(device))
    cfg = data_config if data_config is not None else module.cfg.data
    updates: dict[str, Any] = {}
    if source is not None:
        updates.update(source=source, metadata=metadata)
    if include_snow is not None:
        updates["include_snow"] = include_snow
    if include_cloud is not None:
        updates["include_cloud"] = include_cloud
    cfg = cfg.model_copy(update=updates)
    data = module.hparams["data"]
    cfg = cfg.model_copy(update={"bands": tuple(data["bands"]), "resampling": data["resampling"],
                                 "class_order": data["class_order"]})
    dataset = open_split(cfg, split, limit=limit)
    probs, targets = predict_dataset(module, dataset, batch_size=batch_size, num_workers=num_workers,
                                     progress=progress, description=f"evaluate {split}")
    thresholds = module.thresholds.detach().cpu().numpy()
    return {
        "checkpoint": str(checkpoint), "split": split, "patches": len(dataset), "source": str(cfg.source),
        "model": module.cfg.model.name, "bands": list(data["bands"]), "class_order": data["class_order"],
        "scores": {"@0.5": multilabel_scores(probs, targets, 0.5, module.classes),
                   "tuned": multilabel_scores(probs, targets, thresholds, module.classes)},
    }


def run_evaluation(options: EvaluateOptions, progress: ProgressReporter | None = None) -> dict[str, Any]:
    """``eotwin ben evaluate``: score a checkpoint on a split; write the JSON when asked."""
    result = evaluate_checkpoint(options.checkpoint, options.split, source=options.source, metadata=options.metadata,
                                 batch_size=options.batch_size, num_workers=options.num_workers,
                                 include_snow=options.include_snow, include_cloud=options.include_cloud,
                                 limit=options.limit, device=options.device, progress=progress)
    if options.output is not None:
        write_json_atomic(options.output, result)
    return result
