"""What a component ships of eotwin itself: the reproducible wheel and its pinned runtime requirements.

``requirements.txt`` (the model's ``pipRequirementFiles``) pins eotwin's runtime dependencies for the
extras a model needs to the versions installed here (the environment the tests ran in); the wheel is built
from this source tree with a fixed ``SOURCE_DATE_EPOCH`` (same source, same bytes).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from eotwin.errors import EotwinError

WHEEL_EPOCH = "1704067200"  # SOURCE_DATE_EPOCH of the wheel (2024-01-01): reproducible zip timestamps


def eotwin_version() -> str:
    return metadata.version("eotwin")


def pinned_requirements(extras: tuple[str, ...]) -> list[str]:
    """``name==version`` for every distribution eotwin[extras] needs here (transitively), sorted by name.

    Markers are evaluated on this interpreter (Linux, Python 3.11, like the builder's image).
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [("eotwin", frozenset(extras))]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in done:
            continue
        done.add((name, wanted))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise EotwinError(f"{name} is required by eotwin[{','.join(extras)}] but is not installed here: "
                              "install the extra first so its versions can be pinned") from None
        canon = canonicalize_name(dist.metadata["Name"])
        if canon != "eotwin":
            pins[canon] = dist.version
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (*wanted, "")):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return [f"{n}=={v}" for n, v in sorted(pins.items())]


def source_root() -> Path:
    """The eotwin source tree this package comes from (an editable install or a checkout)."""
    import eotwin

    root = Path(eotwin.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "src" / "eotwin").is_dir():
        raise EotwinError("eotwin is not installed from a source tree here: give a built wheel with --wheel")
    return root


def check_wheel(wheel: Path) -> None:
    """A wheel to ship must be a zip holding eotwin's ``.dist-info/METADATA``: a component built around a
    renamed or damaged file passes the validator but fails in every container at ``run.sh``."""
    import zipfile

    try:
        with zipfile.ZipFile(wheel) as zf:
            metadata = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            text = zf.read(metadata[0]).decode("utf-8", "replace") if len(metadata) == 1 else ""
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise EotwinError(f"{wheel}: not a wheel (not a readable zip: {exc})") from None
    if not any(line.strip().lower() == "name: eotwin" for line in text.splitlines()[:20]):
        raise EotwinError(f"{wheel}: not an eotwin wheel (no .dist-info/METADATA naming eotwin)")


def build_wheel(dest: Path, source: Path | None = None) -> Path:
    """Build eotwin's wheel from a clean copy of the source tree; fixed timestamps make it reproducible."""
    source = source or source_root()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eotwin-wheel-") as tmp:
        tree = Path(tmp) / "src-tree"
        (tree / "src").mkdir(parents=True)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (source / name).is_file():
                shutil.copy2(source / name, tree / name)
        shutil.copytree(source / "src" / "eotwin", tree / "src" / "eotwin",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        out = Path(tmp) / "dist"
        env = dict(os.environ, SOURCE_DATE_EPOCH=WHEEL_EPOCH)
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                               "--disable-pip-version-check", "--wheel-dir", str(out), str(tree)],
                              capture_output=True, text=True, env=env, check=False)
        wheels = sorted(out.glob("eotwin-*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel written"]
            raise EotwinError(f"building the eotwin wheel failed: {last[0][:200]}")
        target = dest / wheels[0].name
        shutil.copy2(wheels[0], target)
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
