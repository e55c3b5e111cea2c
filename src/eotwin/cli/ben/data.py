"""``eotwin ben info | encode | analyze``: BigEarthNet data commands (parse, call a pipeline, print)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from eotwin.cli import _common
from eotwin.cli.ben import app


@app.command("info")
def info(
    source: Path = typer.Argument(..., help="GeoTIFF dataset folder, rico-hdl/ConfigILM LMDB folder, v1 folder or eotwin store."),
    patch: str = typer.Option(..., "--patch", "-p", help="S2 patch id (v1: the patch folder name); VV, VH of its S1 partner are shown too."),
    metadata: Path | None = typer.Option(None, "--metadata", help="metadata.parquet (default: found beside SOURCE)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print a patch's labels and per-band shape, dtype, min, max and mean (same output for every source kind)."""
    from eotwin.ben.data_options import InfoOptions, make_options
    from eotwin.ben.info import format_info, patch_info
    from eotwin.ben.sources import open_source

    options = make_options(InfoOptions, source=source, patch=patch, metadata=metadata)
    with open_source(options.source, options.metadata, allow_incomplete=True) as src:
        result = patch_info(src, options.patch)
        kind = src.kind
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _common.say(f"source: {kind} {options.source}")
        typer.echo(format_info(result))


@app.command("encode")
def encode(
    source: Path = typer.Argument(..., help="GeoTIFF dataset folder (BigEarthNet-S2 + metadata.parquet), LMDB, v1 folder or store."),
    output: Path = typer.Option(..., "--output", "-o", help="Store folder (created; rerun to resume an interrupted encode)."),
    metadata: Path | None = typer.Option(None, "--metadata", help="metadata.parquet (default: found beside SOURCE)."),
    split: str | None = typer.Option(None, "--split", help="Only this split: train, validation or test."),
    snow: bool = typer.Option(True, "--snow/--no-snow", help="Include patches flagged with seasonal snow."),
    cloud: bool = typer.Option(True, "--cloud/--no-cloud", help="Include patches flagged with cloud or shadow."),
    limit: int | None = typer.Option(None, "--limit", help="Encode only the first N selected patches."),
    bands: str | None = typer.Option(None, "--bands", help="Bands kept (default: every band SOURCE holds): all (VV, VH + 12 S2), "
                                     "s2 (12), s1 with S2 bands, s2-10, s1-s2-10, rgb, 10m, or a list like VV,VH,B02."),
    workers: int | None = typer.Option(None, "--workers", "-j", help="Reader threads (default: CPU count, at most 8)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Patches per LMDB transaction (the resume granularity)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store instead of resuming it."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Leave out (and count) patches whose S1 partner is "
                                      "missing or misnamed instead of stopping."),
) -> None:
    """Convert a BigEarthNet source into the training store (LMDB of safetensors, rico-hdl layout)."""
    from eotwin.ben.data_options import EncodeOptions, make_options
    from eotwin.ben.store import run_encode

    options = make_options(EncodeOptions, source=source, output=output, metadata=metadata, split=split,
                           include_snow=snow, include_cloud=cloud, limit=limit,
                           bands=tuple(bands.split(",")) if bands is not None else None,
                           workers=workers, batch_size=batch_size, overwrite=overwrite, skip_missing=skip_missing)
    result = run_encode(options, progress=_common.progress())
    _common.out.print(
        f"{result.planned:,} patches in {result.store} ({result.written:,} written, {result.skipped:,} already there; "
        f"{result.seconds:.1f} s, {result.patches_per_second:,.0f} patches/s, {result.store_bytes / 1e6:,.1f} MB)"
    )
    if result.unpaired:
        _common.out.print(f"{result.unpaired:,} patches left out: Sentinel-1 partner missing or misnamed (see the manifest)")


@app.command("analyze")
def analyze(
    metadata: Path = typer.Argument(..., help="metadata.parquet (or the folder holding it)."),
    output: Path = typer.Option(..., "--output", "-o", help="Report folder: index.html, analysis.json and PNG plots."),
    snow_cloud: Path | None = typer.Option(None, "--snow-cloud", help="metadata_for_patches_with_snow_cloud_or_shadow.parquet "
                                           "(default: found beside METADATA)."),
    title: str = typer.Option("BigEarthNet v2 label analysis", "--title", help="Title of the HTML page."),
) -> None:
    """Label frequency per split, imbalance ratios, labels per patch, co-occurrence, countries, snow/cloud exclusions."""
    from eotwin.ben.analysis_report import run_analysis
    from eotwin.ben.data_options import AnalyzeOptions, make_options

    options = make_options(AnalyzeOptions, metadata=metadata, output=output, snow_cloud=snow_cloud, title=title)
    result = run_analysis(options, progress=_common.progress())
    stats = result.stats
    train = "train" if "train" in stats["splits"] else "all"
    imb = stats["imbalance"][train]
    _common.out.print(f"{stats['patches']['total']:,} patches ({stats['patches']['in_splits']:,} in splits: "
                      + ", ".join(f"{s} {n:,}" for s, n in stats["patches"]["by_split"].items())
                      + f"; {stats['exclusions']['total']:,} excluded for snow/cloud)")
    if imb["ratio"] is not None:
        _common.out.print(f"{train}: max/min class ratio {imb['ratio']:.1f}, MeanIR {imb['mean_ir']:.2f}, "
                          f"{stats['labels_per_patch'][train]['mean']:.2f} labels per patch")
    _common.out.print(f"report   {result.html}")
    _common.out.print(f"json     {result.json}")
    _common.out.print(f"plots    {len(result.plots)} PNG in {result.output} ({result.seconds:.1f} s)")
