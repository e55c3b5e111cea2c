"""Fine-tuning modes, layer-wise learning-rate decay groups, and the YAML config with dotted overrides."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from eotwin.ben.train.config import TrainConfig, load_config, parse_override
from eotwin.ben.train.finetune import (
    backbone_trainable,
    freeze_backbone_norms,
    head_parameter_names,
    layer_scales,
    param_groups,
    set_backbone_trainable,
)
from eotwin.ben.train.models import build_model
from eotwin.errors import EotwinError

REPO = Path(__file__).resolve().parents[3]


def test_linear_probe_and_freeze_unfreeze():
    model = build_model("test_resnet", in_chans=4, num_classes=19)
    head = head_parameter_names(model)
    assert head == {"fc.weight", "fc.bias"}
    set_backbone_trainable(model, False)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == head
    model.train()
    freeze_backbone_norms(model)
    norms = [m for m in model.modules() if m.__class__.__name__.startswith("BatchNorm")]
    assert norms and not any(m.training for m in norms)
    set_backbone_trainable(model, True)
    assert all(p.requires_grad for p in model.parameters())
    assert [backbone_trainable("freeze_unfreeze", e, 2) for e in range(4)] == [False, False, True, True]
    assert not backbone_trainable("linear", 10) and backbone_trainable("full", 0)


def test_layer_decay_groups_resnet_and_vit():
    for name, kwargs in (("test_resnet", {}), ("test_vit", {"img_size": 120, "patch_size": 8})):
        model = build_model(name, in_chans=4, num_classes=19, **kwargs)
        scales = layer_scales(model, 0.5)
        head = head_parameter_names(model)
        assert all(scales[n] == pytest.approx(1.0) for n in head)
        first = next(iter(dict(model.named_parameters())))  # stem / patch embedding
        assert scales[first] == min(scales.values()) < 1.0
        distinct = sorted(set(round(s, 12) for s in scales.values()))
        # consecutive blocks differ by exactly the decay factor
        for low, high in itertools.pairwise(distinct):
            assert low / high == pytest.approx(0.5)
        groups = param_groups(model, 1e-3, 0.05, 0.5)
        ids = [id(p) for g in groups for p in g["params"]]
        assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # every parameter once
        for g in groups:
            assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])
            if any(p.ndim <= 1 for p in g["params"]):
                assert g["weight_decay"] == 0.0


def test_param_groups_include_frozen_parameters():
    model = build_model("test_resnet", in_chans=4, num_classes=19)
    set_backbone_trainable(model, False)
    groups = param_groups(model, 1e-3, 0.01)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}  # flags restored
    with pytest.raises(EotwinError):
        param_groups(model, 1e-3, 0.01, layer_decay=1.5)


def test_example_configs_and_overrides():
    for name in ("resnet50", "resnet26", "vit", "smoke"):
        cfg = load_config(REPO / "configs" / "ben" / f"{name}.yaml")
        assert isinstance(cfg, TrainConfig)
    cfg = load_config(REPO / "configs" / "ben" / "resnet50.yaml",
                      ["model.name=resnet26", "optim.lr=3e-4", "data.bands=rgb", "trainer.devices=[0,1]", "evaluate_splits=[test]"])
    assert cfg.model.name == "resnet26" and cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.data.bands == ("B04", "B03", "B02") and cfg.trainer.devices == [0, 1] and cfg.evaluate_splits == ("test",)
    assert parse_override("loss.alpha=null") == ("loss.alpha", None)
    with pytest.raises(EotwinError, match=r"model.nmae"):
        load_config(None, ["model.nmae=resnet26"])
    with pytest.raises(EotwinError, match=r"optim.lr"):
        load_config(None, ["optim.lr=-1"])
    with pytest.raises(EotwinError, match="unknown band"):
        load_config(None, ["data.bands=B10"])
    with pytest.raises(EotwinError, match=r"section.key=value"):
        load_config(None, ["model.name"])
    with pytest.raises(EotwinError, match=r"needs pretrained.path"):
        load_config(None, ["finetune.mode=linear"])
