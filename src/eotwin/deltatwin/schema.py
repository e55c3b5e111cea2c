"""What the DeltaTwin runtime accepts, as facts in one place, and the deltaVersion 1.4 JSON schema.

Facts come from reading deltatwin-cli 1.8.1 and delta-core 1.2.7 (PyPI):
- runtime types: ``delta/run/job/builder/__init__.py`` (``InputModelPlaceholder._factory``), where an unknown
  type silently substitutes an empty string;
- Python versions: ``delta/run/job/builder/python_builder.py`` (``PYTHON_IMAGE_HASH_MAPPING``), where any
  other ``pythonVersion`` (``3.12.2`` included) raises "Python version ... is not supported" at build time;
- model parameters read by the builder: ``PythonRunner.generate_dockerfile`` (``pythonVersion``,
  ``pipRequirements``, ``pipRequirementFiles``, ``aptRequirements``, ``environment``) and ``build_command``
  (``command``); ``hardwareRequirements`` is read by the service (Kubernetes quantities, default 2 GB / 500m);
- placeholders: ``PythonRunner.build_command`` splits the command on single spaces and replaces a segment
  that *starts* with ``$(inputs.x)`` by the value, so only whole segments work;
- runner kinds: ``delta/drive/delta_drive.py`` (``get_runner_factory``: ``python`` only).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_VERSION = "1.4"
RUNTIME_TYPES = ("boolean", "integer", "number", "string", "secret", "Data", "stdout")
PRIMITIVE_TYPES = ("boolean", "integer", "number", "string")
SUPPORTED_PYTHON_VERSIONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
MODEL_KINDS = ("python",)
MODEL_PARAMETERS = (
    "pythonVersion",
    "pipRequirements",
    "pipRequirementFiles",
    "aptRequirements",
    "environment",
    "hardwareRequirements",
    "command",
)
WORKFLOW_SECTIONS = ("inputs", "outputs", "models", "resources", "dependencies")
DEFAULT_RAM = "2Gi"  # the service's default container limits (FACTS.md)
DEFAULT_CPU = "500m"

NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")  # component names: lower case, digits, hyphens
PLACEHOLDER_RE = re.compile(r"\$\(([a-z][A-Za-z0-9_-]*)((?:\.[a-z][A-Za-z0-9_-]*)*)\)")  # as the service matches
SECRET_NAME_RE = re.compile(
    r"(?:^|[_-])(?:key|secret|token|password|passwd|pwd|pat|apikey|credentials?)(?:$|[_-])", re.IGNORECASE
)


@cache
def manifest_schema() -> dict[str, Any]:
    """The deltaVersion 1.4 manifest schema shipped with eotwin (see the file's ``$comment``)."""
    text = resources.files("eotwin.deltatwin").joinpath("schemas", "manifest-1.4.schema.json").read_text("utf-8")
    return json.loads(text)


def schema_errors(manifest: Any) -> list[tuple[str, str]]:
    """Validate a decoded manifest; return ``(key path, message)`` per schema violation, in document order."""
    import jsonschema

    schema = manifest_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path])
    return [(key_path(error.absolute_path), error.message) for error in errors]


def key_path(parts: Any) -> str:
    """``["models", "m", "inputs"]`` -> ``models.m.inputs``; list indices as ``[i]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_QUANTITY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_FACTORS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_memory(quantity: str | int | float) -> int:
    """Kubernetes memory quantity (``3Gi``, ``512Mi``, ``2G``, ``1000000``) -> bytes; ValueError if malformed."""
    if isinstance(quantity, bool):
        raise ValueError(f"not a memory quantity: {quantity!r}")
    if isinstance(quantity, int | float):
        return int(quantity)
    match = _QUANTITY_RE.match(str(quantity).strip())
    if not match or match.group(2) == "m":
        raise ValueError(f"not a memory quantity: {quantity!r} (use Ki, Mi, Gi or k, M, G)")
    return int(float(match.group(1)) * _FACTORS[match.group(2)])


def parse_cpu(quantity: str | int | float) -> float:
    """Kubernetes CPU quantity (``500m``, ``2``, ``1.5``) -> cores; ValueError if malformed."""
    if isinstance(quantity, bool):
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    if isinstance(quantity, int | float):
        return float(quantity)
    match = _QUANTITY_RE.match(str(quantity).strip())
    if not match or match.group(2) not in (None, "m"):
        raise ValueError(f"not a CPU quantity: {quantity!r} (use 500m or 2)")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "m" else value
