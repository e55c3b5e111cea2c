"""Validate a DeltaTwin component folder: the deltaVersion 1.4 schema, then what the schema misses.

Every finding names a severity, the file, the key path in that file and what goes wrong at run time,
so a typo is caught here instead of minutes into a build. The service behaviours quoted in the messages
are those of deltatwin-cli 1.8.1 (see ``eotwin.deltatwin.schema`` for where each comes from).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from eotwin.deltatwin import command as cmd
from eotwin.deltatwin.graph import find_cycle
from eotwin.deltatwin.manifest import MANIFEST_FILE, WORKFLOW_FILE, find_component
from eotwin.deltatwin.schema import (
    MODEL_KINDS,
    MODEL_PARAMETERS,
    NAME_RE,
    PRIMITIVE_TYPES,
    RUNTIME_TYPES,
    SECRET_NAME_RE,
    SUPPORTED_PYTHON_VERSIONS,
    WORKFLOW_SECTIONS,
    parse_cpu,
    parse_memory,
    schema_errors,
)

Severity = Literal["error", "warning"]
_IDENT_RE = re.compile(r"^[a-z][A-Za-z0-9_-]*$")
_PLACEHOLDER_VALUES = re.compile(r"^(?:your[_ -].*|<.*>|changeme|xxx+|todo|\.\.\.)$", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    severity: Severity
    file: str
    key: str
    code: str
    message: str

    def line(self) -> str:
        where = f"{self.file}:{self.key}" if self.key else self.file
        return f"{self.severity}: {where}: {self.message}"


@dataclass
class Report:
    root: Path
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"component": str(self.root), "ok": self.ok, "errors": len(self.errors),
                "warnings": len(self.warnings), "findings": [asdict(f) for f in self.findings]}


class _Collector:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, file: str, key: str, code: str, message: str) -> None:
        self.findings.append(Finding("error", file, key, code, message))

    def warn(self, file: str, key: str, code: str, message: str) -> None:
        self.findings.append(Finding("warning", file, key, code, message))


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _type_of(param: Any) -> str | None:
    t = _dict(param).get("type")
    return t if isinstance(t, str) else None


def validate_component(root: str | Path, *, components: list[Path] | tuple[Path, ...] = ()) -> Report:
    """All findings for one component folder; ``components`` are local folders to resolve dependencies."""
    root = Path(root)
    out = _Collector()
    report = Report(root=root)
    if not root.is_dir():
        out.error(str(root), "", "folder", "not a directory")
        report.findings = out.findings
        return report
    manifest = _load_json(root / MANIFEST_FILE, out)
    if manifest is not None:
        _check_manifest(root, manifest, out)
    workflow = _load_yaml(root / WORKFLOW_FILE, out)
    if workflow is not None and isinstance(manifest, dict):
        deps = _dependency_manifests(manifest, list(components))
        _check_workflow(manifest, workflow, deps, out)
    if isinstance(manifest, dict):
        for path in sorted(root.glob("inputs*.json")):
            data = _load_json(path, out)
            if data is not None:
                _check_inputs_file(path.name, data, manifest, out)
    report.findings = out.findings
    return report


# ---------------------------------------------------------------- loading

def _load_json(path: Path, out: _Collector) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        out.error(path.name, "", "missing-file", f"{path.name} is missing")
    except (OSError, UnicodeDecodeError) as exc:
        out.error(path.name, "", "unreadable", f"cannot read: {exc}")
    except json.JSONDecodeError as exc:
        out.error(path.name, "", "syntax", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    return None


def _load_yaml(path: Path, out: _Collector) -> Any:
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


# ---------------------------------------------------------------- manifest.json

def _check_manifest(root: Path, manifest: Any, out: _Collector) -> None:
    f = MANIFEST_FILE
    for key, message in schema_errors(manifest):
        out.error(f, key, "schema", message)
    if not isinstance(manifest, dict):
        return
    if "deltaVersion" not in manifest:
        out.warn(f, "deltaVersion", "delta-version", "missing: deltatwin-cli assumes 1.4; state it so a newer "
                                                     "schema version does not change the meaning")
    name = manifest.get("name")
    if isinstance(name, str) and not NAME_RE.match(name):
        out.error(f, "name", "name", f"'{name}' is not a valid component name: use lower-case letters, digits "
                                     "and single hyphens (for example 'eo-point-cloud')")
    for section in ("inputs", "outputs", "resources"):
        for pid, param in _dict(manifest.get(section)).items():
            _check_type(f, f"{section}.{pid}.type", param, out)
    for pid, param in _dict(manifest.get("inputs")).items():
        ptype = _type_of(param)
        if ptype == "string" and SECRET_NAME_RE.search(pid):
            out.warn(f, f"inputs.{pid}.type", "secret-as-string",
                     f"'{pid}' looks like a credential but is typed string: type it secret so it is masked in "
                     "run records and logs")
        if ptype == "secret" and "value" in _dict(param):
            out.warn(f, f"inputs.{pid}.value", "secret-default", "a secret with a default value publishes it "
                                                                 "with the component")
    for pid, param in _dict(manifest.get("outputs")).items():
        ptype = _type_of(param)
        if ptype in RUNTIME_TYPES and ptype != "Data":
            out.error(f, f"outputs.{pid}.type", "output-type", f"component outputs must be Data; the service "
                                                               f"collects only files, not '{ptype}'")
    for pid, param in _dict(manifest.get("resources")).items():
        _check_value_type(f, f"resources.{pid}.value", _type_of(param), _dict(param).get("value"), out)
    for mid, model in _dict(manifest.get("models")).items():
        if isinstance(model, dict):
            _check_model(root, f"models.{mid}", model, out)
    for did, dep in _dict(manifest.get("dependencies")).items():
        for key in ("id", "version"):
            if not isinstance(_dict(dep).get(key), str) or not _dict(dep).get(key):
                out.error(f, f"dependencies.{did}.{key}", "dependency", "missing: a dependency needs 'id' (the "
                                                                       "component name) and 'version'")


def _check_type(f: str, key: str, param: Any, out: _Collector) -> None:
    ptype = _type_of(param)
    if ptype is not None and ptype not in RUNTIME_TYPES:
        out.error(f, key, "type", f"'{ptype}' is not a type the runtime knows ({', '.join(RUNTIME_TYPES)}); the "
                                  "service would substitute an empty value")


def _check_value_type(f: str, key: str, ptype: str | None, value: Any, out: _Collector, *,
                      hide: bool = False) -> bool:
    expected = {"boolean": bool, "integer": int, "number": (int, float), "string": str, "secret": str}
    if ptype not in expected or value is None:
        return True
    ok = isinstance(value, expected[ptype]) and not (ptype in ("integer", "number") and isinstance(value, bool))
    if not ok:
        shown = "the value" if hide else f"{json.dumps(value)}"
        out.error(f, key, "value-type", f"{shown} is not of type {ptype} (a JSON {type(value).__name__})")
    return ok


def _check_model(root: Path, base: str, model: dict, out: _Collector) -> None:
    f = MANIFEST_FILE
    kind = model.get("type")
    if isinstance(kind, str) and kind not in MODEL_KINDS:
        out.error(f, f"{base}.type", "model-kind", f"'{kind}' is not a runner the builder knows "
                                                   f"({', '.join(MODEL_KINDS)})")
    path = model.get("path")
    model_dir: Path | None = None
    if isinstance(path, str):
        if Path(path).is_absolute() or ".." in Path(path).parts:
            out.error(f, f"{base}.path", "model-path", f"'{path}' must be a relative path inside the component")
        else:
            model_dir = root / path
            if not model_dir.is_dir():
                out.warn(f, f"{base}.path", "model-path", f"'{path}' does not exist in the component folder: the "
                                                          "build has nothing to copy")
                model_dir = None
    inputs = _dict(model.get("inputs"))
    outputs = _dict(model.get("outputs"))
    for iid, param in inputs.items():
        _check_type(f, f"{base}.inputs.{iid}.type", param, out)
        if not _IDENT_RE.match(iid):
            out.error(f, f"{base}.inputs.{iid}", "input-name", f"'{iid}' cannot be written as $(inputs.{iid}): "
                                                               "names must match [a-z][A-Za-z0-9_-]*")
        if _type_of(param) == "boolean" and not _dict(param).get("prefix"):
            out.warn(f, f"{base}.inputs.{iid}.prefix", "boolean-prefix", "a boolean without a prefix "
                                                                         "substitutes nothing, true or false")
    for oid, param in outputs.items():
        _check_type(f, f"{base}.outputs.{oid}.type", param, out)
        otype = _type_of(param)
        glob = _dict(param).get("glob")
        if otype == "Data" and (not isinstance(glob, str) or not glob.strip()):
            out.error(f, f"{base}.outputs.{oid}.glob", "glob", "a Data output needs a glob naming the file to "
                                                               "collect from the working directory")
        elif otype in RUNTIME_TYPES and otype != "Data":
            out.warn(f, f"{base}.outputs.{oid}.type", "output-type", f"only Data outputs are collected; a "
                                                                     f"'{otype}' output never reaches an edge")
        if isinstance(glob, str):
            for name in cmd.glob_placeholders(glob):
                if name not in inputs:
                    out.error(f, f"{base}.outputs.{oid}.glob", "glob-input", f"$(inputs.{name}) names no input "
                                                                             "of this model")
    params = model.get("parameters")
    if not isinstance(params, dict):
        return
    p = f"{base}.parameters"
    for key in params:
        if key not in MODEL_PARAMETERS:
            out.warn(f, f"{p}.{key}", "parameter-unknown", f"'{key}' is ignored by the builder (it reads "
                                                           f"{', '.join(MODEL_PARAMETERS)})")
    version = params.get("pythonVersion")
    if version is None:
        out.error(f, f"{p}.pythonVersion", "python-version", "missing: the builder needs it to pick the image")
    elif str(version) not in SUPPORTED_PYTHON_VERSIONS:
        out.error(f, f"{p}.pythonVersion", "python-version", f"'{version}' is not supported by the builder: use "
                                                             f"one of {', '.join(SUPPORTED_PYTHON_VERSIONS)}")
    command = params.get("command")
    used: set[str] = set()
    if not isinstance(command, str) or not command.strip():
        out.error(f, f"{p}.command", "command", "missing: a model needs the command that runs it")
    else:
        for seg in cmd.segments(command):
            if seg.input_name is not None:
                used.add(seg.input_name)
                if seg.input_name not in inputs:
                    out.error(f, f"{p}.command", "command-input", f"$(inputs.{seg.input_name}) names no input of "
                                                                  "this model (declare it under inputs)")
            elif seg.text.startswith("inputs.") and seg.text[len("inputs."):] in inputs:
                out.warn(f, f"{p}.command", "command-literal", f"'{seg.text}' is passed literally; write "
                                                               f"$({seg.text}) to substitute the value")
        first = command.split()[0]
        if first.endswith(".py") and "/" not in first:
            out.error(f, f"{p}.command", "command-interpreter", f"starts with '{first}': bash looks it up on PATH "
                                                                f"and fails; write 'python {first}'")
        for text, problem in cmd.segment_problems(command):
            out.error(f, f"{p}.command", "command-token", f"'{text}' {problem}" if not problem.startswith("'")
                      else problem)
    for output in outputs.values():
        glob = _dict(output).get("glob")
        if isinstance(glob, str):
            used.update(cmd.glob_placeholders(glob))
    for iid in inputs:
        if isinstance(command, str) and iid not in used:
            out.warn(f, f"{base}.inputs.{iid}", "input-unused", "declared but never used in the command: its "
                                                                "value never reaches the model")
    for i, req in enumerate(params.get("pipRequirements") or []):
        if not isinstance(req, dict) or not isinstance(req.get("name"), str) or not req.get("name"):
            out.error(f, f"{p}.pipRequirements[{i}]", "requirement", "needs a 'name'")
        elif not req.get("version"):
            out.warn(f, f"{p}.pipRequirements[{i}].version", "requirement-unpinned",
                     f"'{req['name']}' has no version: builds are not reproducible")
    for i, name in enumerate(params.get("pipRequirementFiles") or []):
        if model_dir is not None and not (model_dir / str(name)).is_file():
            out.error(f, f"{p}.pipRequirementFiles[{i}]", "requirement-file", f"'{name}' is not in the model "
                                                                              f"folder '{path}' (the build copies "
                                                                              "it from there)")
    hardware = params.get("hardwareRequirements")
    if isinstance(hardware, dict):
        for key, parse in (("cpu", parse_cpu), ("ram", parse_memory)):
            if key in hardware:
                try:
                    parse(hardware[key])
                except ValueError as exc:
                    out.error(f, f"{p}.hardwareRequirements.{key}", "hardware", str(exc))


# ---------------------------------------------------------------- workflow.yml

@dataclass
class _Ports:
    """What a node accepts and offers: port -> type (None: unknown)."""

    kind: str
    ins: dict[str, str | None] | None  # None: any port accepted (or not checkable)
    outs: dict[str, str | None] | None
    value_type: str | None = None  # inputs / resources: the type of the value they emit


def _dependency_manifests(manifest: dict, search: list[Path]) -> dict[str, dict]:
    found = {}
    if not search:
        return found
    for did, dep in _dict(manifest.get("dependencies")).items():
        dep = _dict(dep)
        folder = find_component(str(dep.get("id", "")), dep.get("version"), search) if dep.get("id") else None
        if folder is not None:
            with contextlib.suppress(OSError, ValueError):
                found[did] = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    return found


def _node_ports(section: str, name: str, manifest: dict, deps: dict[str, dict]) -> _Ports | None:
    declared = _dict(manifest.get(section))
    if name not in declared:
        return None
    item = _dict(declared[name])
    if section in ("inputs", "resources"):
        return _Ports(section, ins={}, outs=None, value_type=_type_of(item))
    if section == "outputs":
        return _Ports(section, ins=None, outs={}, value_type=_type_of(item))
    if section == "models":
        return _Ports(section, ins={k: _type_of(v) for k, v in _dict(item.get("inputs")).items()},
                      outs={k: _type_of(v) for k, v in _dict(item.get("outputs")).items()})
    dep = deps.get(name)
    if dep is None:
        return _Ports(section, ins=None, outs=None)
    return _Ports(section, ins={k: _type_of(v) for k, v in _dict(dep.get("inputs")).items()},
                  outs={k: _type_of(v) for k, v in _dict(dep.get("outputs")).items()})


def _check_workflow(manifest: dict, workflow: dict, deps: dict[str, dict], out: _Collector) -> None:
    f = WORKFLOW_FILE
    nodes = workflow.get("nodes")
    edges = workflow.get("edges")
    if not isinstance(nodes, list):
        out.error(f, "nodes", "structure", "must be a list of {id, ref}")
        nodes = []
    if edges is None:
        edges = []
    if not isinstance(edges, list):
        out.error(f, "edges", "structure", "must be a list of {from: {id, port}, to: {id, port}}")
        edges = []
    ports: dict[str, _Ports | None] = {}
    order: list[str] = []
    refs: dict[str, tuple[str, str]] = {}
    for i, node in enumerate(nodes):
        node = _dict(node)
        nid, ref = node.get("id"), node.get("ref")
        if not isinstance(nid, str) or not nid:
            out.error(f, f"nodes[{i}].id", "node", "missing: every node needs an id")
            continue
        if nid in ports:
            out.error(f, f"nodes[{i}].id", "node-duplicate", f"node id '{nid}' is declared twice")
            continue
        order.append(nid)
        if not isinstance(ref, str) or "." not in ref:
            out.error(f, f"nodes[{i}].ref", "node-ref", f"node '{nid}': ref must be <section>.<name> with section "
                                                        f"one of {', '.join(WORKFLOW_SECTIONS)}")
            ports[nid] = None
            continue
        section, name = (s.strip() for s in ref.split(".", 1))
        if section not in WORKFLOW_SECTIONS:
            out.error(f, f"nodes[{i}].ref", "node-ref", f"node '{nid}': '{section}' is not a section "
                                                        f"({', '.join(WORKFLOW_SECTIONS)})")
            ports[nid] = None
            continue
        ports[nid] = _node_ports(section, name, manifest, deps)
        refs[nid] = (section, name)
        if ports[nid] is None:
            out.error(f, f"nodes[{i}].ref", "node-ref", f"node '{nid}' refers to {section}.{name}, which "
                                                        "manifest.json does not declare")

    seen_edges: dict[tuple, int] = {}
    fed: dict[tuple[str, str], int] = {}
    links: list[tuple[str, str]] = []
    outgoing: Counter[str] = Counter()
    incoming: Counter[str] = Counter()
    for i, edge in enumerate(edges):
        edge = _dict(edge)
        src, dst = _dict(edge.get("from")), _dict(edge.get("to"))
        sid, did = src.get("id"), dst.get("id")
        sport, dport = src.get("port"), dst.get("port")
        if not isinstance(sid, str) or not isinstance(did, str):
            out.error(f, f"edges[{i}]", "edge", "needs from.id and to.id")
            continue
        label = f"{sid}{'.' + sport if sport else ''} -> {did}{'.' + dport if dport else ''}"
        key = (sid, sport, did, dport)
        if key in seen_edges:
            out.error(f, f"edges[{i}]", "edge-duplicate", f"repeats edges[{seen_edges[key]}] ({label})")
            continue
        seen_edges[key] = i
        ok = True
        for end, nid in (("from", sid), ("to", did)):
            if nid not in ports:
                out.error(f, f"edges[{i}].{end}.id", "edge-node", f"'{nid}' is not a node of the workflow ({label})")
                ok = False
        if not ok:
            continue
        links.append((sid, did))
        outgoing[sid] += 1
        incoming[did] += 1
        s, d = ports[sid], ports[did]
        if s is None or d is None:
            continue
        src_type = _check_source(f, i, sid, sport, s, refs, label, out)
        dst_type = _check_target(f, i, did, dport, d, refs, label, out)
        if d.kind in ("models", "dependencies") and isinstance(dport, str):
            slot = (did, dport)
            if slot in fed:
                out.error(f, f"edges[{i}].to.port", "edge-fed-twice", f"'{did}.{dport}' is already fed by "
                                                                      f"edges[{fed[slot]}] ({label})")
            fed.setdefault(slot, i)
        if src_type and dst_type:
            _check_flow(f, i, src_type, dst_type, label, out)

    cycle = find_cycle(order, links)
    if cycle:
        out.error(f, "edges", "cycle", "the workflow has a cycle: " + " -> ".join(cycle))
    _check_coverage(manifest, nodes, order, refs, fed, incoming, outgoing, out)


def _check_source(f: str, i: int, sid: str, sport: Any, s: _Ports, refs: dict, label: str,
                  out: _Collector) -> str | None:
    if s.kind == "outputs":
        out.error(f, f"edges[{i}].from.id", "edge-direction", f"an edge cannot start at output node '{sid}' ({label})")
        return None
    if s.kind in ("inputs", "resources"):
        return s.value_type
    if s.outs is None:
        return None
    name = refs[sid][1]
    if not isinstance(sport, str) or not sport:
        out.error(f, f"edges[{i}].from.port", "edge-port", f"missing: '{sid}' is a {s.kind[:-1] if s.kind == 'models' else 'dependency'} "
                                                          f"node, name which of its outputs ({', '.join(s.outs) or 'none'}) feeds this edge")
        return None
    if sport not in s.outs:
        hint = _closest(sport, s.outs)
        out.error(f, f"edges[{i}].from.port", "edge-port", f"'{sport}' is not an output of {refs[sid][0]}.{name} "
                                                          f"(outputs: {', '.join(s.outs) or 'none'}){hint}")
        return None
    return s.outs[sport]


def _check_target(f: str, i: int, did: str, dport: Any, d: _Ports, refs: dict, label: str,
                  out: _Collector) -> str | None:
    if d.kind in ("inputs", "resources"):
        out.error(f, f"edges[{i}].to.id", "edge-direction", f"an edge cannot end at {d.kind[:-1]} node '{did}' ({label})")
        return None
    if d.kind == "outputs":
        return "Data"
    if d.ins is None:
        return None
    name = refs[did][1]
    if not isinstance(dport, str) or not dport:
        out.error(f, f"edges[{i}].to.port", "edge-port", f"missing: name which input of {refs[did][0]}.{name} "
                                                        f"({', '.join(d.ins) or 'none'}) this edge feeds")
        return None
    if dport not in d.ins:
        hint = _closest(dport, d.ins)
        out.error(f, f"edges[{i}].to.port", "edge-port", f"'{dport}' is not an input of {refs[did][0]}.{name} "
                                                        f"(inputs: {', '.join(d.ins) or 'none'}){hint}")
        return None
    return d.ins[dport]


def _check_flow(f: str, i: int, src: str, dst: str, label: str, out: _Collector) -> None:
    if src not in RUNTIME_TYPES or dst not in RUNTIME_TYPES or src == dst:
        return
    if {src, dst} <= {"integer", "number"} or {src, dst} <= {"Data", "stdout"}:
        return
    if src == "secret":
        why = "the service reads a string's .value, which a secret does not have, and the run fails; type the port secret"
    elif dst == "secret":
        why = "the service decrypts a secret's value, which a plain value does not have, and the run fails"
    elif "Data" in (src, dst):
        why = "a file path and a plain value are not interchangeable"
    else:
        why = "the service renders it with the port's type and fails or substitutes the wrong text"
    out.error(f, f"edges[{i}]", "edge-type", f"a {src} value feeds a port typed {dst} ({label}): {why}")


def _check_coverage(manifest: dict, nodes: list, order: list[str], refs: dict, fed: dict,
                    incoming: Counter, outgoing: Counter, out: _Collector) -> None:
    f = WORKFLOW_FILE
    index = {}
    for i, node in enumerate(nodes):
        nid = _dict(node).get("id")
        if isinstance(nid, str):
            index.setdefault(nid, i)
    referenced = {section: set() for section in WORKFLOW_SECTIONS}
    for nid in order:
        if nid not in refs:
            continue
        section, name = refs[nid]
        referenced[section].add(name)
        key = f"nodes[{index[nid]}]"
        if section == "outputs" and incoming[nid] == 0:
            out.error(f, key, "output-unfed", f"output node '{nid}' has no incoming edge: {section}.{name} is never "
                                              "produced")
        if section in ("inputs", "resources") and outgoing[nid] == 0:
            out.warn(f, key, "node-unused", f"{section[:-1]} node '{nid}' feeds nothing")
        if section == "models":
            model = _dict(_dict(manifest.get("models")).get(name))
            for iid, param in _dict(model.get("inputs")).items():
                if (nid, iid) not in fed and _dict(param).get("value") is None:
                    out.warn(f, key, "input-unfed", f"input '{iid}' of model node '{nid}' has no edge and no default "
                                                    "value: the service substitutes nothing")
    for section in ("inputs", "outputs", "models"):
        for name in _dict(manifest.get(section)):
            if name not in referenced[section]:
                out.warn(f, "nodes", "declared-unused", f"{section}.{name} is declared in manifest.json but no node "
                                                        "refers to it")


def _closest(word: str, options: Any) -> str:
    import difflib

    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.75)
    return f"; did you mean '{match[0]}'?" if match else ""


# ---------------------------------------------------------------- inputs_file.json

def _check_inputs_file(f: str, data: Any, manifest: dict, out: _Collector) -> None:
    if not isinstance(data, dict):
        out.error(f, "", "structure", "must be a mapping {input name: {type, value}}")
        return
    declared = _dict(manifest.get("inputs"))
    for name, entry in data.items():
        if name not in declared:
            out.error(f, name, "input-unknown", f"'{name}' is not an input of the component (inputs: "
                                                f"{', '.join(declared) or 'none'}){_closest(name, declared)}")
            continue
        entry = _dict(entry)
        ftype, mtype = entry.get("type"), _type_of(declared[name])
        secret = mtype == "secret" or ftype == "secret" or bool(SECRET_NAME_RE.search(name))
        if not isinstance(ftype, str):
            out.error(f, f"{name}.type", "input-type", "missing: every input needs a type")
            continue
        if ftype not in RUNTIME_TYPES:
            out.error(f, f"{name}.type", "type", f"'{ftype}' is not a type the runtime knows "
                                                 f"({', '.join(RUNTIME_TYPES)})")
            continue
        if mtype and ftype != mtype and not {ftype, mtype} <= {"integer", "number"}:
            out.error(f, f"{name}.type", "input-type", f"'{ftype}' but manifest.json types '{name}' as {mtype}: the "
                                                       "service rejects the run")
        if ftype == "Data":
            if not entry.get("url") and not entry.get("path"):
                out.error(f, name, "data-url", "a Data input is given by 'url' (an http(s) URL or a file path); "
                                               "'value' is ignored for Data")
            continue
        value = entry.get("secret_value", entry.get("value")) if ftype == "secret" else entry.get("value")
        typed = ftype in PRIMITIVE_TYPES or ftype == "secret"
        if typed and not _check_value_type(f, f"{name}.value", ftype, value, out, hide=secret):
            continue
        if isinstance(value, str):
            if secret and (not value or _PLACEHOLDER_VALUES.match(value)):
                out.warn(f, f"{name}.value", "placeholder", "a placeholder, not a usable credential: fill it in "
                                                            "before running")
            elif "bbox" in name.lower():
                _check_bbox(f, f"{name}.value", value, out)
            n = len(value.split())
            if not secret and n > 1:
                out.warn(f, f"{name}.value", "value-spaces", f"contains spaces: the service passes values unquoted, "
                                                             f"so {json.dumps(value)} becomes {n} arguments")
    for name, param in declared.items():
        if name not in data and _dict(param).get("value") is None:
            out.error(f, "", "input-missing", f"'{name}' has no value here and no default in manifest.json: the "
                                              "service rejects the run")


def _check_bbox(f: str, key: str, value: str, out: _Collector) -> None:
    parts = [p for p in re.split(r"[\s,]+", value.strip()) if p]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 4:
        out.error(f, key, "bbox", f"{json.dumps(value)} is not a bounding box: expected four numbers "
                                  "min_lon,min_lat,max_lon,max_lat")
        return
    west, south, east, north = numbers
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90):
        out.error(f, key, "bbox", f"{json.dumps(value)} is outside lon [-180, 180] / lat [-90, 90]")
    elif south >= north or west >= east:
        which = "min_lat >= max_lat" if south >= north else "min_lon >= max_lon"
        out.error(f, key, "bbox", f"{json.dumps(value)} is inverted or empty ({which}); expected "
                                  "min_lon,min_lat,max_lon,max_lat")
