"""The demo: every capability run on the sample scene, linked from one ``index.html``.

Each capability contributes a step: a function ``(context) -> list[Artifact]`` registered in
``DEMO_STEPS`` by dotted path, so importing this module stays cheap. Each step runs in its own
spawned process: torch, GDAL caches and model weights of one step are returned to the system
before the next starts, so the demo's peak memory is one step's, not the sum (a DeltaTwin
container has 2 GB).
"""

from __future__ import annotations

import html
import importlib
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from eotwin.errors import EotwinError
from eotwin.io.files import ensure_writable_dir, write_text_atomic
from eotwin.progress import NullProgress, ProgressReporter, RichProgress, ensure_progress
from eotwin.sample.files import SampleFiles


@dataclass(frozen=True)
class Artifact:
    """One output worth showing: a file relative to the demo directory, and what it is."""

    title: str
    path: Path
    kind: str = "file"  # "viewer", "image", "report", "metrics", "data", "file"
    description: str = ""


@dataclass
class DemoContext:
    output_dir: Path
    sample: SampleFiles
    progress: ProgressReporter
    notes: list[str] = field(default_factory=list)

    def step_dir(self, name: str) -> Path:
        return ensure_writable_dir(self.output_dir / name)


# (section title, "module:function") in run order; each capability registers its own step here.
DEMO_STEPS: list[tuple[str, str]] = [
    ("Point cloud", "eotwin.pointcloud.demo:pointcloud_demo"),
    ("BigEarthNet label analysis", "eotwin.ben.demo:ben_analysis_demo"),
    ("BigEarthNet training", "eotwin.ben.train.demo:ben_training_demo"),
    ("Atmospheric correction", "eotwin.atmocorr.demo:atmocorr_demo"),
]


def _resolve(dotted: str) -> Callable[[DemoContext], list[Artifact]]:
    module_name, _, func = dotted.partition(":")
    return getattr(importlib.import_module(module_name), func)


def _run_step(dotted: str, output_dir: Path, sample: SampleFiles,
              progress: ProgressReporter) -> tuple[list[Artifact], list[str], str | None]:
    """Run one step (in a child process); an :class:`EotwinError` comes back as its message."""
    context = DemoContext(output_dir, sample, progress)
    try:
        artifacts = _resolve(dotted)(context)
    except EotwinError as exc:
        return [], context.notes, str(exc)
    return artifacts, context.notes, None


def _run_step_isolated(dotted: str, context: DemoContext) -> list[Artifact]:
    """Run ``dotted`` in a fresh spawned process so its memory is freed when it ends."""
    # Only the two reporters eotwin ships are plain picklable objects; a caller's own reporter
    # (which may hold a live terminal) is not sent to the child.
    child_progress = context.progress if isinstance(context.progress, RichProgress | NullProgress) else NullProgress()
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(_run_step, dotted, context.output_dir, context.sample, child_progress)
        try:
            artifacts, notes, error = future.result()
        except BrokenProcessPool:
            raise EotwinError("its process ended abruptly (killed, or out of memory)") from None
    context.notes.extend(notes)
    if error is not None:
        raise EotwinError(error)
    return artifacts


def run_demo(output_dir: str | Path, *, only: list[str] | None = None, progress: ProgressReporter | None = None) -> Path:
    """Write the sample scene, run every registered step, and write ``index.html``; return its path."""
    from eotwin.sample.files import write_sample

    output_dir = ensure_writable_dir(Path(output_dir))
    progress = ensure_progress(progress)
    sample = write_sample(output_dir / "sample")
    context = DemoContext(output_dir, sample, progress)
    sections: list[tuple[str, list[Artifact], float]] = [
        ("Sample scene", [
            Artifact("True-colour image (TCI)", sample.tci.relative_to(output_dir), "data", "uint8 GeoTIFF, UTM 32N, 10 m"),
            Artifact("DEM", sample.dem.relative_to(output_dir), "data", "float32 GeoTIFF, EPSG:4326, 1 arcsecond"),
            Artifact("L2A bands B02 B03 B04 B08", sample.l2a.relative_to(output_dir), "data", "uint16 DN, BOA_ADD_OFFSET -1000"),
            Artifact("Scene classification (SCL)", sample.scl.relative_to(output_dir), "data", "cloud, shadow and no-data classes"),
        ], 0.0)
    ]
    steps = [(t, d) for t, d in DEMO_STEPS if only is None or t.split()[0].lower() in {o.lower() for o in only}]
    with progress.task("demo", total=len(steps)) as task:
        for title, dotted in steps:
            started = time.perf_counter()
            try:
                artifacts = _run_step_isolated(dotted, context)
            except EotwinError as exc:
                raise EotwinError(f"demo step '{title}' failed: {exc}") from None
            sections.append((title, artifacts, time.perf_counter() - started))
            task.advance()
    index = output_dir / "index.html"
    write_text_atomic(index, render_index(sections, context.notes))
    return index


def render_index(sections: list[tuple[str, list[Artifact], float]], notes: list[str]) -> str:
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>eotwin demo</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "h2{border-bottom:1px solid #ccc;padding-bottom:.2em}figure{display:inline-block;margin:.5em;vertical-align:top}"
        "img{max-width:480px;border:1px solid #ddd}.k{color:#777;font-size:.85em}</style></head><body>",
        "<h1>eotwin demo</h1><p>Every capability run on the embedded sample scene (a synthetic alpine valley in UTM 32N). "
        "Everything here was produced offline by <code>eotwin demo</code>.</p>",
    ]
    for title, artifacts, seconds in sections:
        took = f" <span class='k'>({seconds:.1f} s)</span>" if seconds else ""
        parts.append(f"<h2>{html.escape(title)}{took}</h2><ul>")
        images = []
        for art in artifacts:
            href = html.escape(art.path.as_posix())
            desc = f" &mdash; {html.escape(art.description)}" if art.description else ""
            parts.append(f"<li><a href='{href}'>{html.escape(art.title)}</a> <span class='k'>[{art.kind}]</span>{desc}</li>")
            if art.kind == "image":
                images.append(f"<figure><a href='{href}'><img src='{href}' alt='{html.escape(art.title)}'></a>"
                              f"<figcaption>{html.escape(art.title)}</figcaption></figure>")
        parts.append("</ul>" + "".join(images))
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
