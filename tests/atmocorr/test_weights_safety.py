"""A ``.pt`` is a pickle: loading one must never run code (``weights_only=True`` everywhere)."""

import pickle
import subprocess
import sys

import pytest

from eotwin.errors import EotwinError


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_is_refused(tmp_path):
    from eotwin.atmocorr.ai.train import load_torch_model

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": {}, "config": {}, "record": _Payload(str(marker))}))
    with pytest.raises(EotwinError, match="not a weights-only"):
        load_torch_model(evil)
    assert not marker.exists()


def test_train_init_with_a_malicious_pickle_is_one_line(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": {}, "config": {}, "record": _Payload(str(marker))}))
    proc = subprocess.run([sys.executable, "-m", "eotwin", "-q", "atmocorr", "train", "--init", str(evil), "--steps", "1",
                           "-o", str(tmp_path / "m.onnx")], capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()
    assert not (tmp_path / "m.onnx").exists()


def test_no_unsafe_torch_load_in_the_package():
    from pathlib import Path

    import eotwin

    root = Path(eotwin.__file__).parent
    offenders = [str(p) for p in root.rglob("*.py") if "weights_only=False" in p.read_text()]
    assert offenders == []
