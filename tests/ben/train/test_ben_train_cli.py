"""End to end through the CLI on the 24 real BigEarthNet v2 patches: train, resume, evaluate, predict.

A tiny timm model (``test_resnet``) keeps this to seconds on 2 CPU cores; the code path is the one
resnet50 takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eotwin.ben.labels import CLASSES_ORIGINAL
from eotwin.cli.main import run

REPO = Path(__file__).resolve().parents[3]
SMOKE = str(REPO / "configs" / "ben" / "smoke.yaml")


def _args(output: Path, source: Path, *extra: str) -> list[str]:
    return ["-q", "ben", "train", "-c", SMOKE, f"output={output}", f"data.source={source}", "model.name=test_resnet",
            "augment.enabled=false", "optim.schedule=none", *extra]


def _state(path: Path) -> tuple[dict[str, torch.Tensor], int, int]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["state_dict"], ckpt["epoch"], ckpt["global_step"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ben_mock_dir):
    """A straight 3-epoch run, and the same run stopped after 2 epochs then resumed to 3."""
    root = tmp_path_factory.mktemp("ben_runs")
    torch.set_num_threads(1)
    straight, resumed = root / "straight", root / "resumed"
    assert run(_args(straight, ben_mock_dir, "trainer.max_epochs=3", "evaluate_splits=[]")) == 0
    assert run(_args(resumed, ben_mock_dir, "trainer.max_epochs=2", "evaluate_splits=[]")) == 0
    assert run(_args(resumed, ben_mock_dir, "trainer.max_epochs=3", "evaluate_splits=[train,validation,test]",
                     "--resume")) == 0
    return straight, resumed


def test_resume_continues_the_same_run(runs):
    straight, resumed = runs
    a, epoch_a, step_a = _state(straight / "checkpoints" / "last.ckpt")
    b, epoch_b, step_b = _state(resumed / "checkpoints" / "last.ckpt")
    assert (epoch_a, step_a) == (epoch_b, step_b) == (2, 3)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    logs = sorted((resumed / "logs").glob("version_*/metrics.csv"))
    assert len(logs) == 2  # one CSV segment per run segment, the resumed one starting at epoch 2
    second = logs[1].read_text().splitlines()
    epochs = {line.split(",")[0] for line in second[1:] if line.split(",")[0]}
    assert epochs == {"2"}


def test_training_writes_every_artefact(runs):
    _, resumed = runs
    for name in ("config.yaml", "results.json", "curves.png", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (resumed / name).is_file(), name
    assert (resumed / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((resumed / "tensorboard").glob("events.out.tfevents.*"))
    results = json.loads((resumed / "results.json").read_text())
    assert results["epochs"] == 3 and results["resumed_from_epoch"] == 2 and results["model"] == "test_resnet"
    assert results["data"]["bands"] == ["B02", "B03", "B04", "B08"]
    assert len(results["thresholds"]) == 19 and len(results["pos_weight"]) == 19
    for split in ("train", "validation", "test"):
        for kind in ("@0.5", "tuned"):
            scores = results["scores"][split][kind]
            assert scores["samples"] == 6
            assert 0 <= scores["f1_micro"] <= 1 and 0 <= scores["map_macro"] <= 1
            assert list(scores["per_class"]) == list(CLASSES_ORIGINAL)


def test_evaluate_prints_scores_equal_to_results(runs, capsys, tmp_path):
    _, resumed = runs
    capsys.readouterr()
    out_json = tmp_path / "eval.json"
    assert run(["-q", "ben", "evaluate", str(resumed / "checkpoints" / "best.ckpt"), "--split", "validation",
                "-o", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "F1 micro" in printed and "mAP micro" in printed and "macro" in printed
    evaluated = json.loads(out_json.read_text())["scores"]
    recorded = json.loads((resumed / "results.json").read_text())["scores"]["validation"]
    for kind in ("@0.5", "tuned"):
        for key in ("f1_micro", "f1_macro", "map_micro", "map_macro"):
            assert evaluated[kind][key] == pytest.approx(recorded[kind][key], abs=1e-6)
    headline = f"F1 micro {100 * evaluated['@0.5']['f1_micro']:.1f}"
    assert headline in printed


def test_predict_writes_a_georeferenced_geotiff(runs, capsys, tmp_path, sample_files):
    import rasterio

    _, resumed = runs
    ckpt = resumed / "checkpoints" / "best.ckpt"
    probs_tif, labels_tif = tmp_path / "probs.tif", tmp_path / "labels.tif"
    assert run(["-q", "ben", "predict", str(ckpt), str(sample_files.l2a), "-o", str(probs_tif)]) == 0
    capsys.readouterr()
    assert run(["-q", "ben", "predict", str(ckpt), str(sample_files.l2a), "-o", str(labels_tif), "--kind", "labels",
                "--stride", "60", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["output"] == str(labels_tif) and printed["item"] == f"{labels_tif}.json"
    assert printed["kind"] == "labels" and len(printed["class_frequency"]) == 19
    with rasterio.open(sample_files.l2a) as src, rasterio.open(probs_tif) as p, rasterio.open(labels_tif) as lab:
        assert p.crs == src.crs == lab.crs
        assert p.count == lab.count == 19 and list(p.descriptions) == list(CLASSES_ORIGINAL)
        assert p.transform == src.transform @ src.transform.scale(120)
        assert lab.transform == src.transform @ src.transform.scale(60)
        assert p.shape == (int(np.ceil(src.height / 120)), int(np.ceil(src.width / 120)))
        assert p.bounds.left == src.bounds.left and p.bounds.top == src.bounds.top
        probs = p.read()
        labels = lab.read()
        assert p.tags()["BOA_ADD_OFFSET_APPLIED"] == "-1000.0"
    valid = ~np.isnan(probs)
    assert valid.any() and probs[valid].min() >= 0 and probs[valid].max() <= 1
    assert set(np.unique(labels)) <= {0, 1, 255}
    assert (tmp_path / "probs.png").read_bytes()[:4] == b"\x89PNG"
    # cloud-optimised, and described by a STAC item beside it
    for tif, kind, stride in ((probs_tif, "probability", 120), (labels_tif, "labels", 60)):
        with rasterio.open(tif) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            shape, transform = [ds.height, ds.width], list(ds.transform)[:6]
        item = json.loads(Path(f"{tif}.json").read_text())
        assert item["type"] == "Feature" and item["id"] == tif.stem
        assert item["assets"]["data"]["href"] == f"./{tif.name}" and "cloud-optimized" in item["assets"]["data"]["type"]
        assert item["assets"]["preview"]["href"] == f"./{tif.stem}.png"
        props = item["properties"]
        assert props["proj:shape"] == shape and props["proj:transform"] == transform
        assert props["eotwin:kind"] == kind and props["eotwin:stride_px"] == stride
        assert props["eotwin:classes"] == list(CLASSES_ORIGINAL) and len(props["eotwin:thresholds"]) == 19
        assert props["eotwin:datetime_from"] == "time of writing"  # the sample L2A has no DATETIME tag
        west, south, east, north = item["bbox"]
        assert west < east and south < north


def test_predict_matches_bands_by_name(runs, tmp_path, sample_files):
    import rasterio

    _, resumed = runs
    ckpt = str(resumed / "checkpoints" / "best.ckpt")
    shuffled = tmp_path / "shuffled.tif"
    with rasterio.open(sample_files.l2a) as src:
        data, profile, names, tags = src.read(), src.profile, src.descriptions, src.tags()
    order = [3, 1, 0, 2]  # B08, B03, B02, B04
    with rasterio.open(shuffled, "w", **profile) as dst:
        dst.write(data[order])
        dst.update_tags(**tags)
        for i, k in enumerate(order, start=1):
            dst.set_band_description(i, names[k])
    assert run(["-q", "ben", "predict", ckpt, str(sample_files.l2a), "-o", str(tmp_path / "a.tif")]) == 0
    assert run(["-q", "ben", "predict", ckpt, str(shuffled), "-o", str(tmp_path / "b.tif")]) == 0
    # unnamed bands, named on the command line
    with rasterio.open(shuffled, "r+") as dst:
        for i in range(1, 5):
            dst.set_band_description(i, "")
    assert run(["-q", "ben", "predict", ckpt, str(shuffled), "-o", str(tmp_path / "d.tif")]) == 2  # names needed
    assert not (tmp_path / "d.tif").exists()
    assert run(["-q", "ben", "predict", ckpt, str(shuffled), "-o", str(tmp_path / "c.tif"), "--bands", "B08,B03,B02,B04"]) == 0
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b, rasterio.open(tmp_path / "c.tif") as c:
        np.testing.assert_array_equal(a.read(), b.read())
        np.testing.assert_array_equal(a.read(), c.read())


def test_cli_errors_are_one_line(runs, capsys, tmp_path, ben_mock_dir, sample_files):
    _, resumed = runs
    capsys.readouterr()
    # a finished run is not silently overwritten
    assert run(_args(resumed, ben_mock_dir, "trainer.max_epochs=3")) == 2
    assert "--resume" in capsys.readouterr().err
    assert run(_args(tmp_path / "x", ben_mock_dir, "model.nmae=resnet26")) == 2
    assert "model.nmae" in capsys.readouterr().err
    assert run(_args(tmp_path / "x", ben_mock_dir, "model.name=no_such_model")) == 2
    assert "unknown timm model" in capsys.readouterr().err
    assert run(_args(tmp_path / "x", ben_mock_dir, f"pretrained.path={tmp_path / 'none.safetensors'}")) == 2
    assert "no such weight file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written for a run that could not start
    assert run(["ben", "evaluate", str(tmp_path / "missing.ckpt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    out = tmp_path / "p.tif"
    assert run(["ben", "predict", str(resumed / "checkpoints" / "best.ckpt"), str(sample_files.l2a), "-o", str(out),
                "--bands", "B02,B03,B04,B05"]) == 2
    err = capsys.readouterr().err
    assert "B08" in err and "Traceback" not in err and not out.exists()
