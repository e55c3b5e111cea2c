"""Writing a component folder: manifest, workflow, model scripts, pinned requirements, the wheel and a README.

``eotwin deltatwin build`` writes ready-to-publish DeltaTwin components for the eotwin pipelines.

A component is described once, as a :class:`Blueprint` (inputs, outputs, models, dependencies, edges);
the builder turns it into ``manifest.json`` (deltaVersion 1.4), ``workflow.yml``, ``models/<id>/`` and an
``inputs_file.json`` example plus a README. Each model folder ships eotwin itself, reproducibly:

- ``requirements.txt`` (the model's ``pipRequirementFiles``): eotwin's runtime dependencies for the
  extras the model needs, each pinned to the version installed here (the environment the tests ran in);
- the eotwin wheel, built from this source tree with a fixed ``SOURCE_DATE_EPOCH`` (same source, same
  bytes), unpacked by ``run.sh`` into the working directory (``pip install --no-deps --no-index
  --target``) before eotwin runs. It does not go through ``pipRequirementFiles`` because deltatwin-cli
  1.8.1's Dockerfile copies only the requirement files before ``pip install -r /root/<file>`` (from
  ``/``): a wheel next to them is not in the image yet, and a relative wheel path resolves against ``/``.

``hardwareRequirements.ram`` comes from measured peaks (``sizing``); the components themselves are the
blueprints of ``blueprints``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eotwin.deltatwin.blueprints import (
    BLUEPRINTS,
    Blueprint,
    ModelBlueprint,
    blueprint,
    command_options,
    missing_commands,
)
from eotwin.deltatwin.manifest import (
    Dependency,
    Edge,
    Hardware,
    License,
    Manifest,
    ModelParameters,
    ModelSpec,
    Node,
    Parameter,
    Port,
    Requirement,
    Workflow,
    save_component,
)
from eotwin.deltatwin.packaging import (
    build_wheel,
    check_wheel,
    eotwin_version,
    pinned_requirements,
    sha256_of,
)
from eotwin.deltatwin.sizing import _model_ram, load_sizing
from eotwin.errors import EotwinError
from eotwin.progress import ProgressReporter, ensure_progress

PYTHON_VERSION = "3.11"  # the builder's image; our pins are resolved on this interpreter
OWNER = "eotwin"
INPUTS_EXAMPLE = "inputs_file.json"
LICENSE = {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0.txt",
           "description": "eotwin is licensed under the Apache License 2.0.",
           "copyrights": [{"years": [2025], "company": "eotwin contributors"}]}


_PRELUDE = """\
#!/usr/bin/env bash
# Model {model} of the DeltaTwin component {name}; written by `eotwin deltatwin build` (eotwin {version}).
# Arguments, in the order of the manifest's command: {args}.
set -euo pipefail
# eotwin itself: the wheel shipped next to this script, unpacked into the working directory; its
# dependencies are pinned in requirements.txt and installed when the image is built.
python -m pip install --quiet --no-deps --no-index --no-cache-dir --disable-pip-version-check \\
    --target .eotwin {wheel}
