"""deltatwin-cli's own verdict on component folders, run in its separate environment.

deltatwin-cli pins its own dependencies, so it lives in its own virtual environment (``.venv-deltatwin``,
made by ``scripts/setup_deltatwin_cli.sh``). For each folder this asks it what ``deltatwin component
publish`` and ``run start_local`` would: the manifest passes ``check_manifest`` (the deltaVersion 1.4 JSON
schema), ``delta.manifest.parser.parse`` turns it into its typed model, and every model gets a Dockerfile
from ``PythonRunner.generate_dockerfile`` (which rejects an unsupported ``pythonVersion``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from eotwin.errors import EotwinError

DEFAULT_ENV = ".venv-deltatwin"

_SCRIPT = r"""
import contextlib, io, json, os, sys
from delta.manifest.manifest import check_manifest
from delta.manifest.parser import parse
from delta.run.job.builder.python_builder import PythonRunner
out = []
for folder in sys.argv[1:]:
    path = os.path.join(folder, "manifest.json")
    item = {"folder": folder, "schema_ok": False, "parsed": False, "dockerfiles": {}, "messages": []}
    try:
        data = json.load(open(path))
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            item["schema_ok"] = bool(check_manifest(data, verbose=True))
        item["messages"] += [l for l in buf.getvalue().splitlines() if l.strip()]
        manifest = parse(path)
        item["parsed"] = True
        for name, model in manifest.models.items():
            item["dockerfiles"][name] = PythonRunner(model).generate_dockerfile()
    except Exception as exc:
        item["messages"].append(f"{type(exc).__name__}: {exc}")
    item["ok"] = item["schema_ok"] and item["parsed"] and not any(m.startswith(("ValueError", "Runtime")) for m in item["messages"])
    out.append(item)
print(json.dumps(out))
"""


def deltatwin_cli_python(repo: Path | None = None) -> Path | None:
    """The interpreter of deltatwin-cli's environment, if it exists (``<repo>/.venv-deltatwin``)."""
    from eotwin.deltatwin.packaging import source_root

    try:
        root = repo or source_root()
    except EotwinError:
        return None
    python = Path(root) / DEFAULT_ENV / "bin" / "python"
    return python if python.exists() else None


def deltatwin_cli_verdicts(folders: list[Path], python: Path) -> list[dict[str, Any]]:
    """Per folder: ``ok``, ``schema_ok``, ``parsed``, ``dockerfiles`` (model -> text), ``messages``."""
    if not Path(python).exists():
        raise EotwinError(f"{python}: no deltatwin-cli environment (run scripts/setup_deltatwin_cli.sh)")
    proc = subprocess.run([str(python), "-c", _SCRIPT, *[str(Path(f).resolve()) for f in folders]],
                          capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EotwinError(f"deltatwin-cli's check did not run: {last[:200]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
