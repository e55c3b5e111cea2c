"""Run a DeltaTwin component offline, without Docker, with the service's semantics.

What the service does (deltatwin-cli 1.8.1, ``delta/run/orchestrator.py`` and ``delta/run/job``) and what
this runner does in its place:
- nodes run in dependency order; a failed node stops the nodes downstream of it, other branches go on;
- each model runs in its own copy of its ``path`` folder (the image's working directory) with
  ``bash -c <command>``; ``$(inputs.x)`` is substituted only as a whole segment, and here every value is
  quoted, so input values are data and never shell code;
- Data inputs reach the model as paths to read-only files; each Data output is the single match of its
  glob in the working directory (none or several fail the node);
- dependencies are other components, found in local folders (``components``) instead of the registry;
- ``hardwareRequirements`` become an address-space limit (``RLIMIT_AS``) plus a resident-memory watchdog,
  and a CPU affinity / thread count (defaults as the service: 2 GB, 500m);
- every node has a log (secrets masked) and the run a record (``run.json``: inputs with secrets masked,
  timings, peak memory, outputs with sizes and checksums) with a page to read it (``run.html``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob as globlib
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from eotwin.deltatwin import command as cmd
from eotwin.deltatwin.envs import PythonEnv, resolve_env
from eotwin.deltatwin.graph import dependants, topological_order
from eotwin.deltatwin.manifest import (
    MANIFEST_FILE,
    WORKFLOW_FILE,
    Component,
    Edge,
    ModelSpec,
    Parameter,
    find_component,
    load_component,
)
from eotwin.deltatwin.runreport import write_run_html
from eotwin.deltatwin.schema import DEFAULT_CPU, DEFAULT_RAM, PRIMITIVE_TYPES, parse_cpu, parse_memory
from eotwin.deltatwin.validate import validate_component
from eotwin.errors import EotwinError
from eotwin.io.files import write_json_atomic
from eotwin.progress import ProgressReporter, ensure_progress

RECORD_FILE = "run.json"
REPORT_FILE = "run.html"
RUNNING_FILE = ".running"  # the runner's process id while a run is under way; gone once run.json is written
_MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory",
                 "failed to map segment", "mmap failed")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS")


class RunOptions(BaseModel):
    """Options of ``eotwin deltatwin run`` (one model shared by the CLI and library callers)."""

    component: Path
    inputs_file: Path | None = None
    run_dir: Path | None = None
    components: list[Path] = Field(default_factory=list)
    enforce_limits: bool = True
    node_timeout_s: float | None = None
    env_cache: Path | None = None


@dataclass
class Value:
    """What travels on an edge: a primitive, a secret, or a Data file path."""

    type: str
    value: Any
    secret: bool = False

    def public(self) -> Any:
        return cmd.REDACTED if self.secret else self.value


@dataclass
class NodeRecord:
    id: str
    ref: str
    status: str = "pending"  # succeeded, failed, skipped
    started_at: str | None = None
    duration_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "ref": self.ref, "status": self.status, "started_at": self.started_at,
               "duration_s": self.duration_s, **self.detail}
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class RunResult:
    run_dir: Path
    record: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.record["status"] == "succeeded"

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return self.record["outputs"]


class _Secrets:
    """Secret values of the run, to mask wherever text leaves a process (logs, records, errors)."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, value: Any) -> None:
        if isinstance(value, str) and value:
            self.values.add(value)

    def scrub(self, text: str) -> str:
        for secret in sorted(self.values, key=len, reverse=True):
            text = text.replace(secret, cmd.REDACTED)
        return text

    def scrub_all(self, value: Any) -> Any:
        """Every string in a JSON-like structure, keys included, scrubbed."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub_all(k): self.scrub_all(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_all(v) for v in value]
        return value


@dataclass
class _Context:
    options: RunOptions
    secrets: _Secrets
    progress: Any
    envs: dict[tuple[Path, str], PythonEnv] = field(default_factory=dict)
    stack: tuple[str, ...] = ()


# ---------------------------------------------------------------- public entry point

def run_component(options: RunOptions, progress: ProgressReporter | None = None) -> RunResult:
    """Validate, read the inputs, run every node, write ``run.json``; the result says whether it succeeded."""
    component = _load_valid(options.component, options.components)
    raw_inputs = _read_inputs_file(options.inputs_file) if options.inputs_file else {}
    secrets = _Secrets()
    inputs = _convert_inputs(component, raw_inputs, options.inputs_file, secrets)
    run_dir = _make_run_dir(options.run_dir, component.manifest.name)
    ctx = _Context(options=options, secrets=secrets, progress=ensure_progress(progress))
    staged = _stage_data_inputs(inputs, run_dir / "inputs")
    started = time.monotonic()
    record: dict[str, Any] = {
        "component": component.manifest.name,
        "component_dir": str(component.root),
        "run_dir": str(run_dir),
        "started_at": _now(),
        "runner": {"substitution": "whole segments, values quoted", "limits": options.enforce_limits},
        "inputs": {name: _value_record(v, staged.get(name)) for name, v in inputs.items()},
    }
    units = _count_units(component, options.components)
    with ctx.progress.task(f"run {component.manifest.name}", total=units) as task:
        nodes, outputs = _execute(component, inputs, run_dir, ctx, task)
    failed = [n for n in nodes if n["status"] == "failed"]
    record.update({
        "status": "failed" if failed else "succeeded",
        "duration_s": round(time.monotonic() - started, 3),
        "nodes": nodes,
        "outputs": _publish_outputs(outputs, run_dir / "outputs"),
    })
    if failed:
        record["error"] = f"node {failed[0]['id']}: {failed[0].get('error', 'failed')}"
    record = secrets.scrub_all(record)
    write_json_atomic(run_dir / RECORD_FILE, record)
    write_run_html(record, run_dir / REPORT_FILE)
    (run_dir / RUNNING_FILE).unlink(missing_ok=True)
    return RunResult(run_dir=run_dir, record=record)


# ---------------------------------------------------------------- preparation

def _load_valid(folder: Path, components: list[Path]) -> Component:
    report = validate_component(folder, components=tuple(components))
    blocking = [f for f in report.errors if f.file in (MANIFEST_FILE, WORKFLOW_FILE)]
    if blocking:
        raise EotwinError(f"{folder} is not a valid component ({len(blocking)} errors; first: {blocking[0].line()}); "
                          f"see eotwin deltatwin validate {folder}")
    return load_component(folder)


def _read_inputs_file(path: Path) -> dict[str, Any]:
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


def _convert_inputs(component: Component, raw: dict[str, Any], source: Path | None,
                    secrets: _Secrets) -> dict[str, Value]:
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
            values[name] = Value("Data", _local_data_path(url, source, name))
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
            values[name] = Value("Data", _local_data_path(str(url), component.root / MANIFEST_FILE, name))
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


def _local_data_path(url: str, source: Path | None, name: str) -> Path:
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


def _make_run_dir(run_dir: Path | None, name: str) -> Path:
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


def _stage_data_inputs(inputs: dict[str, Value], folder: Path) -> dict[str, Path]:
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
        _make_read_only(target)
        value.value = target
        staged[name] = source
    return staged


def _count_units(component: Component, search: list[Path], seen: tuple[str, ...] = ()) -> int:
    total = 0
    for node in component.workflow.nodes:
        if node.section == "models":
            total += 1
        elif node.section == "dependencies":
            dep = component.manifest.dependencies.get(node.name)
            folder = find_component(dep.id, dep.version, search) if dep else None
            if folder is not None and dep.id not in seen:
                with contextlib.suppress(EotwinError):
                    total += _count_units(load_component(folder), search, (*seen, dep.id))
    return total


# ---------------------------------------------------------------- graph execution

def _execute(component: Component, inputs: dict[str, Value], run_dir: Path, ctx: _Context,
             task: Any) -> tuple[list[dict[str, Any]], dict[str, Value]]:
    """Run one component's graph; returns the node records and the component outputs (name -> value)."""
    wf = component.workflow
    ids = [n.id for n in wf.nodes]
    links = [(e.source.id, e.target.id) for e in wf.edges]
    try:
        order = topological_order(ids, links)
    except ValueError as exc:
        raise EotwinError(f"{component.root / WORKFLOW_FILE}: {exc}") from None
    incoming: dict[str, list[tuple[int, Edge]]] = {i: [] for i in ids}
    for k, edge in enumerate(wf.edges):
        incoming.setdefault(edge.target.id, []).append((k, edge))
    on_edge: dict[int, Value] = {}
    records: dict[str, NodeRecord] = {n.id: NodeRecord(n.id, n.ref) for n in wf.nodes}
    blocked: dict[str, str] = {}
    outputs: dict[str, Value] = {}
    for node_id in order:
        node = wf.node(node_id)
        rec = records[node_id]
        if node_id in blocked:
            rec.status, rec.error = "skipped", f"not run: upstream node {blocked[node_id]} failed"
            continue
        feeds = {e.target.port or "data": on_edge[k] for k, e in incoming[node_id] if k in on_edge}
        rec.started_at, t0 = _now(), time.monotonic()
        try:
            produced = _run_node(component, node.section, node.name, node_id, feeds, inputs, run_dir, ctx, rec, task)
        except _NodeFailure as exc:
            rec.status, rec.error = "failed", ctx.secrets.scrub(str(exc))
            for later in dependants(node_id, links):
                blocked.setdefault(later, node_id)
        else:
            rec.status = "succeeded"
            for k, edge in enumerate(wf.edges):
                if edge.source.id == node_id:
                    port = edge.source.port or "data"
                    if node.section in ("inputs", "resources"):
                        on_edge[k] = produced["data"]
                    elif port in produced:
                        on_edge[k] = produced[port]
            if node.section == "outputs":
                outputs[node.name] = produced["data"]
        rec.duration_s = round(time.monotonic() - t0, 3)
    return [records[i].to_dict() for i in ids], outputs


