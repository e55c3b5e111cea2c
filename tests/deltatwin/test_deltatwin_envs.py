"""Python environments for models: this interpreter when it satisfies the requirements, else a cached venv."""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path

from eotwin.deltatwin.envs import env_key, unsatisfied
from eotwin.deltatwin.manifest import ModelParameters
from eotwin.deltatwin.runner import RunOptions, run_component

PACKAGING = metadata.version("packaging")


def _params(**kw) -> ModelParameters:
    return ModelParameters(pythonVersion="3.11", command="python x.py", **kw)


def test_current_environment_is_checked_against_pins_and_files(tmp_path):
    assert unsatisfied(_params(pipRequirements=[{"name": "packaging", "version": PACKAGING}]), tmp_path) == []
    assert unsatisfied(_params(pipRequirements=[{"name": "Packaging"}]), tmp_path) == []  # names are canonical
    assert unsatisfied(_params(pipRequirements=[{"name": "packaging", "version": "0.1"}]), tmp_path) == [
        f"packaging==0.1 (installed: {PACKAGING})"]
    assert unsatisfied(_params(pipRequirements=[{"name": "no-such-dist-xyz", "version": "1"}]), tmp_path) == [
        "no-such-dist-xyz==1 (installed: none)"]
    (tmp_path / "requirements.txt").write_text(textwrap.dedent(f"""
        # comment
        packaging>={PACKAGING}  # inline comment
        pytest ; python_version < "3"
        ./wheels/packaging-{PACKAGING}-py3-none-any.whl
        --index-url https://example.invalid/simple
    """))
    assert unsatisfied(_params(pipRequirementFiles=["requirements.txt"]), tmp_path) == [
        "--index-url https://example.invalid/simple"]
    a = env_key(_params(pipRequirements=[{"name": "a", "version": "1"}]), tmp_path, "3.11")
    assert a == env_key(_params(pipRequirements=[{"name": "a", "version": "1"}]), tmp_path, "3.11")
    assert a != env_key(_params(pipRequirements=[{"name": "a", "version": "2"}]), tmp_path, "3.11")
    assert a != env_key(_params(pipRequirements=[{"name": "a", "version": "1"}]), tmp_path, "3.12")


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, made here so the venv test needs no index."""
    files = {"eotwin_probe_pkg/__init__.py": 'VERSION = "1.0"\n',
             "eotwin_probe_pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: eotwin-probe-pkg\nVersion: 1.0\n",
             "eotwin_probe_pkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: eotwin-test\n"
                                                    "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("eotwin_probe_pkg-1.0.dist-info/RECORD,,")
    files["eotwin_probe_pkg-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True)
    path = folder / "eotwin_probe_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


PROBE_PY = textwrap.dedent('''
    import json, sys
    import eotwin_probe_pkg
    try:
        import numpy  # noqa: F401
        has_numpy = True
    except ImportError:
        has_numpy = False
    json.dump({"version": eotwin_probe_pkg.VERSION, "prefix": sys.prefix, "numpy": has_numpy},
              open("probe.json", "w"))
''')


def test_missing_requirement_builds_a_cached_venv(tmp_path, monkeypatch):
    from tests.deltatwin.conftest import LICENSE, write_component

    wheels = tmp_path / "wheels"
    _wheel(wheels)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: pip takes the package from the local wheelhouse
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    manifest = {"deltaVersion": "1.4", "name": "probe", "description": "d", "owner": "o", "license": LICENSE,
                "outputs": {"probe": {"type": "Data"}},
                "models": {"probe": {"path": "models", "type": "python", "parameters": {
                    "pythonVersion": "3.11", "command": "python probe.py",
                    "pipRequirements": [{"name": "eotwin-probe-pkg", "version": "1.0"}]},
                    "outputs": {"probe": {"type": "Data", "glob": "probe.json"}}}}}
    workflow = {"nodes": [{"id": "probe", "ref": "models.probe"}, {"id": "out", "ref": "outputs.probe"}],
                "edges": [{"from": {"id": "probe", "port": "probe"}, "to": {"id": "out"}}]}
    root = write_component(tmp_path / "probe", manifest, workflow, {"models/probe.py": PROBE_PY})
    cache = tmp_path / "envs"
    first = run_component(RunOptions(component=root, run_dir=tmp_path / "run1", env_cache=cache))
    assert first.ok, first.record.get("error")
    node = first.record["nodes"][0]
    key = node["python"]["key"]
    assert node["python"]["kind"] == "venv" and node["python"]["python"] == str(cache / key / "bin" / "python")
    probe = json.loads(Path(first.outputs["probe"]["path"]).read_text())
    assert probe == {"version": "1.0", "prefix": str(cache / key), "numpy": False}  # isolated from eotwin's env
    assert (cache / key / ".eotwin-complete").exists()
    assert "eotwin-probe-pkg==1.0" in (tmp_path / "run1" / "nodes" / "probe" / "env.log").read_text()
    second = run_component(RunOptions(component=root, run_dir=tmp_path / "run2", env_cache=cache))
    assert second.ok and second.record["nodes"][0]["python"]["key"] == key
    assert not (tmp_path / "run2" / "nodes" / "probe" / "env.log").exists()  # reused, not rebuilt
    monkeypatch.delenv("PIP_FIND_LINKS")  # now the package cannot be found: the node fails, clearly
    manifest["models"]["probe"]["parameters"]["pipRequirements"][0]["version"] = "2.0"
    root = write_component(tmp_path / "probe2", manifest, workflow, {"models/probe.py": PROBE_PY})
    third = run_component(RunOptions(component=root, run_dir=tmp_path / "run3", env_cache=cache))
    assert not third.ok
    assert third.record["nodes"][0]["error"] == (
        "building the Python environment failed at 'pip install eotwin-probe-pkg==2.0' "
        f"(see {tmp_path / 'run3' / 'nodes' / 'probe' / 'env.log'})")
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [key]  # no half-built environment left
    # the log ends with how the step ended (a CI run once failed at 'venv' with an empty log)
    assert (tmp_path / "run3" / "nodes" / "probe" / "env.log").read_text().splitlines()[-1] == "# exit status 1"
