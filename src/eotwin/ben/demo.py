"""Demo step: the label analysis of BigEarthNet v2, on the full official metadata when it is at hand.

The full ``metadata.parquet`` (480,038 patches) is looked up at ``$EOTWIN_BEN_METADATA``, then beside
the repository (``../shared/fixtures/ben/real``); without it the step analyses the 24 real patches
that ``make setup`` unpacks, and says so in the report title.
"""

from __future__ import annotations

import os
from pathlib import Path

from eotwin.report.demo import Artifact, DemoContext

_REPO = Path(__file__).resolve().parents[3]


def _metadata_candidates() -> list[tuple[Path, str]]:
    found = []
    if os.environ.get("EOTWIN_BEN_METADATA"):
        found.append((Path(os.environ["EOTWIN_BEN_METADATA"]), "BigEarthNet v2 label analysis"))
    found += [
        (_REPO.parent / "shared" / "fixtures" / "ben" / "real" / "metadata.parquet",
         "BigEarthNet v2 label analysis (full official metadata, 480,038 patches)"),
        (_REPO / ".eotwin-data" / "BENv2" / "metadata.parquet",
         "BigEarthNet v2 label analysis (demonstration on the 24 real mock patches only)"),
    ]
    return found


def ben_analysis_demo(context: DemoContext) -> list[Artifact]:
    """Run ``eotwin ben analyze`` and return the report, the JSON and the main plots."""
    from eotwin.ben.analysis_report import run_analysis
    from eotwin.ben.data_options import AnalyzeOptions
    from eotwin.errors import EotwinError

    candidates = _metadata_candidates()
    chosen = next(((path, title) for path, title in candidates if path.is_file()), None)
    if chosen is None:
        raise EotwinError("no BigEarthNet metadata found: set EOTWIN_BEN_METADATA or run `make setup`")
    metadata, title = chosen
    output = context.step_dir("ben_analysis")
    result = run_analysis(AnalyzeOptions(metadata=metadata, output=output, title=title), progress=context.progress)
    stats = result.stats
    train = "train" if "train" in stats["splits"] else "all"
    imb = stats["imbalance"][train]
    rel = output.relative_to(context.output_dir)
    summary = (f"{stats['patches']['total']:,} patches; {train} max/min class ratio "
               f"{imb['ratio']:.1f}, MeanIR {imb['mean_ir']:.2f}")
    artifacts = [
        Artifact("BigEarthNet label analysis", rel / "index.html", "report", f"{title}: {summary}"),
        Artifact("Label statistics (JSON)", rel / "analysis.json", "metrics", "counts, imbalance, co-occurrence, countries"),
    ]
    for name, label in (("label_frequency", "Label frequency per split"), ("imbalance", "Imbalance (BCE pos_weight)"),
                        ("cooccurrence", "Label co-occurrence"), ("countries", "Patches per country")):
        if name in result.plots:
            artifacts.append(Artifact(label, rel / f"{name}.png", "image"))
    return artifacts
