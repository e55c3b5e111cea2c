"""Validate a DeltaTwin component folder: the deltaVersion 1.4 schema, then what the schema misses.

Every finding names a severity, the file, the key path in that file and what goes wrong at run time,
so a typo is caught here instead of minutes into a build. The service behaviours quoted in the messages
are those of deltatwin-cli 1.8.1 (see ``eotwin.deltatwin.schema`` for where each comes from).

Here: reading the files and running the checks in order; the checks themselves are in ``check_manifest``,
``check_workflow`` and ``check_inputs``, what they report in ``findings``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eotwin.deltatwin.check_inputs import check_inputs_file
from eotwin.deltatwin.check_manifest import check_manifest
from eotwin.deltatwin.check_workflow import check_workflow, dependency_manifests
from eotwin.deltatwin.findings import Collector, Report
from eotwin.deltatwin.manifest import MANIFEST_FILE, WORKFLOW_FILE


def validate_component(root: str | Path, *, components: list[Path] | tuple[Path, ...] = ()) -> Report:
    """All findings for one component folder; ``components`` are local folders to resolve dependencies."""
    root = Path(root)
    out = Collector()
    report = Report(root=root)
    if not root.is_dir():
        out.error(str(root), "", "folder", "not a directory")
        report.findings = out.findings
        return report
    manifest = _load_json(root / MANIFEST_FILE, out)
    if manifest is not None:
        check_manifest(root, manifest, out)
    workflow = _load_yaml(root / WORKFLOW_FILE, out)
    if workflow is not None and isinstance(manifest, dict):
        deps = dependency_manifests(manifest, list(components))
        check_workflow(manifest, workflow, deps, out)
    if isinstance(manifest, dict):
        for path in sorted(root.glob("inputs*.json")):
            data = _load_json(path, out)
            if data is not None:
                check_inputs_file(path.name, data, manifest, out)
    report.findings = out.findings
    return report


# ---------------------------------------------------------------- loading

def _load_json(path: Path, out: Collector) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        out.error(path.name, "", "missing-file", f"{path.name} is missing")
    except (OSError, UnicodeDecodeError) as exc:
        out.error(path.name, "", "unreadable", f"cannot read: {exc}")
    except json.JSONDecodeError as exc:
        out.error(path.name, "", "syntax", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    return None


def _load_yaml(path: Path, out: Collector) -> Any:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        out.error(path.name, "", "missing-file", f"{path.name} is missing")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        out.error(path.name, "", "unreadable", f"cannot read: {exc}")
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        out.error(path.name, "", "syntax", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}")
        return None
    if not isinstance(data, dict):
        out.error(path.name, "", "structure", "must be a mapping with 'nodes' and 'edges'")
        return None
    return data
