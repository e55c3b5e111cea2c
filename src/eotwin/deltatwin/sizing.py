"""Sizing a component's models: ``hardwareRequirements.ram`` from measured peaks, and measuring them.

The peaks live in ``sizing.json`` (written by ``eotwin deltatwin build --measure``, which runs every
component on the sample scene with the offline runner; full-tile figures come from benchmarks/memory.py).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from eotwin.deltatwin.blueprints import Blueprint, ModelBlueprint, blueprint
from eotwin.deltatwin.packaging import eotwin_version, source_root
from eotwin.errors import EotwinError
from eotwin.progress import ProgressReporter

SIZING_FILE = "sizing.json"
RAM_FLOOR = 512 * 2**20  # never ask for less: the interpreter, numpy and GDAL alone take a few hundred MB
RAM_MARGIN = 1.5  # measured peak x margin, rounded up to RAM_STEP
RAM_STEP = 256 * 2**20


class _Built(Protocol):
    """A component folder just written (``build.BuiltComponent``): what measuring needs of it."""

    name: str
    path: Path


def load_sizing(path: Path | None = None) -> dict[str, Any]:
    """Measured peaks per component and model: the file given, else the one shipped with eotwin."""
    try:
        if path is not None:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        return json.loads(resources.files("eotwin.deltatwin").joinpath(SIZING_FILE).read_text("utf-8"))
    except FileNotFoundError:
        if path is not None:
            raise EotwinError(f"{path}: sizing file not found") from None
        return {}
    except (OSError, ValueError) as exc:
        raise EotwinError(f"{path or SIZING_FILE}: cannot read the sizing file: {exc}") from None


def ram_for(peak_bytes: int | None) -> str:
    """A Kubernetes quantity for a measured peak: x RAM_MARGIN, rounded up to 256 Mi, at least 512 Mi."""
    need = max(RAM_FLOOR, int((peak_bytes or 0) * RAM_MARGIN))
    mib = math.ceil(need / RAM_STEP) * RAM_STEP // 2**20
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def _sizing_entry(sizing: dict[str, Any], component: str, model: str) -> dict[str, Any] | None:
    entry = sizing.get("components", {}).get(component, {}).get(model)
    return entry if isinstance(entry, dict) else None


def _entry_peak(entry: dict[str, Any]) -> int:
    return max(int(entry.get("peak_rss_bytes", 0)), int(entry.get("peak_vms_bytes", 0)))


def _model_ram(sizing: dict[str, Any], bp: Blueprint, model: ModelBlueprint) -> tuple[str, str]:
    """(ram quantity, where the figure comes from) for a model: the larger of its sample-scene measurement and,
    when one is recorded (``full_tile``), its measurement on a full Sentinel-2 tile."""
    entry = _sizing_entry(sizing, bp.name, model.id)
    if entry is None:
        return "2Gi", "not measured yet: the service default (2Gi)"
    full = entry.get("full_tile") if isinstance(entry.get("full_tile"), dict) else None
    used = full if full is not None and _entry_peak(full) > _entry_peak(entry) else entry
    peak = _entry_peak(used)
    note = (f"measured peak {peak / 2**20:.0f} MiB (max of tree RSS {used.get('peak_rss_bytes', 0) / 2**20:.0f} MiB "
            f"and process address space {used.get('peak_vms_bytes', 0) / 2**20:.0f} MiB) on "
            f"{used.get('workload', 'the sample scene')} x {RAM_MARGIN}")
    if used.get("note"):
        note += f"; {used['note']}"
    return ram_for(peak), note


def merge_sizing(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s measurements over ``old``'s, keeping what ``new`` does not measure: other components (the
    live one's, from its test) and the full-tile figures (``full_tile``, from benchmarks/memory.py)."""
    merged = json.loads(json.dumps(old))
    components = merged.setdefault("components", {})
    for name, models in new.get("components", {}).items():
        for model, entry in models.items():
            previous = components.get(name, {}).get(model, {})
            kept = {"full_tile": previous["full_tile"]} if isinstance(previous, dict) and "full_tile" in previous else {}
            components.setdefault(name, {})[model] = {**entry, **kept}
    return {**merged, "about": new.get("about", merged.get("about")), "eotwin": new.get("eotwin", merged.get("eotwin"))}


