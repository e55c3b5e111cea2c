"""Fine-tuning through the Lightning module on real patches, and the rebalancing sampler's weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from eotwin.ben.train.config import load_config
from eotwin.ben.train.datamodule import rebalance_weights
from eotwin.ben.train.models import build_model
from eotwin.ben.train.pipeline import load_classifier, run_training

REPO = Path(__file__).resolve().parents[3]
BANDS = ("B02", "B03", "B04", "B08")


def test_linear_probe_only_changes_the_head(tmp_path, ben_mock_dir):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    pretrained = build_model("test_resnet", in_chans=4, num_classes=19)
    with torch.no_grad():  # non-trivial batch-norm statistics, which a linear probe must not update
        for module in pretrained.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    weights = tmp_path / "pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in pretrained.state_dict().items()}, str(weights))
    config = load_config(REPO / "configs" / "ben" / "smoke.yaml", [
        f"output={tmp_path / 'probe'}", f"data.source={ben_mock_dir}", "model.name=test_resnet",
        f"pretrained.path={weights}", f"pretrained.bands=[{','.join(BANDS)}]", "finetune.mode=linear",
        "trainer.max_epochs=2", "evaluate_splits=[]", "optim.lr=0.05",
    ])
    result = run_training(config)
    trained = load_classifier(result.last_checkpoint).model.state_dict()
    before = pretrained.state_dict()
    for key, value in before.items():
        if key.startswith("fc."):
            assert not torch.allclose(trained[key], value), key
        elif value.is_floating_point():
            torch.testing.assert_close(trained[key], value, msg=key)


def test_rebalance_weights_favour_rare_classes():
    targets = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=np.float32)
    w = rebalance_weights(targets)
    # class frequencies 4/5, 1/5, 0: inverse 1.25, 5; a patch weighs its rarest class; no label -> smallest weight
    np.testing.assert_allclose(w, [1.25, 1.25, 1.25, 5.0, 1.25])
    assert w[3] == pytest.approx(4 * w[0])


def test_freeze_then_unfreeze_with_layer_decay_and_plateau(tmp_path, ben_mock_dir):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    pretrained = build_model("test_resnet", in_chans=3, num_classes=1000)  # an "ImageNet" RGB model
    weights = tmp_path / "rgb.safetensors"
    save_file({k: v.contiguous() for k, v in pretrained.state_dict().items()}, str(weights))
    common = [f"output={tmp_path / 'ft'}", f"data.source={ben_mock_dir}", "model.name=test_resnet",
              f"pretrained.path={weights}", "pretrained.bands=rgb", "finetune.mode=freeze_unfreeze",
              "finetune.unfreeze_epoch=1", "finetune.layer_decay=0.5", "optim.schedule=plateau", "evaluate_splits=[]"]
    first = run_training(load_config(REPO / "configs" / "ben" / "smoke.yaml", [*common, "trainer.max_epochs=1"]))
    frozen = load_classifier(first.last_checkpoint).model.state_dict()
    conv = frozen["conv1.0.weight"]
    # epoch 0 is a linear probe: RGB filters exactly as loaded (B04, B03, B02 <- R, G, B), B08 the mean filter
    src = pretrained.state_dict()["conv1.0.weight"]
    torch.testing.assert_close(conv[:, BANDS.index("B04")], src[:, 0])
    torch.testing.assert_close(conv[:, BANDS.index("B02")], src[:, 2])
    torch.testing.assert_close(conv[:, BANDS.index("B08")], src.mean(dim=1))
    second = run_training(load_config(REPO / "configs" / "ben" / "smoke.yaml", [*common, "trainer.max_epochs=2"]),
                          resume=True)
    assert second.epochs == 2 and second.resumed_from_epoch == 1
    unfrozen = load_classifier(second.last_checkpoint).model.state_dict()
    assert not torch.allclose(unfrozen["conv1.0.weight"], conv)  # epoch 1 trains the backbone too


def test_loader_workers_read_the_lmdb_like_the_main_process(ben_mock_dir):
    from eotwin.ben.train.config import DataConfig
    from eotwin.ben.train.datamodule import open_split
    from eotwin.ben.train.module import BenClassifier
    from eotwin.ben.train.pipeline import predict_dataset

    data = DataConfig(source=ben_mock_dir, bands=("10m",), num_workers=1)
    dataset = open_split(data, "validation")
    dataset.source.keys()  # the parent process has the LMDB open, as during training
    config = load_config(None, ["model.name=test_resnet"]).model_dump(mode="json")
    module = BenClassifier(config, dataset.describe()).eval()
    probs0, targets0 = predict_dataset(module, dataset, batch_size=4, num_workers=0)
    probs1, targets1 = predict_dataset(module, dataset, batch_size=4, num_workers=1)
    np.testing.assert_array_equal(targets0, targets1)
    np.testing.assert_allclose(probs0, probs1, rtol=1e-6, atol=1e-7)