class _NodeFailure(Exception):
    """A node failed; the message is one line for the record and the CLI."""


def _run_node(component: Component, section: str, name: str, node_id: str, feeds: dict[str, Value],
              inputs: dict[str, Value], run_dir: Path, ctx: _Context, rec: NodeRecord, task: Any) -> dict[str, Value]:
    manifest = component.manifest
    if section == "inputs":
        return {"data": inputs[name]}
    if section == "resources":
        return {"data": _resource_value(component, name, manifest.resources[name])}
    if section == "outputs":
        value = feeds.get("data") or next(iter(feeds.values()), None)
        if value is None:
            raise _NodeFailure(f"output {name} received nothing")
        rec.detail["output"] = _file_record(Path(value.value)) if value.type == "Data" else {"value": value.public()}
        return {"data": value}
    if section == "models":
        try:
            return _run_model(component, manifest.models[name], name, node_id, feeds, run_dir / "nodes" / node_id,
                              ctx, rec)
        finally:
            task.advance(1)
    if section == "dependencies":
        return _run_dependency(manifest.dependencies[name], node_id, feeds, run_dir / "nodes" / node_id, ctx, rec,
                               task)
    raise _NodeFailure(f"unknown section {section}")


def _resource_value(component: Component, name: str, param: Parameter) -> Value:
    if param.type == "Data":
        url = param.value.get("url") if isinstance(param.value, dict) else param.value
        try:
            return Value("Data", _local_data_path(str(url), component.root / MANIFEST_FILE, name))
        except EotwinError as exc:
            raise _NodeFailure(str(exc)) from None
    return Value(param.type, param.value, secret=param.type == "secret")


