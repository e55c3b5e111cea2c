"""``ben train`` killed (kill -9) mid-run resumes from its last checkpoint with ``--resume`` and, in deterministic
mode, ends where an uninterrupted run ends (same weights, same best score); checkpoints are written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.hardening.test_kills import finish, kill_when, start

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 2


def _args(output: Path, source: Path, *extra: str) -> list[str]:
    return ["ben", "train", "-c", str(REPO / "configs" / "ben" / "smoke.yaml"), f"output={output}",
            f"data.source={source}", "model.name=test_resnet", "augment.enabled=false", "optim.schedule=none",
            "trainer.deterministic=true", f"trainer.max_epochs={EPOCHS}", "evaluate_splits=[validation]", *extra]


def _weights(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["state_dict"], ckpt["epoch"]


def test_a_killed_training_resumes_to_the_uninterrupted_result(tmp_path, ben_mock_dir):
    env = {"OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    uninterrupted = start(_args(straight, ben_mock_dir), tmp_path, **env)  # beside it, on the other core
    proc = start(_args(killed, ben_mock_dir), tmp_path, **env)
    kill_when(proc, lambda: (killed / "checkpoints" / "last.ckpt").is_file(), timeout_s=300)
    proc.wait()
    assert not (killed / "results.json").exists()  # a killed run never looks finished
    _, epoch = _weights(killed / "checkpoints" / "last.ckpt")  # whole: written atomically
    assert epoch < EPOCHS - 1
    finish([*_args(killed, ben_mock_dir), "--resume"], tmp_path, **env)
    _, err = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, err
    a, epoch_a = _weights(straight / "checkpoints" / "last.ckpt")
    b, epoch_b = _weights(killed / "checkpoints" / "last.ckpt")
    assert epoch_a == epoch_b == EPOCHS - 1
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (straight, killed))
    assert rb["resumed_from_epoch"] is not None and rb["epochs"] == ra["epochs"]
    assert rb["best_score"] == pytest.approx(ra["best_score"], abs=1e-4)
    for kind, scores in ra["scores"]["validation"].items():  # '@0.5' and 'tuned'
        for metric in ("f1_micro", "f1_macro", "map_micro", "map_macro"):
            assert rb["scores"]["validation"][kind][metric] == pytest.approx(scores[metric], abs=1e-4), (kind, metric)
    assert not [p for p in (killed / "checkpoints").iterdir() if ".part" in p.name]
    assert not list((tmp_path / "tmp").rglob("*.ckpt*"))  # no checkpoint staged outside the run folder


def test_checkpoints_are_written_beside_the_target_and_never_half(tmp_path, monkeypatch):
    from eotwin.ben.train.checkpoint_io import AtomicCheckpointIO

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "state_dict": {"w": torch.ones(3)}}, target)
    dead = tmp_path / f".last.{2**22 + 7}.k1ll3d.part.ckpt"  # a writer killed mid-save (no such pid)
    dead.write_bytes(b"half")
    real_save = torch.save

    def dies_half_way(obj, f, *a, **kw):
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(Exception, match="disk full"):
        io.save_checkpoint({"epoch": 2, "state_dict": {"w": torch.zeros(3)}}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(target, weights_only=True)["epoch"] == 1  # the previous one, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "tmp"]  # the dead writer's part reclaimed
    assert list((tmp_path / "tmp").iterdir()) == []
    os.sync()