export PYTHONPATH="$PWD/.eotwin${{PYTHONPATH:+:$PYTHONPATH}}"
python -c 'import eotwin; print("eotwin", eotwin.__version__, "from", eotwin.__file__)'
"""


def _require_args(names: list[str]) -> str:
    """bash lines that stop with a clear message when an argument is missing (the service drops empty ones)."""
    lines = [f'[ "$#" -eq {len(names)} ] || {{ echo "expected {len(names)} arguments ({", ".join(names)}), '
             f'got $#: an empty input value is dropped from the command" >&2; exit 2; }}']
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- writing a component

@dataclass
class BuiltComponent:
    name: str
    path: Path
    sizing: dict[str, str]  # model -> where its ram figure comes from

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "sizing": self.sizing}


def documents(bp: Blueprint, sizing: dict[str, Any], wheel_name: str) -> tuple[Manifest, Workflow]:
    """The manifest and workflow of a blueprint (pure: no files)."""
    version = eotwin_version()
    models: dict[str, ModelSpec] = {}
    for m in bp.models:
        ram, _ = _model_ram(sizing, bp, m)
        args = " ".join(f"$(inputs.{a})" for a in m.args)
        models[m.id] = ModelSpec(
            path=f"models/{m.id}",
            type="python",
            parameters=ModelParameters(
                pythonVersion=PYTHON_VERSION,
                pipRequirements=[],
                pipRequirementFiles=["requirements.txt"],
                aptRequirements=[Requirement(name=k, version=v) for k, v in m.apt.items()],
                environment=dict(m.environment),
                hardwareRequirements=Hardware(cpu=m.cpu, ram=ram),
                command=f"bash run.sh {args}",
            ),
            inputs={a: Parameter(type=t) for a, t in m.args.items()},
            outputs={o: Parameter(type="Data", glob=g) for o, g in m.outputs.items()},
        )
    manifest = Manifest(
        deltaVersion="1.4",
        name=bp.name,
        short_description=bp.summary,
        description=f"{bp.description} Built by eotwin {version} (wheel {wheel_name}).",
        owner=OWNER,
        license=License.model_validate(LICENSE),
        inputs={k: Parameter.model_validate(v) for k, v in bp.inputs.items()},
        outputs={k: Parameter(type="Data", description=v) for k, v in bp.outputs.items()},
        models=models,
        dependencies={k: Dependency(id=v, version=version) for k, v in bp.dependencies.items()},
    )
    nodes = ([Node(id=k, ref=f"inputs.{k}") for k in bp.inputs]
             + [Node(id=m.id, ref=f"models.{m.id}") for m in bp.models]
             + [Node(id=k, ref=f"dependencies.{k}") for k in bp.dependencies]
             + [Node(id=k, ref=f"outputs.{k}") for k in bp.outputs])
    ids = [n.id for n in nodes]
    if len(ids) != len(set(ids)):
        raise EotwinError(f"blueprint {bp.name}: node ids collide: {sorted(i for i in ids if ids.count(i) > 1)}")
    edges = [Edge(source=Port(id=a, port=ap) if ap else Port(id=a), target=Port(id=b, port=bp_) if bp_ else Port(id=b))
             for a, ap, b, bp_ in bp.edges]
    manifest = Manifest.model_validate(manifest.to_dict())  # unset fields stay unset in the written file
    return manifest, Workflow(nodes=nodes, edges=edges)


def _readme(bp: Blueprint, manifest: Manifest, sizing_notes: dict[str, str], wheel: Path | None,
            wheel_sha: str | None) -> str:
    lines = [f"# {bp.name}", "", bp.summary, "", bp.description, "",
             f"Generated by `eotwin deltatwin build` (eotwin {eotwin_version()}); regenerate rather than edit.", "",
             "## Inputs", "", "| name | type | default | description |", "|---|---|---|---|"]
    for k, p in manifest.inputs.items():
        default = "" if p.value is None else f"`{json.dumps(p.value)}`"
        lines.append(f"| `{k}` | {p.type} | {default} | {p.description or ''} |")
    lines += ["", "## Outputs", "", "| name | type | description |", "|---|---|---|"]
    lines += [f"| `{k}` | {p.type} | {p.description or ''} |" for k, p in manifest.outputs.items()]
    if manifest.models:
        lines += ["", "## Models", ""]
        for mid, spec in manifest.models.items():
            hw = spec.parameters.hardwareRequirements
            lines += [f"- `{mid}` (`{spec.path}/`): `{spec.parameters.command}`; Python {spec.parameters.pythonVersion}; "
                      f"cpu {hw.cpu if hw else '-'}, ram {hw.ram if hw else '-'} ({sizing_notes.get(mid, '')})."]
        lines += ["", "Each model folder holds `run.sh` (the entry), `requirements.txt` (eotwin's runtime "
                  "dependencies, pinned) and the eotwin wheel, which `run.sh` unpacks into the working directory "
                  "before running `python -m eotwin`."]
        if wheel is not None:
            lines += [f"Wheel: `{wheel.name}`, sha256 `{wheel_sha}`."]
    if manifest.dependencies:
        lines += ["", "## Dependencies", ""]
        lines += [f"- `{k}`: component `{d.id}` version {d.version}" for k, d in manifest.dependencies.items()]
    secrets = [k for k, p in manifest.inputs.items() if p.type == "secret"]
    lines += ["", "## Run", "", "Offline, without Docker (eotwin's runner, same semantics as the service):", "",
              "```bash"]
    if bp.usage:
        lines.append(bp.usage)
    comp = " --components .." if manifest.dependencies else ""
    lines += [f"eotwin deltatwin validate {bp.name}{' --components ..' if manifest.dependencies else ''}",
              f"eotwin deltatwin run {bp.name} -i {bp.name}/{INPUTS_EXAMPLE} -o run-{bp.name}{comp}", "```", "",
              "With the DeltaTwin service: `deltatwin component publish` from this folder (after publishing "
              "the dependencies), then `deltatwin run start` with `inputs_file.json`."]
    if secrets:
        lines += ["", f"Secrets ({', '.join(f'`{s}`' for s in secrets)}) are typed `secret`: give them in "
                  "`inputs_file.json` as `secret_value`; runs mask them in logs and records. The example file "
                  "leaves them empty on purpose."]
    return "\n".join(lines) + "\n"


def _run_script(bp: Blueprint, model: ModelBlueprint, wheel_name: str) -> str:
    prelude = _PRELUDE.format(model=model.id, name=bp.name, version=eotwin_version(), wheel=wheel_name,
                              args=", ".join(model.args))
    return prelude + _require_args(list(model.args)) + model.body


def write_component(bp: Blueprint, target: Path, *, wheel: Path, sizing: dict[str, Any]) -> BuiltComponent:
    """Write one component folder, atomically: built beside ``target`` then renamed over it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    manifest, workflow = documents(bp, sizing, wheel.name)
    notes = {m.id: _model_ram(sizing, bp, m)[1] for m in bp.models}
    wheel_sha = sha256_of(wheel)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for m in bp.models:
            folder = tmp / "models" / m.id
            folder.mkdir(parents=True)
            shutil.copy2(wheel, folder / wheel.name)
            pins = pinned_requirements(m.extras)
            (folder / "requirements.txt").write_text(
                f"# eotwin {eotwin_version()} runtime dependencies for extras [{', '.join(m.extras)}], pinned as "
                f"tested (Python {PYTHON_VERSION}).\n# eotwin itself: {wheel.name} (sha256 {wheel_sha}), "
                "unpacked by run.sh.\n" + "\n".join(pins) + "\n", encoding="utf-8")
            script = folder / "run.sh"
            script.write_text(_run_script(bp, m, wheel.name), encoding="utf-8")
            script.chmod(0o755)
        save_component(tmp, manifest, workflow)
        (tmp / INPUTS_EXAMPLE).write_text(json.dumps(bp.example, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_readme(bp, manifest, notes, wheel if bp.models else None,
                                               wheel_sha if bp.models else None), encoding="utf-8")
        tmp.chmod(0o755)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuiltComponent(bp.name, target.resolve(), notes)


@dataclass
class BuildOptions:
    """Options of ``eotwin deltatwin build`` (shared by the CLI and library callers)."""

    names: list[str]
    output: Path
    wheel: Path | None = None  # a built eotwin wheel to ship instead of building one
    sizing: Path | None = None  # measured peaks (default: the file shipped with eotwin)


def resolve_names(names: list[str]) -> list[Blueprint]:
    """The blueprints asked for (all buildable ones when none), plus the dependencies of composites."""
    commands = command_options()
    if names:
        chosen = [blueprint(n) for n in names]
        for bp in chosen:
            lacking = missing_commands(bp, commands)
            if lacking:
                raise EotwinError(f"{bp.name} cannot be built with this eotwin: it needs {'; '.join(lacking)}")
    else:
        chosen = [bp for bp in (make() for make in BLUEPRINTS.values()) if not missing_commands(bp, commands)]
    out: dict[str, Blueprint] = {}

    def add(bp: Blueprint) -> None:
        for dep in bp.dependencies.values():
            add(blueprint(dep))
        out.setdefault(bp.name, bp)

    for bp in chosen:
        add(bp)
    return list(out.values())


def build_components(options: BuildOptions, progress: ProgressReporter | None = None) -> list[BuiltComponent]:
    """Write the components into ``options.output`` and check each with the validator."""
    from eotwin.deltatwin.validate import validate_component

    progress = ensure_progress(progress)
    blueprints = resolve_names(options.names)
    sizing = load_sizing(options.sizing)
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)
    built = []
    with tempfile.TemporaryDirectory(prefix="eotwin-build-") as tmp:
        if options.wheel is not None:
            if not Path(options.wheel).is_file() or not Path(options.wheel).name.startswith("eotwin-"):
                raise EotwinError(f"{options.wheel}: not an eotwin wheel file")
            wheel = Path(options.wheel)
            check_wheel(wheel)
        else:
            wheel = build_wheel(Path(tmp))
        with progress.task("building DeltaTwin components", total=len(blueprints)) as task:
            for bp in blueprints:
                built.append(write_component(bp, output / bp.name, wheel=wheel, sizing=sizing))
                task.advance()
    for b in built:
        report = validate_component(b.path, components=(output,))
        if not report.ok:
            raise EotwinError(f"generated component {b.name} does not validate: {report.errors[0].line()}")
    return built
