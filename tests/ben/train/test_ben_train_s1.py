"""S1 + S2 training: several seeds with a summary, through the CLI on the real patches, and S2-pretrained weights
extended to the radar channels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eotwin.ben.train.models import PRETRAINED_BANDS, build_model, first_conv_name, load_pretrained
from eotwin.cli.main import run

REPO = Path(__file__).resolve().parents[3]
SMOKE = str(REPO / "configs" / "ben" / "smoke.yaml")


def _train(output: Path, source: Path, *extra: str) -> list[str]:
    return ["-q", "ben", "train", "-c", SMOKE, f"output={output}", f"data.source={source}", "model.name=test_resnet",
            "data.bands=all", "augment.enabled=false", "optim.schedule=none", "trainer.max_epochs=1",
            "evaluate_splits=[validation,test]", *extra]


def test_seeds_write_one_results_file_each_and_a_summary(capsys, tmp_path, ben_lmdb_missing_s1):
    source, unpaired = ben_lmdb_missing_s1  # the first train patch has no S1 partner in this LMDB
    output = tmp_path / "seeds"
    assert run(_train(output, source, "--seeds", "0,1,2")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and unpaired in err and "--skip-missing" in err
    assert not output.exists()

    assert run(_train(output, source, "--seeds", "0,1,2", "--skip-missing")) == 0
    capsys.readouterr()
    values: dict[str, list[float]] = {"f1_micro": [], "map_macro": []}
    for seed in (0, 1, 2):
        run_dir = output / f"seed-{seed}"
        for name in ("config.yaml", "results.json", "curves.png", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
            assert (run_dir / name).is_file(), (seed, name)
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
        results = json.loads((run_dir / "results.json").read_text())
        assert results["config"]["trainer"]["seed"] == seed and results["config"]["data"]["skip_missing"]
        assert len(results["data"]["bands"]) == 14 and results["data"]["patches"] == 5
        assert results["data"]["unpaired_skipped"] == 1
        for metric in values:
            values[metric].append(results["scores"]["test"]["@0.5"][metric])
    summary = json.loads((output / "summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2] and set(summary["splits"]) == {"validation", "test"}
    for metric, seen in values.items():
        entry = summary["splits"]["test"]["@0.5"][metric]
        assert entry["values"] == seen
        assert entry["mean"] == pytest.approx(np.mean(seen)) and entry["std"] == pytest.approx(np.std(seen, ddof=1))
        assert entry["min"] == min(seen) and entry["max"] == max(seen)
    first = torch.load(output / "seed-0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    second = torch.load(output / "seed-1" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    conv = next(k for k in first["state_dict"] if k.endswith("weight") and first["state_dict"][k].ndim == 4)
    assert first["state_dict"][conv].shape[1] == 14
    assert not torch.equal(first["state_dict"][conv], second["state_dict"][conv])  # other seed, other run

    assert run(_train(output, source, "--seeds", "0,1,2", "--skip-missing")) == 2  # nothing is overwritten
    assert "already holds a run" in capsys.readouterr().err
    before = (output / "summary.json").read_bytes()
    assert run(_train(output, source, "--seeds", "0,1,2", "--skip-missing", "--resume")) == 0  # all finished: reused
    assert (output / "summary.json").read_bytes() == before
    assert run(_train(output, source, "--seeds", "0,x")) == 2
    assert "not an integer" in capsys.readouterr().err


@pytest.mark.parametrize("init", ["mean", "zero"])
def test_s2_checkpoint_extended_to_s1_channels(tmp_path, init):
    from safetensors.torch import save_file

    s2 = PRETRAINED_BANDS["s2"]
    source = build_model("test_resnet", in_chans=len(s2), num_classes=19)
    path = tmp_path / "s2.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = build_model("test_resnet", in_chans=14, num_classes=19)
    bands = PRETRAINED_BANDS["all"]
    report = load_pretrained(target, path, source_bands=s2, target_bands=bands, new_band_init=init)
    assert report.kept_bands == list(s2) and report.new_bands == ["VV", "VH"]
    conv = f"{first_conv_name(target)}.weight"
    w_src, w_dst = source.state_dict()[conv], target.state_dict()[conv]
    torch.testing.assert_close(w_dst[:, 2:], w_src)  # every S2 filter kept exactly
    expected = w_src.mean(dim=1) if init == "mean" else torch.zeros_like(w_src[:, 0])
    for channel in (0, 1):
        torch.testing.assert_close(w_dst[:, channel], expected)
    if init == "zero":  # the extended backbone starts as the S2 one, whatever the radar input (the head is new)
        source.eval()
        target.eval()
        x = torch.randn(2, 14, 120, 120)
        with torch.no_grad():
            torch.testing.assert_close(target.forward_features(x), source.forward_features(x[:, 2:]), rtol=1e-5, atol=1e-5)
