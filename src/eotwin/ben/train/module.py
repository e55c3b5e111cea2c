"""The Lightning module: a timm model, its loss, fine-tuning schedule, optimiser, metrics and thresholds.

Everything needed to use a checkpoint later is inside it: the resolved config, the data description
(bands, resampling, normalisation, class order), ``pos_weight`` and the per-class thresholds (a buffer,
tuned on validation after every validation epoch, so the best checkpoint carries the thresholds of its
own epoch). Metrics are computed on the gathered predictions of the whole split, so they are exact
under DDP too.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch

from eotwin.ben.train.config import TrainConfig
from eotwin.ben.train.finetune import (
    backbone_trainable,
    freeze_backbone_norms,
    param_groups,
    set_backbone_trainable,
)
from eotwin.ben.train.losses import make_loss
from eotwin.ben.train.metrics import multilabel_scores
from eotwin.ben.train.models import build_model, load_pretrained
from eotwin.ben.train.thresholds import tune_thresholds


class BenClassifier(L.LightningModule):
    """Multi-label BigEarthNet classifier (logits out; sigmoid for probabilities)."""

    def __init__(self, config: dict[str, Any], data: dict[str, Any], pos_weight: list[float] | None = None,
                 load_weights: bool = True) -> None:
        super().__init__()
        self.save_hyperparameters("config", "data", "pos_weight")
        self.cfg = TrainConfig.model_validate(config)
        self.bands = tuple(data["bands"])
        self.classes = tuple(data["classes"])
        cfg = self.cfg
        extra = dict(cfg.model.kwargs)
        img_size = int(extra.pop("img_size", data["size"]))
        self.model = build_model(cfg.model.name, len(self.bands), len(self.classes), img_size=img_size,
                                 drop_rate=cfg.model.drop_rate, drop_path_rate=cfg.model.drop_path_rate, **extra)
        self.load_report: dict[str, Any] | None = None
        if load_weights and cfg.pretrained.path is not None:
            from eotwin.ben.labels import class_names

            source_classes = class_names(cfg.pretrained.classes) if cfg.pretrained.classes else None
            report = load_pretrained(self.model, cfg.pretrained.path, source_bands=cfg.pretrained.source_bands(),
                                     target_bands=self.bands, source_classes=source_classes, target_classes=self.classes,
                                     new_band_init=cfg.pretrained.new_band_init)
            self.load_report = {"summary": report.summary(), "kept_bands": report.kept_bands,
                                "new_bands": report.new_bands, "head_loaded": report.head_loaded, "loaded": report.loaded}
        weight = np.asarray(pos_weight, dtype=np.float32) if (pos_weight is not None and cfg.loss.pos_weight) else None
        lc = cfg.loss
        self.criterion = make_loss(lc.name, pos_weight=weight, gamma=lc.gamma, alpha=lc.alpha, gamma_pos=lc.gamma_pos,
                                   gamma_neg=lc.gamma_neg, clip=lc.clip)
        self.register_buffer("thresholds", torch.full((len(self.classes),), 0.5))
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"val": [], "test": []}
        self._backbone_on = True
        self.last_scores: dict[str, dict[str, Any]] = {}

    # --- forward and steps --------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x).float())

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.cfg.model.channels_last and x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = self.criterion(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def _eval_step(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        if self.cfg.model.channels_last and x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self(x)
        self.log(f"{stage}/loss", self.criterion(logits, y), on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self._outputs[stage].append((torch.sigmoid(logits.float()).detach(), y.detach()))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _gathered(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._outputs[stage]
        self._outputs[stage] = []
        probs = torch.cat([p for p, _ in outputs]) if outputs else torch.zeros(0, len(self.classes), device=self.device)
        targets = torch.cat([t for _, t in outputs]) if outputs else torch.zeros_like(probs)
        if self.trainer is not None and self.trainer.world_size > 1:
            probs = self.all_gather(probs).reshape(-1, probs.shape[-1])
            targets = self.all_gather(targets).reshape(-1, targets.shape[-1])
        return probs.float().cpu().numpy(), targets.float().cpu().numpy()

    def _log_scores(self, stage: str, scores: dict[str, Any], suffix: str = "") -> None:
        for key in ("f1_micro", "f1_macro", "map_micro", "map_macro"):
            if not math.isnan(scores[key]):
                self.log(f"{stage}/{key}{suffix}", scores[key], sync_dist=True)  # equal on every rank: a no-op mean

    def on_validation_epoch_end(self) -> None:
        probs, targets = self._gathered("val")
        if probs.shape[0] == 0:
            return
        scores = multilabel_scores(probs, targets, 0.5, self.classes)
        self._log_scores("val", scores)
        if self.cfg.thresholds.tune and not self.trainer.sanity_checking:
            tuned = tune_thresholds(probs, targets)
            self.thresholds.copy_(torch.as_tensor(tuned, device=self.thresholds.device))
            tuned_scores = multilabel_scores(probs, targets, tuned, self.classes)
            self._log_scores("val", tuned_scores, "_tuned")
        self.last_scores["val"] = scores

    def on_test_epoch_end(self) -> None:
        probs, targets = self._gathered("test")
        if probs.shape[0]:
            scores = multilabel_scores(probs, targets, 0.5, self.classes)
            self._log_scores("test", scores)
            self.last_scores["test"] = scores

    # --- fine-tuning schedule -----------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        ft = self.cfg.finetune
        self._backbone_on = backbone_trainable(ft.mode, self.current_epoch, ft.unfreeze_epoch)
        set_backbone_trainable(self.model, self._backbone_on)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if not self._backbone_on:
            freeze_backbone_norms(self.model)

    def on_fit_start(self) -> None:
        if self.cfg.model.channels_last and self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)

    # --- optimiser and schedule ---------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        oc = self.cfg.optim
        groups = param_groups(self.model, oc.lr, oc.weight_decay, self.cfg.finetune.layer_decay)
        if oc.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=oc.lr, weight_decay=oc.weight_decay)
        else:
            optimizer = torch.optim.SGD(groups, lr=oc.lr, momentum=oc.momentum, weight_decay=oc.weight_decay, nesterov=True)
        if oc.schedule == "none":
            return optimizer
        if oc.schedule == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=self.cfg.trainer.monitor_mode, factor=oc.plateau_factor, patience=oc.plateau_patience)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "monitor": self.cfg.trainer.monitor, "interval": "epoch"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = round(oc.warmup_epochs * per_epoch)
        floor = oc.min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
