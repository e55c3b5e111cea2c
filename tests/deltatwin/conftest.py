"""Small DeltaTwin components built in tmp_path: Python scripts as models, run for real by the runner."""

from __future__ import annotations

import copy
import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

LICENSE = {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0.txt",
           "copyrights": [{"years": [2025], "company": "eotwin tests"}]}

# A model that writes its arguments (one per line) and a copy of its Data input: proves what reached argv.
ECHO_PY = textwrap.dedent('''
    import json, pathlib, sys
    args = sys.argv[1:]
    pathlib.Path("result.txt").write_text(json.dumps(args))
    print("echo got", len(args), "arguments:", args)
''')

ECHO_MANIFEST: dict[str, Any] = {
    "deltaVersion": "1.4",
    "name": "tiny-echo",
    "description": "Writes its arguments to result.txt.",
    "owner": "eotwin",
    "license": LICENSE,
    "inputs": {
        "text": {"type": "string", "description": "free text"},
        "count": {"type": "integer", "description": "a number", "value": 3},
        "token": {"type": "secret", "description": "a credential"},
    },
    "outputs": {"result": {"type": "Data", "description": "the arguments, one per line"}},
    "models": {
        "echo": {
            "path": "models",
            "type": "python",
            "parameters": {
                "pythonVersion": "3.11",
                "pipRequirements": [],
                "hardwareRequirements": {"cpu": "1000m", "ram": "2Gi"},
                "command": "python echo.py $(inputs.text) $(inputs.count) $(inputs.token)",
            },
            "inputs": {"text": {"type": "string"}, "count": {"type": "integer"}, "token": {"type": "secret"}},
            "outputs": {"result": {"type": "Data", "glob": "result.txt"}},
        }
    },
}

ECHO_WORKFLOW: dict[str, Any] = {
    "nodes": [
        {"id": "text", "ref": "inputs.text"},
        {"id": "count", "ref": "inputs.count"},
        {"id": "token", "ref": "inputs.token"},
        {"id": "echo", "ref": "models.echo"},
        {"id": "result", "ref": "outputs.result"},
    ],
    "edges": [
        {"from": {"id": "text"}, "to": {"id": "echo", "port": "text"}},
        {"from": {"id": "count"}, "to": {"id": "echo", "port": "count"}},
        {"from": {"id": "token"}, "to": {"id": "echo", "port": "token"}},
        {"from": {"id": "echo", "port": "result"}, "to": {"id": "result"}},
    ],
}


def write_component(root: Path, manifest: dict, workflow: dict | None, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if workflow is not None:
        (root / "workflow.yml").write_text(yaml.safe_dump(workflow, sort_keys=False))
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def echo_component(tmp_path) -> Callable[..., Path]:
    """``echo_component(mutate=None, name="echo")``: the tiny echo component, optionally edited first."""

    def make(mutate: Callable[[dict, dict], None] | None = None, name: str = "echo",
             files: dict[str, str] | None = None) -> Path:
        manifest, workflow = copy.deepcopy(ECHO_MANIFEST), copy.deepcopy(ECHO_WORKFLOW)
        if mutate is not None:
            mutate(manifest, workflow)
        return write_component(tmp_path / name, manifest, workflow, {"models/echo.py": ECHO_PY, **(files or {})})

    return make
