"""The Python environment a model runs in: this interpreter when it already satisfies the model's
requirements, otherwise a virtual environment built once from the manifest and cached by its hash.

The service builds an image per model with ``pip install name==version`` (pins from ``pipRequirements``)
and ``pip install -r <file>`` (files from ``pipRequirementFiles``, relative to the model folder). Offline,
pip honours its usual settings (``PIP_NO_INDEX``, ``PIP_FIND_LINKS``, ``pip.conf``), so a wheelhouse works.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from eotwin.deltatwin.manifest import ModelParameters
from eotwin.errors import EotwinError

ENV_CACHE_VAR = "EOTWIN_DELTATWIN_ENVS"
_COMPLETE = ".eotwin-complete"


def default_cache_dir() -> Path:
    """``$EOTWIN_DELTATWIN_ENVS`` or ``~/.cache/eotwin/deltatwin-envs``."""
    override = os.environ.get(ENV_CACHE_VAR)
    return Path(override) if override else Path.home() / ".cache" / "eotwin" / "deltatwin-envs"


@dataclass(frozen=True)
class PythonEnv:
    python: Path  # the interpreter ``python`` resolves to inside the model's command
    kind: str  # "current" or "venv"
    key: str | None = None  # the cache key of a built environment
    note: str | None = None  # for the run record (for example a Python version mismatch)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "python": str(self.python), "key": self.key, "note": self.note}


def unsatisfied(params: ModelParameters, model_dir: Path) -> list[str]:
    """Requirements this interpreter does not meet (empty: the current environment will do)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import InvalidVersion, Version

    def installed(name: str) -> str | None:
        try:
            return metadata.version(canonicalize_name(name))
        except metadata.PackageNotFoundError:
            return None

    def same(a: str, b: str) -> bool:
        try:
            return Version(a) == Version(b)
        except InvalidVersion:
            return a == b

    missing = []
    for req in params.pipRequirements:
        have = installed(req.name)
        if have is None or (req.version and not same(have, req.version)):
            missing.append(f"{req.pin()} (installed: {have or 'none'})")
    for rel in params.pipRequirementFiles:
        path = model_dir / rel
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            missing.append(f"-r {rel} (unreadable)")
            continue
        for raw in lines:
            line = raw.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.endswith(".whl"):
                try:
                    name, version, _, _ = parse_wheel_filename(Path(line).name)
                except ValueError:
                    missing.append(line)
                    continue
                have = installed(str(name))
                if have is None or not same(have, str(version)):
                    missing.append(f"{name}=={version} (installed: {have or 'none'})")
                continue
            try:
                req = Requirement(line)
            except InvalidRequirement:
                missing.append(line)  # options, URLs, editable installs: only a fresh environment is sure
                continue
            if req.marker is not None and not req.marker.evaluate():
                continue
            have = installed(req.name)
            if have is None or not req.specifier.contains(have, prereleases=True):
                missing.append(f"{line} (installed: {have or 'none'})")
    return missing


def env_key(params: ModelParameters, model_dir: Path, python_version: str) -> str:
    """A hash of everything pip would be asked for: Python minor version, pins, requirement file contents."""
    files = {}
    for rel in params.pipRequirementFiles:
        with contextlib.suppress(OSError):
            files[rel] = hashlib.sha256((model_dir / rel).read_bytes()).hexdigest()
    payload = {"python": python_version, "pip": sorted(r.pin() for r in params.pipRequirements), "files": files}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def resolve_env(params: ModelParameters, model_dir: Path, *, cache_dir: Path | None = None,
                log_path: Path | None = None, force_venv: bool = False) -> PythonEnv:
    """The environment for one model; builds (once, under a lock) a cached venv when this one falls short."""
    current = f"{sys.version_info.major}.{sys.version_info.minor}"
    wanted = _minor(params.pythonVersion)
    note = None if wanted in (None, current) else f"manifest asks Python {params.pythonVersion}"
    missing = unsatisfied(params, model_dir)
    if not missing and not force_venv:
        if note:
            note += f"; running on this interpreter's Python {current}, which has every requirement"
        return PythonEnv(Path(sys.executable), "current", note=note)
    base = shutil.which(f"python{wanted}") if wanted and wanted != current else None
    base_python = Path(base) if base else Path(sys.executable)
    base_version = wanted if base else current
    if note and not base:
        note += f"; python{wanted} not found, the environment uses Python {current}"
    key = env_key(params, model_dir, base_version)
    env_dir = (cache_dir or default_cache_dir()) / key
    _build_venv(env_dir, base_python, params, model_dir, log_path)
    return PythonEnv(env_dir / "bin" / "python", "venv", key=key, note=note)


def _minor(version: str | None) -> str | None:
    match = re.match(r"^(\d+)\.(\d+)", str(version or ""))
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _build_venv(env_dir: Path, base_python: Path, params: ModelParameters, model_dir: Path,
                log_path: Path | None) -> None:
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(env_dir.parent / f"{env_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs needing the same environment build it once
        if (env_dir / _COMPLETE).exists():
            return
        shutil.rmtree(env_dir, ignore_errors=True)  # a half-built one from an interrupted run
        steps = [[str(base_python), "-m", "venv", str(env_dir)]]
        pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        if params.pipRequirements:
            steps.append(pip + [r.pin() for r in params.pipRequirements])
        if params.pipRequirementFiles:
            steps.append(pip + [arg for rel in params.pipRequirementFiles for arg in ("-r", rel)])
        with open(log_path or os.devnull, "ab") as log:
            for step in steps:
                log.write(("$ " + " ".join(step) + "\n").encode())
                log.flush()
                proc = subprocess.run(step, cwd=model_dir, stdout=log, stderr=subprocess.STDOUT, check=False)
                if proc.returncode != 0:
                    shutil.rmtree(env_dir, ignore_errors=True)
                    status = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                              else f"exit status {proc.returncode}")
                    log.write(f"# {status}\n".encode())  # the log says how it ended, even when the step said nothing
                    where = f" (see {log_path})" if log_path else ""
                    shown = " ".join(a for a in step[2:] if not a.startswith("--"))[:200]
                    raise EotwinError(f"building the Python environment failed at '{shown}'{where}")
        (env_dir / _COMPLETE).write_text(json.dumps({"pip": [r.pin() for r in params.pipRequirements],
                                                     "files": params.pipRequirementFiles}) + "\n")
