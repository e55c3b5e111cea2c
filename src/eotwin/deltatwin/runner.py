"""Run a DeltaTwin component offline, without Docker: its graph executed node by node with the service's semantics.

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

Here: the graph, its nodes and their outputs; ``runinputs`` reads the inputs and makes the run folder,
``runenv`` filters a model's environment and masks secrets, ``process`` spawns and watches a model's
process, ``runreport`` writes the record's file entries and its page.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import math
import os
import shutil
import time
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
from eotwin.deltatwin.process import spawn
from eotwin.deltatwin.runenv import Secrets, child_env
from eotwin.deltatwin.runinputs import (
    RUNNING_FILE,
    Value,
    convert_inputs,
    local_data_path,
    make_run_dir,
    read_inputs_file,
    stage_data_inputs,
)
from eotwin.deltatwin.runreport import (
    RECORD_FILE,
    REPORT_FILE,
    file_record,
    fingerprint,
    make_read_only,
    now,
    write_run_html,
)
from eotwin.deltatwin.schema import DEFAULT_CPU, DEFAULT_RAM, parse_cpu, parse_memory
from eotwin.deltatwin.validate import validate_component
from eotwin.errors import EotwinError
from eotwin.io.files import write_json_atomic
from eotwin.progress import ProgressReporter, ensure_progress


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


@dataclass
class _Context:
    options: RunOptions
    secrets: Secrets
    progress: Any
    envs: dict[tuple[Path, str], PythonEnv] = field(default_factory=dict)
    stack: tuple[str, ...] = ()


def run_component(options: RunOptions, progress: ProgressReporter | None = None) -> RunResult:
    """Validate, read the inputs, run every node, write ``run.json``; the result says whether it succeeded."""
    component = _load_valid(options.component, options.components)
    raw_inputs = read_inputs_file(options.inputs_file) if options.inputs_file else {}
    secrets = Secrets()
    inputs = convert_inputs(component, raw_inputs, options.inputs_file, secrets)
    run_dir = make_run_dir(options.run_dir, component.manifest.name)
    ctx = _Context(options=options, secrets=secrets, progress=ensure_progress(progress))
    staged = stage_data_inputs(inputs, run_dir / "inputs")
    started = time.monotonic()
    record: dict[str, Any] = {
        "component": component.manifest.name,
        "component_dir": str(component.root),
        "run_dir": str(run_dir),
        "started_at": now(),
        "runner": {"substitution": "whole segments, values quoted", "limits": options.enforce_limits},
        "inputs": {name: value_record(v, staged.get(name)) for name, v in inputs.items()},
    }
    units = _count_units(component, options.components)
    with ctx.progress.task(f"run {component.manifest.name}", total=units) as task:
        nodes, outputs = _execute(component, inputs, run_dir, ctx, task)
    failed = [n for n in nodes if n["status"] == "failed"]
    record.update({
        "status": "failed" if failed else "succeeded",
        "duration_s": round(time.monotonic() - started, 3),
        "nodes": nodes,
        "outputs": publish_outputs(outputs, run_dir / "outputs"),
    })
    if failed:
        record["error"] = f"node {failed[0]['id']}: {failed[0].get('error', 'failed')}"
    record = secrets.scrub_all(record)
    write_json_atomic(run_dir / RECORD_FILE, record)
    write_run_html(record, run_dir / REPORT_FILE)
    (run_dir / RUNNING_FILE).unlink(missing_ok=True)
    return RunResult(run_dir=run_dir, record=record)


def _load_valid(folder: Path, components: list[Path]) -> Component:
    report = validate_component(folder, components=tuple(components))
    blocking = [f for f in report.errors if f.file in (MANIFEST_FILE, WORKFLOW_FILE)]
    if blocking:
        raise EotwinError(f"{folder} is not a valid component ({len(blocking)} errors; first: {blocking[0].line()}); "
                          f"see eotwin deltatwin validate {folder}")
    return load_component(folder)


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
        rec.started_at, t0 = now(), time.monotonic()
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
        rec.detail["output"] = file_record(Path(value.value)) if value.type == "Data" else {"value": value.public()}
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
            return Value("Data", local_data_path(str(url), component.root / MANIFEST_FILE, name))
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
    rec.detail["outputs"] = {k: file_record(Path(v.value)) if v.type == "Data" else {"value": v.public()}
                             for k, v in outputs.items()}
    return outputs


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
    env = child_env(penv, params.environment, len(cpu_set), folder)
    env.update(secret_env)
    if cmd.secret_reaches_argv(command, secret_env):
        rec.detail["warning"] = ("the command is not `bash SCRIPT ...`: the program receives its secret input(s) as "
                                 "arguments, visible in the process list while it runs")
    data_in = {iid: Path(b.value) for iid, b in bound.items() if b.type == "Data" and b.value is not None}
    before = {iid: fingerprint(path) for iid, path in data_in.items()}
    proc_result = spawn(command, work, env, log_path, ram if ctx.options.enforce_limits else None,
                        cpu_set if ctx.options.enforce_limits else None, ctx.secrets, ctx.options.node_timeout_s)
    rec.detail.update(proc_result.detail)
    if proc_result.error:
        raise _NodeFailure(proc_result.error)
    changed = [iid for iid, path in data_in.items() if fingerprint(path) != before[iid]]
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
        make_read_only(target)
        produced[oid] = Value("Data", target)
        collected[oid] = file_record(target)
    rec.detail["outputs"] = collected
    return produced


# ---------------------------------------------------------------- outputs

def value_record(value: Value, source: Path | None) -> dict[str, Any]:
    if value.type == "Data":
        return {"type": "Data", "url": str(source) if source else None, **file_record(Path(value.value))}
    return {"type": value.type, "value": value.public()}


def publish_outputs(outputs: dict[str, Value], folder: Path) -> dict[str, Any]:
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
        published[name] = {"type": "Data", **file_record(target)}
    return published


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
