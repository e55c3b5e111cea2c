"""The training loop can learn: a tiny model overfits the 24 real BigEarthNet v2 patches on S1 + S2 (``all``:
VV, VH and the 12 S2 bands, 14 channels)."""

from __future__ import annotations

import json
from pathlib import Path

from eotwin.ben.train.config import load_config
from eotwin.ben.train.pipeline import run_training

REPO = Path(__file__).resolve().parents[3]


def test_overfits_the_24_real_patches(tmp_path, ben_mock_dir):
    config = load_config(REPO / "configs" / "ben" / "smoke.yaml", [
        f"output={tmp_path / 'overfit'}", f"data.source={ben_mock_dir}", "model.name=test_resnet",
        # all 24 patches, the 6 with snow / cloud included, in one batch; no augmentation, no regularisation
        "data.bands=all", "data.train_split=all", "data.include_snow=true", "data.include_cloud=true", "data.batch_size=24",
        "data.val_split=test", "augment.enabled=false", "loss.pos_weight=false", "optim.weight_decay=0",
        "optim.lr=0.01", "trainer.max_epochs=40", "trainer.monitor=val/loss", "trainer.monitor_mode=min",
        "evaluate_splits=[all]",
    ])
    result = run_training(config)
    train = result.scores["all"]["@0.5"]
    assert train["samples"] == 24
    assert train["f1_micro"] >= 0.95, train["f1_micro"]
    assert train["map_micro"] >= 0.95
    assert result.epochs == 40 and result.global_step == 40
    results = json.loads(result.results_json.read_text())
    assert results["data"]["bands"][:3] == ["VV", "VH", "B01"] and len(results["data"]["bands"]) == 14
    for name in ("config.yaml", "curves.png", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (result.output / name).is_file(), name