def _run_dependency(dep, node_id: str, feeds: dict[str, Value], folder: Path, ctx: _Context, rec: NodeRecord,
                    task: Any) -> dict[str, Value]:
    if dep.id in ctx.stack:
        raise _NodeFailure(f"dependency cycle: {' -> '.join((*ctx.stack, dep.id))}")
    root = find_component(dep.id, dep.version, ctx.options.components)
    if root is None:
        searched = ", ".join(str(p) for p in ctx.options.components) or "no folder (use --components)"
        raise _NodeFailure(f"dependency {dep.id} {dep.version} not found under {searched}")
    try:
        component = _load_valid(root, ctx.options.components)
    except EotwinError as exc:
        raise _NodeFailure(f"dependency {dep.id}: {exc}") from None
    declared = component.manifest.inputs
    sub_inputs: dict[str, Value] = {}
    for port, value in feeds.items():
        if port not in declared:
            raise _NodeFailure(f"dependency {dep.id} has no input '{port}'")
        sub_inputs[port] = value
    for port, param in declared.items():
        if port not in sub_inputs:
            if param.value is None:
                raise _NodeFailure(f"dependency {dep.id}: input '{port}' is not fed and has no default")
            sub_inputs[port] = Value(param.type, param.value, secret=param.type == "secret")
    rec.detail["component"] = {"id": dep.id, "version": dep.version, "folder": str(root)}
    folder.mkdir(parents=True, exist_ok=True)
    sub_ctx = _Context(options=ctx.options, secrets=ctx.secrets, progress=ctx.progress, envs=ctx.envs,
                       stack=(*ctx.stack, dep.id))
    nodes, outputs = _execute(component, sub_inputs, folder, sub_ctx, task)
    rec.detail["nodes"] = nodes
    failed = [n for n in nodes if n["status"] == "failed"]
    if failed:
        raise _NodeFailure(f"dependency {dep.id}: node {failed[0]['id']}: {failed[0].get('error')}")
    rec.detail["outputs"] = {k: _file_record(Path(v.value)) if v.type == "Data" else {"value": v.public()}
                             for k, v in outputs.items()}
    return outputs


