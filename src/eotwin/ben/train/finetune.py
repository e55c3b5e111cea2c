"""Fine-tuning modes and optimiser parameter groups (pure: a model in, flags and groups out).

* ``linear``: linear probe; only the classifier learns, the backbone (batch-norm statistics included)
  stays as loaded.
* ``full``: every parameter learns from the first step.
* ``freeze_unfreeze``: a linear probe for ``unfreeze_epoch`` epochs, so the new head stops sending large
  random gradients into pretrained filters, then full fine-tuning.
* layer-wise learning-rate decay (``layer_decay`` < 1, with ``full`` or ``freeze_unfreeze``): the head
  learns at ``lr``, each block below it at ``layer_decay`` times the rate of the block above (timm's
  ``group_matcher`` defines the blocks for ResNets, ViTs and most timm models), so early generic filters
  change least.

Biases and normalisation weights get no weight decay (1-D tensors), as in timm and reBEN.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from eotwin.ben.train.models import classifier_prefix
from eotwin.errors import EotwinError

FinetuneMode = Literal["full", "linear", "freeze_unfreeze"]


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the classifier's parameters."""
    head = classifier_prefix(model)
    names = {n for n, _ in model.named_parameters() if n == head or n.startswith(head + ".")}
    if not names:
        raise EotwinError(f"classifier '{head}' of {type(model).__name__} has no parameters")
    return names


def backbone_trainable(mode: FinetuneMode, epoch: int, unfreeze_epoch: int = 1) -> bool:
    """Whether the backbone learns during ``epoch`` (0-based) under ``mode``."""
    if mode == "full":
        return True
    if mode == "linear":
        return False
    if mode == "freeze_unfreeze":
        return epoch >= unfreeze_epoch
    raise EotwinError(f"unknown fine-tuning mode '{mode}': use full, linear or freeze_unfreeze")


def set_backbone_trainable(model: nn.Module, trainable: bool) -> int:
    """Switch ``requires_grad`` of every non-head parameter; return how many parameters now learn."""
    head = head_parameter_names(model)
    for name, param in model.named_parameters():
        param.requires_grad_(trainable or name in head)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_backbone_norms(model: nn.Module) -> None:
    """Put the backbone's normalisation layers in eval mode so frozen batch-norm statistics stay put."""
    head = classifier_prefix(model)
    for name, module in model.named_modules():
        if name and not (name == head or name.startswith(head + ".")) and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def param_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
    """Optimiser groups over every parameter (frozen ones included, so unfreezing needs no new optimiser).

    Each group has ``lr`` (already scaled) and ``lr_scale``; schedulers scale ``lr`` from there.
    """
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise EotwinError(f"finetune.layer_decay must be in (0, 1], got {layer_decay}")
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        if layer_decay is not None and layer_decay < 1:
            from timm.optim import param_groups_layer_decay

            groups = param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay)
        else:
            decay, no_decay = [], []
            for _, p in model.named_parameters():
                (no_decay if p.ndim <= 1 else decay).append(p)
            groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
    out = []
    for group in groups:
        if not group["params"]:
            continue
        scale = float(group.get("lr_scale", 1.0))
        out.append({**group, "lr_scale": scale, "lr": lr * scale})
    return out


def layer_scales(model: nn.Module, layer_decay: float) -> dict[str, float]:
    """Learning-rate scale of each parameter under layer-wise decay (for reports and tests)."""
    groups = param_groups(model, 1.0, 0.0, layer_decay)
    by_id = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters()}