# ---------------------------------------------------------------- measuring peak memory

def measure_components(components_dir: Path, built: list[_Built], work: Path, *, size: int = 600,
                       progress: ProgressReporter | None = None) -> dict[str, Any]:
    """Run each built component that has sample inputs on the sample scene; peaks per model node.

    Limits are off while measuring (the point is to learn them). Returns the sizing document.
    """
    from eotwin.deltatwin.runner import RunOptions, run_component
    from eotwin.sample import make_scene
    from eotwin.sample.files import write_sample

    work = Path(work)
    files = write_sample(work / "sample", make_scene(size, 42))
    sample = {"dem": Path(files.dem), "tci": Path(files.tci), "l2a": Path(files.l2a), "scl": Path(files.scl)}
    extras = {extra for b in built for extra in blueprint(b.name).sample_extras if blueprint(b.name).sample_inputs}
    sample.update(_sample_extras(extras, work, size))
    doc: dict[str, Any] = {"about": "peak memory per model, from `eotwin deltatwin build --measure` (offline "
                                    "runner, limits off; full_tile: benchmarks/memory.py); ram = max(peak_rss, "
                                    "peak_vms) x margin, of the larger of the two measurements",
                           "eotwin": eotwin_version(), "components": {}}
    for b in built:
        bp = blueprint(b.name)
        if bp.sample_inputs is None:
            continue
        inputs = work / f"{b.name}-inputs.json"
        inputs.write_text(json.dumps(bp.sample_inputs(sample)), encoding="utf-8")
        result = run_component(RunOptions(component=b.path, inputs_file=inputs, run_dir=work / f"run-{b.name}",
                                          components=[Path(components_dir)], enforce_limits=False), progress=progress)
        if not result.ok:
            raise EotwinError(f"measuring {b.name} failed: {result.record.get('error')}")
        for node in result.record["nodes"]:
            if node["ref"].startswith("models."):
                doc["components"].setdefault(b.name, {})[node["model"]] = {
                    "peak_rss_bytes": node["peak_rss_bytes"], "peak_vms_bytes": node["peak_vms_bytes"],
                    "wall_s": node["wall_s"], "workload": f"the sample scene ({size} x {size} px)"}
    return doc


def _sample_extras(extras: set[str], work: Path, size: int) -> dict[str, Path]:
    """The inputs beyond the sample scene that some components measure on: the sample scene's L1C stack
    (atmocorr) and a checkpoint of a one-epoch smoke training on the 24 real BigEarthNet patches (ben-predict)."""
    made: dict[str, Path] = {}
    if "l1c" in extras:
        from eotwin.atmocorr.sample_l1c import make_sample_l1c

        made["l1c"] = Path(make_sample_l1c(work / "sample_l1c", size=size, seed=42).l1c)
    if "checkpoint" in extras:
        root = source_root()
        data = root / ".eotwin-data" / "BENv2"
        if not (data / "metadata.parquet").is_file():
            raise EotwinError(f"measuring eotwin-ben-predict needs the BigEarthNet patches in {data}: run `make setup`")
        out = work / "ben-run"
        proc = subprocess.run([sys.executable, "-m", "eotwin", "-q", "ben", "train", "-c",
                               str(root / "configs" / "ben" / "smoke.yaml"), f"output={out}", f"data.source={data}",
                               "trainer.max_epochs=1", "evaluate_splits=[]"],
                              capture_output=True, text=True, check=False)
        best = out / "checkpoints" / "best.ckpt"
        if proc.returncode != 0 or not best.is_file():
            last = (proc.stderr.strip().splitlines() or ["no checkpoint written"])[-1]
            raise EotwinError(f"the smoke training for measuring eotwin-ben-predict failed: {last[:200]}")
        made["checkpoint"] = best
    return made
