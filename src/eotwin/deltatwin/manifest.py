"""Typed models of a DeltaTwin component (``manifest.json`` + ``workflow.yml``), shared by runner and builder.

The validator works on the raw documents (it must describe broken ones); these models are built only
from documents that parse, so the runner and the builder handle plain attributes. ``to_dict`` gives the
JSON / YAML shape back (aliases, no ``None``), so a builder writes exactly what the validator reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eotwin.errors import EotwinError
from eotwin.options import validation_message

MANIFEST_FILE = "manifest.json"
WORKFLOW_FILE = "workflow.yml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """The document shape: keys as written in the files, only fields that were given."""
        return self.model_dump(by_alias=True, exclude_unset=True, exclude_none=True)


class Parameter(_Model):
    """A component input / output / resource, or a model input / output."""

    type: str
    description: str | None = None
    value: Any = None
    prefix: str | None = None  # model inputs: put before the value on the command line
    glob: str | None = None  # model Data outputs: the file to collect in the working directory


class Requirement(_Model):
    name: str
    version: str | None = None

    def pin(self) -> str:
        """``name==version`` as the service's builder renders it (``name`` alone without a version)."""
        return f"{self.name}=={self.version}" if self.version else self.name


class Hardware(_Model):
    cpu: str | None = None
    ram: str | None = None


class ModelParameters(_Model):
    pythonVersion: str
    command: str
    pipRequirements: list[Requirement] = Field(default_factory=list)
    pipRequirementFiles: list[str] = Field(default_factory=list)
    aptRequirements: list[Requirement] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    hardwareRequirements: Hardware | None = None


class ModelSpec(_Model):
    path: str
    type: str = "python"
    parameters: ModelParameters
    inputs: dict[str, Parameter] = Field(default_factory=dict)
    outputs: dict[str, Parameter] = Field(default_factory=dict)


class Dependency(_Model):
    id: str
    version: str


class Copyright(_Model):
    company: str
    years: list[int] = Field(default_factory=list)


class License(_Model):
    name: str
    url: str
    description: str | None = None
    copyrights: list[Copyright] = Field(default_factory=list)


class Manifest(_Model):
    name: str
    description: str
    owner: str
    deltaVersion: str | None = "1.4"
    short_description: str | None = None
    license: License | None = None
    inputs: dict[str, Parameter] = Field(default_factory=dict)
    outputs: dict[str, Parameter] = Field(default_factory=dict)
    resources: dict[str, Parameter] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    dependencies: dict[str, Dependency] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """As the base, with ``deltaVersion`` always stated (its absence lets the schema version drift)."""
        return {"deltaVersion": self.deltaVersion or "1.4", **super().to_dict()}


class Node(_Model):
    id: str
    ref: str

    @property
    def section(self) -> str:
        return self.ref.split(".", 1)[0].strip()

    @property
    def name(self) -> str:
        return self.ref.split(".", 1)[1].strip() if "." in self.ref else ""


class Port(_Model):
    id: str
    port: str | None = None


class Edge(_Model):
    source: Port = Field(alias="from")
    target: Port = Field(alias="to")


class Workflow(_Model):
    nodes: list[Node] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


class Component(BaseModel):
    """A component folder: where it is, and its parsed manifest and workflow."""

    root: Path
    manifest: Manifest
    workflow: Workflow


def read_manifest_raw(root: Path) -> Any:
    """The decoded ``manifest.json`` of a component folder; one-line EotwinError when absent or not JSON."""
    path = Path(root) / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EotwinError(f"{path}: no manifest.json in the component folder") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EotwinError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise EotwinError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def read_workflow_raw(root: Path) -> Any:
    """The decoded ``workflow.yml``; one-line EotwinError when absent or not YAML."""
    import yaml

    path = Path(root) / WORKFLOW_FILE
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EotwinError(f"{path}: no workflow.yml in the component folder") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EotwinError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise EotwinError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None


def load_component(root: str | Path) -> Component:
    """Parse a component folder into typed models (structure only; run the validator for the semantics)."""
    root = Path(root)
    if not root.is_dir():
        raise EotwinError(f"{root}: not a component folder (expected a directory with manifest.json and workflow.yml)")
    raw_manifest = read_manifest_raw(root)
    raw_workflow = read_workflow_raw(root)
    try:
        manifest = Manifest.model_validate(raw_manifest)
    except ValidationError as exc:
        raise EotwinError(f"{root / MANIFEST_FILE}: {validation_message(exc)}") from None
    try:
        workflow = Workflow.model_validate(raw_workflow or {})
    except ValidationError as exc:
        raise EotwinError(f"{root / WORKFLOW_FILE}: {validation_message(exc)}") from None
    return Component(root=root.resolve(), manifest=manifest, workflow=workflow)


def find_component(dep_id: str, version: str | None, search: list[Path] | tuple[Path, ...]) -> Path | None:
    """Find a dependency's folder under local search paths, as the service stores them or by manifest name.

    Tried in order, per search path: ``<path>/<id>/<version>/``, ``<path>/<id>/``, ``<path>`` itself, then
    any direct sub-folder, each accepted only when its manifest's ``name`` equals ``dep_id``.
    """
    for base in search:
        base = Path(base)
        candidates = []
        if version:
            candidates.append(base / dep_id / version)
        candidates += [base / dep_id, base]
        if base.is_dir():
            candidates += sorted(p for p in base.iterdir() if p.is_dir())
        for folder in candidates:
            if _manifest_name(folder) == dep_id:
                return folder.resolve()
    return None


def _manifest_name(folder: Path) -> str | None:
    try:
        data = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("name") if isinstance(data, dict) else None


def save_component(root: str | Path, manifest: Manifest, workflow: Workflow) -> Path:
    """Write ``manifest.json`` and ``workflow.yml`` atomically (a builder's last step; models/ is the caller's)."""
    import yaml

    from eotwin.io.files import write_json_atomic, write_text_atomic

    root = Path(root)
    write_json_atomic(root / MANIFEST_FILE, manifest.to_dict())
    write_text_atomic(root / WORKFLOW_FILE, yaml.safe_dump(workflow.to_dict(), sort_keys=False))
    return root
