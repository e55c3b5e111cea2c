"""A run's inputs and folder: the inputs file read and checked as the service does, Data staged read-only.

The run folder holds ``.running`` (the runner's process id) until ``run.json`` is written, so a folder left
by a runner killed mid-way is recognised and cleared when the same run starts again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eotwin.deltatwin import command as cmd
from eotwin.deltatwin.manifest import MANIFEST_FILE, Component
from eotwin.deltatwin.runenv import Secrets
from eotwin.deltatwin.runreport import RECORD_FILE, make_read_only
from eotwin.deltatwin.schema import PRIMITIVE_TYPES
from eotwin.errors import EotwinError

RUNNING_FILE = ".running"  # the runner's process id while a run is under way; gone once run.json is written


@dataclass
class Value:
    """What travels on an edge: a primitive, a secret, or a Data file path."""

    type: str
    value: Any
    secret: bool = False

    def public(self) -> Any:
        return cmd.REDACTED if self.secret else self.value


def read_inputs_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EotwinError(f"{path}: inputs file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EotwinError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise EotwinError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise EotwinError(f"{path}: expected {{input name: {{type, value}}}}")
    return data


def convert_inputs(component: Component, raw: dict[str, Any], source: Path | None,
                    secrets: Secrets) -> dict[str, Value]:
    """The service's input checks (names, types, required), then typed values; manifest defaults fill gaps."""
    declared = component.manifest.inputs
    where = f"{source}: " if source else ""
    values: dict[str, Value] = {}
    for name, entry in raw.items():
        if name not in declared:
            raise EotwinError(f"{where}unknown input '{name}' (inputs: {', '.join(declared) or 'none'})")
        mtype, ftype = declared[name].type, entry.get("type")
        if ftype is None:
            raise EotwinError(f"{where}input '{name}' has no type")
        if ftype != mtype and not {ftype, mtype} <= {"integer", "number"}:
            raise EotwinError(f"{where}input '{name}' must be of type {mtype} but is of type {ftype}")
        if mtype == "Data":
            url = entry.get("url") or entry.get("path")
            if not isinstance(url, str) or not url:
                raise EotwinError(f"{where}Data input '{name}' needs 'url' (a file path)")
            values[name] = Value("Data", local_data_path(url, source, name))
            continue
        if mtype == "secret":
            value = entry.get("secret_value", entry.get("value"))
            if not isinstance(value, str):
                raise EotwinError(f"{where}secret input '{name}' needs a string 'value'")
            secrets.add(value)
            values[name] = Value("secret", value, secret=True)
            continue
        value = entry.get("value")
        values[name] = Value(mtype, _check_primitive(name, mtype, value, where))
    missing = []
    for name, param in declared.items():
        if name in values:
            continue
        if param.value is None:
            missing.append(name)
        elif param.type == "Data":
            url = param.value.get("url") if isinstance(param.value, dict) else param.value
            values[name] = Value("Data", local_data_path(str(url), component.root / MANIFEST_FILE, name))
        else:
            if param.type == "secret":
                secrets.add(param.value)
            values[name] = Value(param.type, param.value, secret=param.type == "secret")
    if missing:
        raise EotwinError(f"{where}inputs {missing} required (no value given and no default in the manifest)")
    return values


def _check_primitive(name: str, mtype: str, value: Any, where: str) -> Any:
    ok = {"boolean": lambda v: isinstance(v, bool),
          "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
          "string": lambda v: isinstance(v, str)}
    if mtype in PRIMITIVE_TYPES and not ok[mtype](value):
        raise EotwinError(f"{where}input '{name}' must be of type {mtype} but its value is a JSON "
                          f"{type(value).__name__}")
    return value


def local_data_path(url: str, source: Path | None, name: str) -> Path:
    if url.startswith(("http://", "https://", "s3://")):
        raise EotwinError(f"Data input '{name}' is remote ({url.split('://')[0]}): the offline runner does not "
                          "download; fetch it and give a file path")
    path = Path(url.removeprefix("file://")).expanduser()
    if not path.is_absolute() and ".." in path.parts:
        # an inputs file handed over with a component must not reach files beside it (../../etc/passwd)
        raise EotwinError(f"Data input '{name}': relative path {url} climbs outside the inputs file's folder; "
                          "give an absolute path")
    if not path.is_absolute():
        beside = (Path(source).parent / path) if source else None
        path = beside if beside is not None and beside.exists() else Path.cwd() / path
    if not path.exists():
        raise EotwinError(f"Data input '{name}': {path} does not exist")
    return path.resolve()


def make_run_dir(run_dir: Path | None, name: str) -> Path:
    if run_dir is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        run_dir = Path("deltatwin-runs") / f"{name}-{stamp}"
    run_dir = Path(run_dir)
    if run_dir.is_dir() and _abandoned(run_dir):  # a run killed mid-way (kill -9): its leftovers go, it runs again
        shutil.rmtree(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise EotwinError(f"{run_dir} already exists and is not empty: choose a new run folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUNNING_FILE).write_text(f"{os.getpid()}\n")
    except OSError as exc:
        raise EotwinError(f"cannot create run folder {run_dir}: {exc.strerror or exc}") from None
    return run_dir.resolve()


def _abandoned(run_dir: Path) -> bool:
    """A run folder whose runner died before writing ``run.json`` (a finished run, even a failed one, is kept)."""
    from eotwin.io.files import process_alive

    marker = run_dir / RUNNING_FILE
    if (run_dir / RECORD_FILE).exists() or not marker.is_file() or marker.is_symlink():
        return False
    try:
        pid = int(marker.read_text().strip())
    except (OSError, ValueError):
        return False
    return pid > 0 and pid != os.getpid() and not process_alive(pid)


def stage_data_inputs(inputs: dict[str, Value], folder: Path) -> dict[str, Path]:
    """Copy Data inputs into the run as read-only files (the service mounts them read-only)."""
    staged = {}
    for name, value in inputs.items():
        if value.type != "Data":
            continue
        source = Path(value.value)
        target = folder / name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        make_read_only(target)
        value.value = target
        staged[name] = source
    return staged