# ---------------------------------------------------------------- one model process

def _run_model(component: Component, model: ModelSpec, model_id: str, node_id: str, feeds: dict[str, Value],
               folder: Path, ctx: _Context, rec: NodeRecord) -> dict[str, Value]:
    source = component.root / model.path
    work = folder / "work"
    log_path = folder / "log.txt"
    folder.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        raise _NodeFailure(f"model folder {source} does not exist")
    shutil.copytree(source, work, symlinks=True)
    bound: dict[str, cmd.Bound] = {}
    for iid, spec in model.inputs.items():
        fed = feeds.get(iid)
        value = fed.value if fed is not None else spec.value
        secret = (fed.secret if fed is not None else False) or spec.type == "secret"
        bound[iid] = cmd.Bound(type=spec.type, value=None if value is None else value, prefix=spec.prefix,
                               secret=secret)
    params = model.parameters
    command, secret_env = cmd.render_for_exec(params.command, bound)
    shown = cmd.render(params.command, bound, secure=True)
    hardware = params.hardwareRequirements
    ram = parse_memory((hardware.ram if hardware and hardware.ram else None) or DEFAULT_RAM)
    cpus = max(1, math.ceil(parse_cpu((hardware.cpu if hardware and hardware.cpu else None) or DEFAULT_CPU)))
    cpu_set = sorted(os.sched_getaffinity(0))[:cpus]
    env_key = (component.root, model_id)
    try:
        if env_key not in ctx.envs:
            ctx.envs[env_key] = resolve_env(params, source, cache_dir=ctx.options.env_cache,
                                            log_path=folder / "env.log")
    except EotwinError as exc:
        raise _NodeFailure(str(exc)) from None
    penv = ctx.envs[env_key]
    rec.detail.update({
        "model": model_id,
        "command": shown,
        "log": str(log_path),
        "python": penv.to_dict(),
        "limits": {"ram_bytes": ram, "cpus": len(cpu_set), "enforced": ctx.options.enforce_limits},
    })
    env = _child_env(penv, params.environment, len(cpu_set), folder)
    env.update(secret_env)
    if cmd.secret_reaches_argv(command, secret_env):
        rec.detail["warning"] = ("the command is not `bash SCRIPT ...`: the program receives its secret input(s) as "
                                 "arguments, visible in the process list while it runs")
    data_in = {iid: Path(b.value) for iid, b in bound.items() if b.type == "Data" and b.value is not None}
    before = {iid: _fingerprint(path) for iid, path in data_in.items()}
    proc_result = _spawn(command, work, env, log_path, ram if ctx.options.enforce_limits else None,
                         cpu_set if ctx.options.enforce_limits else None, ctx)
    rec.detail.update(proc_result.detail)
    if proc_result.error:
        raise _NodeFailure(proc_result.error)
    changed = [iid for iid, path in data_in.items() if _fingerprint(path) != before[iid]]
    if changed:  # file modes do not stop root: check that read-only inputs stayed as they were
        raise _NodeFailure(f"the model modified its read-only Data input(s) {', '.join(changed)}")
    produced: dict[str, Value] = {}
    collected = {}
    for oid, spec in model.outputs.items():
        if spec.type != "Data" or not spec.glob:
            continue
        try:
            pattern = cmd.render_glob(spec.glob, bound)
        except KeyError as exc:
            raise _NodeFailure(f"output {oid}: glob {spec.glob} uses input {exc} which has no value") from None
        matches = sorted(globlib.glob(pattern if os.path.isabs(pattern) else str(work / pattern)))
        if len(matches) != 1:
            listed = ", ".join(os.path.relpath(m, work) for m in matches[:5])
            found = f"{len(matches)} matches ({listed}{', ...' if len(matches) > 5 else ''})" if matches else "no match"
            raise _NodeFailure(f"output {oid}: glob '{pattern}' must match exactly one file in the working "
                               f"directory, found {found}")
        target = folder / "outputs" / oid / Path(matches[0]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(matches[0]).is_dir():
            shutil.copytree(matches[0], target)
        else:
            shutil.copy2(matches[0], target)
        _make_read_only(target)
        produced[oid] = Value("Data", target)
        collected[oid] = _file_record(target)
    rec.detail["outputs"] = collected
    return produced


# what a model inherits from the runner's environment: the system basics and eotwin's non-secret service settings;
# everything else (CDSE keys, tokens, cloud credentials) reaches a model only as an input it declares
_INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "PYTHONPATH",
              "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "SSL_CERT_FILE",
              "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_INHERITED_PREFIXES = ("LC_", "EOTWIN_")
_SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")


def inherited_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the runner's environment a model sees (never a variable whose name suggests a secret)."""
    kept = {}
    for name, value in environ.items():
        if any(word in name.upper() for word in _SECRET_WORDS):
            continue
        if name in _INHERITED or name.startswith(_INHERITED_PREFIXES):
            kept[name] = value
    return kept


def _child_env(penv: PythonEnv, environment: dict[str, str], cpus: int, folder: Path) -> dict[str, str]:
    shim = folder / ".bin"
    shim.mkdir(exist_ok=True)
    for exe in ("python", "python3"):  # `python` in the command is the chosen environment's interpreter
        script = shim / exe
        script.write_text(f'#!/bin/sh\nexec "{penv.python}" "$@"\n')
        script.chmod(0o755)
    env = inherited_env(os.environ)
    if penv.kind == "venv":
        env.pop("PYTHONPATH", None)
    env["PATH"] = f"{shim}{os.pathsep}{penv.python.parent}{os.pathsep}{env.get('PATH', '')}"
    if penv.kind == "venv":
        env["VIRTUAL_ENV"] = str(penv.python.parent.parent)
    for var in _THREAD_VARS:
        env[var] = str(cpus)
    env.setdefault("MALLOC_ARENA_MAX", "2")  # glibc reserves 64 MB of address space per arena otherwise
    env["PYTHONUNBUFFERED"] = "1"
    env.update({str(k): str(v) for k, v in environment.items()})
    return env


@dataclass
class _Outcome:
    detail: dict[str, Any]
    error: str | None


def _spawn(command: str, work: Path, env: dict[str, str], log_path: Path, ram: int | None,
           cpu_set: list[int] | None, ctx: _Context) -> _Outcome:
    def limits() -> None:  # runs in the child between fork and exec
        _die_with_parent()
        if ram is not None:
            resource.setrlimit(resource.RLIMIT_AS, (ram, ram))
        if cpu_set:
            os.sched_setaffinity(0, cpu_set)

    import psutil

    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["/bin/bash", "-c", command], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=limits,
                                start_new_session=True)
        pump = threading.Thread(target=_pump, args=(proc.stdout, log, ctx.secrets), daemon=True)
        pump.start()
        peak, peak_vms, watchdog = 0, 0, None
        try:
            root = psutil.Process(proc.pid)
        except psutil.Error:
            root = None
        try:
            while proc.poll() is None:
                rss, vms = _tree_memory(root) if root is not None else (0, 0)
                peak, peak_vms = max(peak, rss), max(peak_vms, vms)
                if ram is not None and rss > ram and watchdog is None:
                    watchdog = f"resident memory {rss} bytes passed the limit of {ram} bytes"
                    _kill_group(proc)
                timeout = ctx.options.node_timeout_s
                if timeout and time.monotonic() - started > timeout and watchdog is None:
                    watchdog = f"ran past the {timeout:g} s timeout"
                    _kill_group(proc)
                time.sleep(0.05)
        except BaseException:  # Ctrl-C, SIGTERM: the model runs in its own session and would outlive the runner
            _kill_group(proc)
            proc.wait()
            raise
        pump.join(timeout=10)
    code = proc.returncode
    # peak_rss_bytes: the whole tree's resident memory (what the service's container limit counts);
    # peak_vms_bytes: the largest single process's address space (what RLIMIT_AS limits), for sizing `ram`
    detail = {"exit_code": code, "wall_s": round(time.monotonic() - started, 3), "peak_rss_bytes": peak,
              "peak_vms_bytes": peak_vms}
    if code == 0 and watchdog is None:
        return _Outcome(detail, None)
    tail = _tail(log_path)
    memory_hit = (watchdog is not None and "memory" in watchdog) or any(s in tail for s in _MEMORY_SIGNS)
    detail["memory_limit_hit"] = bool(memory_hit and ram is not None)
    if watchdog:
        why = f"stopped: {watchdog}"
    elif code < 0:
        why = f"killed by {signal.Signals(-code).name}"
    else:
        why = f"exit status {code}"
    if memory_hit and ram is not None and not watchdog:
        why += f"; stopped by its memory limit of {ram} bytes (hardwareRequirements.ram)"
    last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
    if last:
        why += f"; last log line: {last.strip()[:200]}"
    return _Outcome(detail, f"{why} (log: {log_path})")


