"""Checks of ``manifest.json`` beyond its schema: names, types, defaults, each model's folder, command and hardware."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from eotwin.deltatwin import command as cmd
from eotwin.deltatwin.findings import Collector, as_dict, type_of
from eotwin.deltatwin.manifest import MANIFEST_FILE
from eotwin.deltatwin.schema import (
    MODEL_KINDS,
    MODEL_PARAMETERS,
    NAME_RE,
    RUNTIME_TYPES,
    SECRET_NAME_RE,
    SUPPORTED_PYTHON_VERSIONS,
    parse_cpu,
    parse_memory,
    schema_errors,
)

IDENT_RE = re.compile(r"^[a-z][A-Za-z0-9_-]*$")


def check_manifest(root: Path, manifest: Any, out: Collector) -> None:
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
        for pid, param in as_dict(manifest.get(section)).items():
            _check_type(f, f"{section}.{pid}.type", param, out)
    for pid, param in as_dict(manifest.get("inputs")).items():
        ptype = type_of(param)
        if ptype == "string" and SECRET_NAME_RE.search(pid):
            out.warn(f, f"inputs.{pid}.type", "secret-as-string",
                     f"'{pid}' looks like a credential but is typed string: type it secret so it is masked in "
                     "run records and logs")
        if ptype == "secret" and "value" in as_dict(param):
            out.warn(f, f"inputs.{pid}.value", "secret-default", "a secret with a default value publishes it "
                                                                 "with the component")
    for pid, param in as_dict(manifest.get("outputs")).items():
        ptype = type_of(param)
        if ptype in RUNTIME_TYPES and ptype != "Data":
            out.error(f, f"outputs.{pid}.type", "output-type", f"component outputs must be Data; the service "
                                                               f"collects only files, not '{ptype}'")
    for pid, param in as_dict(manifest.get("resources")).items():
        check_value_type(f, f"resources.{pid}.value", type_of(param), as_dict(param).get("value"), out)
    for mid, model in as_dict(manifest.get("models")).items():
        if isinstance(model, dict):
            _check_model(root, f"models.{mid}", model, out)
    for did, dep in as_dict(manifest.get("dependencies")).items():
        for key in ("id", "version"):
            if not isinstance(as_dict(dep).get(key), str) or not as_dict(dep).get(key):
                out.error(f, f"dependencies.{did}.{key}", "dependency", "missing: a dependency needs 'id' (the "
                                                                       "component name) and 'version'")


def _check_type(f: str, key: str, param: Any, out: Collector) -> None:
    ptype = type_of(param)
    if ptype is not None and ptype not in RUNTIME_TYPES:
        out.error(f, key, "type", f"'{ptype}' is not a type the runtime knows ({', '.join(RUNTIME_TYPES)}); the "
                                  "service would substitute an empty value")


def check_value_type(f: str, key: str, ptype: str | None, value: Any, out: Collector, *,
                      hide: bool = False) -> bool:
    expected = {"boolean": bool, "integer": int, "number": (int, float), "string": str, "secret": str}
    if ptype not in expected or value is None:
        return True
    ok = isinstance(value, expected[ptype]) and not (ptype in ("integer", "number") and isinstance(value, bool))
    if not ok:
        shown = "the value" if hide else f"{json.dumps(value)}"
        out.error(f, key, "value-type", f"{shown} is not of type {ptype} (a JSON {type(value).__name__})")
    return ok


def _check_model(root: Path, base: str, model: dict, out: Collector) -> None:
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
    inputs = as_dict(model.get("inputs"))
    outputs = as_dict(model.get("outputs"))
    for iid, param in inputs.items():
        _check_type(f, f"{base}.inputs.{iid}.type", param, out)
        if not IDENT_RE.match(iid):
            out.error(f, f"{base}.inputs.{iid}", "input-name", f"'{iid}' cannot be written as $(inputs.{iid}): "
                                                               "names must match [a-z][A-Za-z0-9_-]*")
        if type_of(param) == "boolean" and not as_dict(param).get("prefix"):
            out.warn(f, f"{base}.inputs.{iid}.prefix", "boolean-prefix", "a boolean without a prefix "
                                                                         "substitutes nothing, true or false")
    for oid, param in outputs.items():
        _check_type(f, f"{base}.outputs.{oid}.type", param, out)
        otype = type_of(param)
        glob = as_dict(param).get("glob")
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
        glob = as_dict(output).get("glob")
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
