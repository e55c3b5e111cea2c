"""``eotwin ben analyze``: the label analysis written as PNG plots, an HTML page and JSON.

The numbers come from :func:`eotwin.ben.analysis.analyse`; this module only draws and writes them.
Every file is written atomically; the HTML page links the plots and ``analysis.json`` by relative path
so the report folder can be moved or published as is.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eotwin.ben.analysis import analyse
from eotwin.ben.data_options import AnalyzeOptions
from eotwin.ben.labels import SHORT_NAMES
from eotwin.ben.sources.metadata import SNOW_CLOUD_NAME, read_metadata
from eotwin.errors import EotwinError
from eotwin.io.files import atomic_path, ensure_writable_dir, write_json_atomic, write_text_atomic
from eotwin.progress import ProgressReporter, ensure_progress

SPLIT_COLOURS = {"train": "#1f77b4", "validation": "#ff7f0e", "test": "#2ca02c"}


@dataclass(frozen=True)
class AnalysisResult:
    output: Path
    html: Path
    json: Path
    plots: dict[str, Path]
    stats: dict[str, Any]
    seconds: float


def run_analysis(options: AnalyzeOptions, progress: ProgressReporter | None = None) -> AnalysisResult:
    """Read the metadata (and the snow/cloud list), analyse, write plots, JSON and HTML."""
    started = time.perf_counter()
    progress = ensure_progress(progress)
    metadata = Path(options.metadata)
    if metadata.is_dir():
        metadata = metadata / "metadata.parquet"
    snow_cloud = options.snow_cloud
    if snow_cloud is None and (metadata.parent / SNOW_CLOUD_NAME).is_file():
        snow_cloud = metadata.parent / SNOW_CLOUD_NAME
    with progress.task("analyse BigEarthNet labels", total=3 + len(_PLOTS)) as task:
        frame = read_metadata(metadata, snow_cloud)
        output = ensure_writable_dir(Path(options.output))  # only once the input is known to be good
        task.advance()
        stats = analyse(frame)
        stats["inputs"] = {"metadata": str(metadata), "snow_cloud": str(snow_cloud) if snow_cloud else None}
        task.advance()
        plots: dict[str, Path] = {}
        for name, draw in _PLOTS:
            path = output / f"{name}.png"
            if draw(stats, path):
                plots[name] = path
            task.advance()
        json_path = write_json_atomic(output / "analysis.json", stats)
        html_path = write_text_atomic(output / "index.html", render_html(stats, plots, options.title))
        task.advance()
    return AnalysisResult(output, html_path, json_path, plots, stats, time.perf_counter() - started)


# --------------------------------------------------------------------------- plots

def _figure(width: float, height: float, ncols: int = 1):
    from eotwin.report.plotting import pyplot

    return pyplot().subplots(1, ncols, figsize=(width, height), dpi=110)


def _save(fig, path: Path) -> bool:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return True


def _short(stats: dict[str, Any]) -> list[str]:
    return [SHORT_NAMES.get(name, name) for name in stats["classes"]]


def plot_label_frequency(stats: dict[str, Any], path: Path) -> bool:
    fig, ax = _figure(9, 7)
    names = _short(stats)
    y = np.arange(len(names))
    splits = stats["splits"]
    height = 0.8 / max(1, len(splits))
    for i, split in enumerate(splits):
        ax.barh(y + (i - (len(splits) - 1) / 2) * height, np.asarray(stats["label_frequency"][split]) * 100, height,
                label=f"{split} ({stats['patches']['by_split'][split]:,})", color=SPLIT_COLOURS.get(split))
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("patches with the label (%)")
    ax.set_title("Label frequency per split")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_imbalance(stats: dict[str, Any], path: Path) -> bool:
    split = "train" if "train" in stats["imbalance"] else "all"
    info = stats["imbalance"][split]
    if info["ratio"] is None:
        return False
    fig, ax = _figure(9, 7)
    names = _short(stats)
    counts = np.asarray(stats["label_counts"][split], dtype=float)
    order = np.argsort(-counts)
    weights = np.array([w if w is not None else np.nan for w in info["pos_weight"]])
    ax.barh(np.arange(len(names)), weights[order], color="#9467bd")
    ax.set_yticks(np.arange(len(names)), [names[i] for i in order])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("BCE pos_weight = negatives / positives (log scale)")
    ax.set_title(f"Imbalance on {split}: max/min ratio {info['ratio']:.1f}, MeanIR {info['mean_ir']:.2f}")
    for i, idx in enumerate(order):
        if not np.isnan(weights[idx]):
            ax.text(weights[idx], i, f" {weights[idx]:.1f}", va="center", fontsize=8)
    ax.grid(axis="x", alpha=0.3, which="both")
    return _save(fig, path)


def plot_labels_per_patch(stats: dict[str, Any], path: Path) -> bool:
    fig, ax = _figure(8, 4.5)
    splits = stats["splits"]
    top = max(int(k) for s in splits for k in stats["labels_per_patch"][s]["histogram"]) if splits else 1
    x = np.arange(1, top + 1)
    width = 0.8 / max(1, len(splits))
    for i, split in enumerate(splits):
        hist = stats["labels_per_patch"][split]["histogram"]
        total = sum(hist.values())
        share = [100 * hist.get(str(k), 0) / total for k in x]
        ax.bar(x + (i - (len(splits) - 1) / 2) * width, share, width, color=SPLIT_COLOURS.get(split),
               label=f"{split} (mean {stats['labels_per_patch'][split]['mean']:.2f})")
    ax.set_xticks(x)
    ax.set_xlabel("labels per patch")
    ax.set_ylabel("patches (%)")
    ax.set_title("Labels per patch")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_cooccurrence(stats: dict[str, Any], path: Path) -> bool:
    fig, ax = _figure(10, 9)
    names = _short(stats)
    matrix = np.asarray(stats["cooccurrence"]["conditional"])
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    ax.set_xlabel("class j")
    ax.set_ylabel("class i")
    ax.set_title("Label co-occurrence: P(j present | i present)")
    for i in range(len(names)):
        for j in range(len(names)):
            if i != j and matrix[i, j] >= 0.3:
                ax.text(j, i, f"{matrix[i, j]:.1f}", ha="center", va="center", fontsize=6,
                        color="black" if matrix[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def plot_countries(stats: dict[str, Any], path: Path) -> bool:
    countries = sorted(stats["countries"], key=lambda c: -stats["countries"][c]["total"])
    if not countries:
        return False
    fig, ax = _figure(9, 0.5 * len(countries) + 1.8)
    left = np.zeros(len(countries))
    for split in stats["splits"]:
        values = np.array([stats["countries"][c]["patches"].get(split, 0) for c in countries], dtype=float)
        ax.barh(countries, values, left=left, color=SPLIT_COLOURS.get(split), label=split)
        left += values
    excluded = np.array([stats["countries"][c]["excluded"] for c in countries], dtype=float)
    if excluded.any():
        ax.barh(countries, excluded, left=left, color="#bbbbbb", label="excluded (snow / cloud)")
    ax.invert_yaxis()
    ax.set_xlabel("patches")
    ax.set_title("Patches per country and split")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_country_labels(stats: dict[str, Any], path: Path) -> bool:
    countries = sorted(stats["countries"], key=lambda c: -stats["countries"][c]["total"])
    countries = [c for c in countries if stats["countries"][c]["total"]]
    if not countries:
        return False
    fig, ax = _figure(11, 0.45 * len(countries) + 3.5)
    matrix = np.array([stats["countries"][c]["label_frequency"] for c in countries]) * 100
    image = ax.imshow(matrix, cmap="magma_r", aspect="auto", vmin=0, vmax=max(1.0, float(matrix.max())))
    names = _short(stats)
    ax.set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(countries)), countries)
    ax.set_title("Label frequency per country (% of the country's patches)")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    return _save(fig, path)


def plot_exclusions(stats: dict[str, Any], path: Path) -> bool:
    exclusions = stats["exclusions"]
    if not exclusions["total"]:
        return False
    fig, (left, right) = _figure(11, 4.5, ncols=2)
    reasons = {"seasonal snow only": exclusions["seasonal_snow"] - exclusions["both"],
               "cloud or shadow only": exclusions["cloud_or_shadow"] - exclusions["both"], "both": exclusions["both"]}
    left.bar(list(reasons), list(reasons.values()), color=["#17becf", "#7f7f7f", "#d62728"])
    left.set_ylabel("patches")
    left.set_title(f"Excluded patches: {exclusions['total']:,} ({100 * exclusions['share_of_all_patches']:.1f} % of all)")
    by_country = exclusions["by_country"]
    right.barh(list(by_country), list(by_country.values()), color="#8c564b")
    right.invert_yaxis()
    right.set_title("Excluded patches per country")
    return _save(fig, path)


_PLOTS = (
    ("label_frequency", plot_label_frequency),
    ("imbalance", plot_imbalance),
    ("labels_per_patch", plot_labels_per_patch),
    ("cooccurrence", plot_cooccurrence),
    ("countries", plot_countries),
    ("country_labels", plot_country_labels),
    ("exclusions", plot_exclusions),
)


# --------------------------------------------------------------------------- HTML

def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_html(stats: dict[str, Any], plots: dict[str, Path], title: str) -> str:
    """The report page: summary, per-class table, plots, countries and exclusions."""
    if not stats.get("classes"):
        raise EotwinError("nothing to render")
    splits = stats["splits"]
    train = "train" if "train" in splits else "all"
    imb = stats["imbalance"][train]
    class_rows = []
    for i, name in enumerate(stats["classes"]):
        row: list[Any] = [i, name]
        for split in [*splits, "all"]:
            row.append(f"{stats['label_counts'][split][i]:,} ({100 * stats['label_frequency'][split][i]:.2f} %)")
        row += [_fmt(imb["irlbl"][i]), _fmt(imb["pos_weight"][i])]
        class_rows.append(row)
    class_table = _table(["#", "class", *splits, "all", f"IRLbl ({train})", f"pos_weight ({train})"], class_rows)

    lpp = stats["labels_per_patch"]
    summary = _table(["split", "patches", "labels / patch (mean)", "max/min class ratio", "MeanIR", "rarest class"], [
        [s, f"{stats['patches']['by_split'].get(s, stats['patches']['in_splits']):,}", _fmt(lpp[s]["mean"]),
         _fmt(stats["imbalance"][s]["ratio"], 1), _fmt(stats["imbalance"][s]["mean_ir"]),
         stats["classes"][int(np.argmin(stats["label_counts"][s]))]]
        for s in [*splits, "all"]
    ])
    countries = stats["countries"]
    country_table = _table(["country", *splits, "total", "excluded"], [
        [c, *(f"{countries[c]['patches'].get(s, 0):,}" for s in splits), f"{countries[c]['total']:,}", countries[c]["excluded"]]
        for c in sorted(countries, key=lambda c: -countries[c]["total"])
    ])
    shift = stats.get("split_shift", {})
    shift_text = "; ".join(f"{s}: largest label-frequency difference to train {100 * v['max_abs_difference']:.1f} points "
                           f"({html.escape(v['class'])})" for s, v in shift.items())
    exclusions = stats["exclusions"]
    if exclusions["total"]:
        excl_text = (f"{exclusions['total']:,} patches are outside the splits: {exclusions['seasonal_snow']:,} with seasonal "
                     f"snow, {exclusions['cloud_or_shadow']:,} with cloud or shadow ({exclusions['both']:,} both).")
    elif stats["inputs"].get("snow_cloud"):
        excl_text = "The snow/cloud list holds no patches."
    else:
        excl_text = ("No snow/cloud metadata was given and the metadata flags no patch: the official metadata.parquet "
                     f"lists only the patches of the splits. Pass <code>--snow-cloud</code> with "
                     f"<code>{SNOW_CLOUD_NAME}</code> to report the exclusions.")
    figures = "".join(
        f"<figure><a href='{html.escape(p.name)}'><img src='{html.escape(p.name)}' alt='{html.escape(n)}'></a>"
        f"<figcaption>{html.escape(n.replace('_', ' '))}</figcaption></figure>" for n, p in plots.items()
    )
    return "\n".join([
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;"
        "text-align:right}td:nth-child(2),th:nth-child(2){text-align:left}figure{display:inline-block;margin:.5em;"
        "vertical-align:top}img{max-width:560px;border:1px solid #ddd}.k{color:#666}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='k'>Metadata: {html.escape(stats['inputs']['metadata'])}. {stats['patches']['total']:,} patches, "
        f"{stats['patches']['in_splits']:,} in the splits. Class order: {html.escape(stats['class_order'])} "
        "(index = position in multi-hot vectors). Raw numbers: <a href='analysis.json'>analysis.json</a>.</p>",
        "<h2>Summary</h2>", summary,
        f"<p>{shift_text}</p>" if shift_text else "",
        "<p class='k'>IRLbl = most frequent class count / class count; MeanIR is its mean (above 1.5: imbalanced). "
        "pos_weight = negatives / positives, the weight of BCEWithLogitsLoss used against the imbalance.</p>",
        "<h2>Per class</h2>", class_table,
        "<h2>Plots</h2>", figures,
        "<h2>Countries</h2>", country_table,
        "<h2>Snow and cloud exclusions</h2>", f"<p>{excl_text}</p>",
        "</body></html>",
    ])