def _die_with_parent() -> None:
    """Linux: the model is killed when the runner dies, even by kill -9 (its own session would outlive it)."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _pump(stream, log, secrets: _Secrets) -> None:
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", errors="replace")
        log.write(secrets.scrub(text).encode("utf-8"))
        log.flush()
    stream.close()


def _tree_memory(root) -> tuple[int, int]:
    """(sum of resident memory over the process tree, largest single address space)."""
    import psutil

    total, largest = 0, 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            info = p.memory_info()
            total += info.rss
            largest = max(largest, info.vms)
    return total, largest


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(path: Path, size: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------- records

def _make_read_only(path: Path) -> None:
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in paths:
        p.chmod(stat.S_IMODE(p.stat().st_mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _fingerprint(path: Path) -> list[tuple]:
    """Size, modification and change times of a file or of every file under a folder (detects writes)."""
    paths = [path] if not path.is_dir() else sorted(path.rglob("*"))
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            out.append((str(p), None))
            continue
        out.append((str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return out


def _file_record(path: Path) -> dict[str, Any]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    for p in files:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                md5.update(chunk)
                sha.update(chunk)
                size += len(chunk)
    return {"path": str(path), "size": size, "md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def _value_record(value: Value, source: Path | None) -> dict[str, Any]:
    if value.type == "Data":
        return {"type": "Data", "url": str(source) if source else None, **_file_record(Path(value.value))}
    return {"type": value.type, "value": value.public()}


def _publish_outputs(outputs: dict[str, Value], folder: Path) -> dict[str, Any]:
    """Component outputs under ``outputs/<name>/`` (hard links to the node's copy when possible)."""
    published = {}
    for name, value in outputs.items():
        if value.type != "Data":
            published[name] = {"type": value.type, "value": value.public()}
            continue
        source = Path(value.value)
        target = folder / name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, target)
        published[name] = {"type": "Data", **_file_record(target)}
    return published


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
