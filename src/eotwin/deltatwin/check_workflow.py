"""Checks of ``workflow.yml``: node references, edge ports (dependencies' included), data flow, cycles, coverage."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eotwin.deltatwin.findings import Collector, as_dict, closest, type_of
from eotwin.deltatwin.graph import find_cycle
from eotwin.deltatwin.manifest import MANIFEST_FILE, WORKFLOW_FILE, find_component
from eotwin.deltatwin.schema import RUNTIME_TYPES, WORKFLOW_SECTIONS


@dataclass
class _Ports:
    """What a node accepts and offers: port -> type (None: unknown)."""

    kind: str
    ins: dict[str, str | None] | None  # None: any port accepted (or not checkable)
    outs: dict[str, str | None] | None
    value_type: str | None = None  # inputs / resources: the type of the value they emit


def dependency_manifests(manifest: dict, search: list[Path]) -> dict[str, dict]:
    found = {}
    if not search:
        return found
    for did, dep in as_dict(manifest.get("dependencies")).items():
        dep = as_dict(dep)
        folder = find_component(str(dep.get("id", "")), dep.get("version"), search) if dep.get("id") else None
        if folder is not None:
            with contextlib.suppress(OSError, ValueError):
                found[did] = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    return found


def _node_ports(section: str, name: str, manifest: dict, deps: dict[str, dict]) -> _Ports | None:
    declared = as_dict(manifest.get(section))
    if name not in declared:
        return None
    item = as_dict(declared[name])
    if section in ("inputs", "resources"):
        return _Ports(section, ins={}, outs=None, value_type=type_of(item))
    if section == "outputs":
        return _Ports(section, ins=None, outs={}, value_type=type_of(item))
    if section == "models":
        return _Ports(section, ins={k: type_of(v) for k, v in as_dict(item.get("inputs")).items()},
                      outs={k: type_of(v) for k, v in as_dict(item.get("outputs")).items()})
    dep = deps.get(name)
    if dep is None:
        return _Ports(section, ins=None, outs=None)
    return _Ports(section, ins={k: type_of(v) for k, v in as_dict(dep.get("inputs")).items()},
                  outs={k: type_of(v) for k, v in as_dict(dep.get("outputs")).items()})


def check_workflow(manifest: dict, workflow: dict, deps: dict[str, dict], out: Collector) -> None:
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
        node = as_dict(node)
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
        edge = as_dict(edge)
        src, dst = as_dict(edge.get("from")), as_dict(edge.get("to"))
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
                  out: Collector) -> str | None:
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
        hint = closest(sport, s.outs)
        out.error(f, f"edges[{i}].from.port", "edge-port", f"'{sport}' is not an output of {refs[sid][0]}.{name} "
                                                          f"(outputs: {', '.join(s.outs) or 'none'}){hint}")
        return None
    return s.outs[sport]


def _check_target(f: str, i: int, did: str, dport: Any, d: _Ports, refs: dict, label: str,
                  out: Collector) -> str | None:
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
        hint = closest(dport, d.ins)
        out.error(f, f"edges[{i}].to.port", "edge-port", f"'{dport}' is not an input of {refs[did][0]}.{name} "
                                                        f"(inputs: {', '.join(d.ins) or 'none'}){hint}")
        return None
    return d.ins[dport]


def _check_flow(f: str, i: int, src: str, dst: str, label: str, out: Collector) -> None:
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
                    incoming: Counter, outgoing: Counter, out: Collector) -> None:
    f = WORKFLOW_FILE
    index = {}
    for i, node in enumerate(nodes):
        nid = as_dict(node).get("id")
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
            model = as_dict(as_dict(manifest.get("models")).get(name))
            for iid, param in as_dict(model.get("inputs")).items():
                if (nid, iid) not in fed and as_dict(param).get("value") is None:
                    out.warn(f, key, "input-unfed", f"input '{iid}' of model node '{nid}' has no edge and no default "
                                                    "value: the service substitutes nothing")
    for section in ("inputs", "outputs", "models"):
        for name in as_dict(manifest.get(section)):
            if name not in referenced[section]:
                out.warn(f, "nodes", "declared-unused", f"{section}.{name} is declared in manifest.json but no node "
                                                        "refers to it")
