"""Compare two `eotwin demo` output folders: byte-identical except what a run cannot repeat.

Used to check that a restructuring left every demo output unchanged. Allowed differences, and only
these: the output folder's own path inside text files, ISO timestamps, step durations in index.html,
JSON fields that time the run (keys ending in seconds, per_second, elapsed, duration),
TensorBoard event wall times (the event file's name carries the time, host and pid), and the same in
Lightning checkpoints (their tensors and numbers must be equal). Everything else must be equal byte
for byte. Prints one line per file that differs and a summary; exits 1 when anything differs.

    .venv/bin/python scripts/compare_demo.py BEFORE_DIR AFTER_DIR [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")
DURATION = re.compile(r"\(\d+(?:\.\d+)? s\)")
TEXT_SUFFIXES = {".json", ".yaml", ".yml", ".html", ".txt", ".csv", ".md", ".vpc", ".js", ".css"}
TIMING_KEY = re.compile(r"(^|[:_])(seconds|per_second|elapsed|duration)$")
EVENTS = re.compile(r"^events\.out\.tfevents\..*$")


def _key(path: Path) -> str:
    """A file's name for matching: TensorBoard event files carry the time, host and pid in it."""
    name = "events.out.tfevents.*" if EVENTS.match(path.name) else path.name
    return str(path.parent / name)


def _files(root: Path) -> dict[str, Path]:
    return {_key(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _normalised_text(data: bytes, root: Path) -> str:
    text = data.decode("utf-8")
    text = text.replace(root.resolve().as_uri(), "<OUT-URI>").replace(str(root.resolve()), "<OUT>")
    text = text.replace(str(root), "<OUT>")
    text = TIMESTAMP.sub("<TIME>", text)
    return DURATION.sub("(<SECONDS>)", text)


def _normalised_json(data: bytes, root: Path) -> Any:
    """A JSON document with paths and timestamps masked and timing figures (seconds, rates) left out."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: "<TIMING>" if TIMING_KEY.search(k) else walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(json.loads(_normalised_text(data, root)))


def _events(path: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in a TensorBoard event file, wall times left out."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    rows = []
    for event in EventFileLoader(str(path)).Load():
        for value in event.summary.value:
            number = value.simple_value if value.HasField("simple_value") else None
            if number is None and value.HasField("tensor"):
                number = tuple(value.tensor.float_val) or value.tensor.string_val[:1]
            rows.append((event.step, value.tag, repr(number)))
    return rows


def _normalised_object(value: Any, root: Path) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape), value.detach().cpu().numpy().tobytes())
    if isinstance(value, dict):
        return {_normalised_text(str(k).encode(), root): _normalised_object(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalised_object(v, root) for v in value]
    if isinstance(value, str):
        return _normalised_text(value.encode(), root)
    if isinstance(value, Path):
        return _normalised_text(str(value).encode(), root)
    return value


def _checkpoint(path: Path, root: Path) -> Any:
    import torch

    return _normalised_object(torch.load(path, map_location="cpu", weights_only=True), root)


def compare(before: Path, after: Path) -> dict[str, Any]:
    """Each file's verdict: 'identical', 'equal after normalising', or why it differs."""
    old, new = _files(before), _files(after)
    verdicts: dict[str, str] = {}
    for key in sorted(set(old) | set(new)):
        if key not in new:
            verdicts[key] = "missing after"
            continue
        if key not in old:
            verdicts[key] = "new after"
            continue
        a, b = old[key].read_bytes(), new[key].read_bytes()
        if a == b:
            verdicts[key] = "identical"
            continue
        suffix = old[key].suffix.lower()
        if suffix == ".json":
            same = _normalised_json(a, before) == _normalised_json(b, after)
        elif suffix in TEXT_SUFFIXES:
            same = _normalised_text(a, before) == _normalised_text(b, after)
        elif EVENTS.match(old[key].name):
            same = _events(old[key]) == _events(new[key])
        elif suffix == ".ckpt":
            same = _checkpoint(old[key], before) == _checkpoint(new[key], after)
        else:
            same = False
        verdicts[key] = "equal after normalising" if same else "DIFFERENT"
    counts: dict[str, int] = {}
    for verdict in verdicts.values():
        counts[verdict] = counts.get(verdict, 0) + 1
    return {"files": verdicts, "counts": counts, "same": all(
        v in ("identical", "equal after normalising") for v in verdicts.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    args = parser.parse_args(argv)
    for folder in (args.before, args.after):
        if not folder.is_dir():
            print(f"error: {folder}: not a folder", file=sys.stderr)
            return 2
    result = compare(args.before, args.after)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, verdict in result["files"].items():
            if verdict not in ("identical",):
                print(f"{verdict:24s} {key}")
        print("counts: " + ", ".join(f"{v} {k}" for k, v in sorted(result["counts"].items())))
        print("demo outputs the same: " + ("yes" if result["same"] else "NO"))
    return 0 if result["same"] else 1


if __name__ == "__main__":
    sys.exit(main())
