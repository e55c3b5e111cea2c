"""``eotwin ben train | evaluate | predict``: BigEarthNet training commands (parse, call a pipeline, print)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from eotwin.cli import _common
from eotwin.cli.ben import app


def _print_scores(label: str, scores: dict) -> None:
    from eotwin.ben.train.metrics import headline

    _common.out.print(f"{label:<22} {headline(scores)}")


@app.command("train")
def train(
    overrides: list[str] = typer.Argument(None, help="Config overrides: section.key=value (e.g. model.name=resnet26 optim.lr=3e-4)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (see configs/ben/); defaults when omitted."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the config's output folder from checkpoints/last.ckpt."),
    seeds: str | None = typer.Option(None, "--seeds", help="Train once per seed (e.g. 0,1,2) into OUTPUT/seed-<n>/ and write "
                                     "OUTPUT/summary.json: mean and spread of the scores over the seeds."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="With S1 bands: leave out (and count) patches whose "
                                      "S1 partner is missing or misnamed instead of stopping (data.skip_missing=true)."),
) -> None:
    """Train a timm model on BigEarthNet with PyTorch Lightning: checkpoints, logs, curves, tuned thresholds, results."""
    from eotwin.ben.train.config import load_config, parse_seeds
    from eotwin.ben.train.pipeline import run_training

    seed_list = parse_seeds(seeds) if seeds is not None else None
    cfg = load_config(config, [*(overrides or []), *(["data.skip_missing=true"] if skip_missing else [])])
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":  # DDP: rank 0 speaks
        _common.say(f"training {cfg.model.name} on {cfg.data.source} ({len(cfg.data.bands)} bands: "
                    f"{','.join(cfg.data.bands)}), {cfg.trainer.max_epochs} epochs -> {cfg.output}"
                    + (f", seeds {','.join(map(str, seed_list))}" if seed_list else ""))
    if seed_list is not None:
        _train_seeds(cfg, seed_list, resume)
        return
    result = run_training(cfg, resume=resume, progress=_common.progress())
    if not result.global_zero:  # other DDP processes: rank 0 reports
        return
    start = f" (resumed at epoch {result.resumed_from_epoch + 1})" if result.resumed_from_epoch is not None else ""
    _common.out.print(f"{result.epochs} epochs, {result.global_step} steps{start} in {result.seconds:.1f} s, "
                      f"{result.images_per_second:,.1f} training images/s")
    for split, pair in result.scores.items():
        _print_scores(f"{split} @0.5", pair["@0.5"])
        _print_scores(f"{split} tuned thr.", pair["tuned"])
    _common.out.print(f"best     {result.best_checkpoint}")
    _common.out.print(f"last     {result.last_checkpoint}")
    _common.out.print(f"results  {result.results_json}")
    if result.curves_png is not None:
        _common.out.print(f"curves   {result.curves_png}")


def _train_seeds(cfg, seeds: list[int], resume: bool) -> None:
    from eotwin.ben.train.metrics import summary_line
    from eotwin.ben.train.pipeline import run_seeds

    result = run_seeds(cfg, seeds, resume=resume, progress=_common.progress())
    if not result.global_zero:
        return
    for seed, path in result.results.items():
        note = " (finished earlier)" if result.runs[seed] is None else ""
        _common.out.print(f"seed {seed:<4} results  {path}{note}")
    for split, kinds in result.summary["splits"].items():
        for kind, metrics in kinds.items():
            _common.out.print(f"{split} {kind:<6} over {len(seeds)} seeds: {summary_line(metrics)}")
    _common.out.print(f"summary  {result.summary_json}")


@app.command("evaluate")
def evaluate(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `eotwin ben train` (best.ckpt or last.ckpt)."),
    split: str = typer.Option("test", "--split", help="train, validation, test or all."),
    source: Path | None = typer.Option(None, "--source", help="Data source (default: the one recorded in the checkpoint)."),
    metadata: Path | None = typer.Option(None, "--metadata", help="metadata.parquet for --source (default: found beside it)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the scores (with per-class values) as JSON."),
    batch_size: int = typer.Option(64, "--batch-size"),
    workers: int = typer.Option(0, "--workers", "-j", help="DataLoader worker processes."),
    snow: bool = typer.Option(False, "--snow/--no-snow", help="Include patches flagged with seasonal snow."),
    cloud: bool = typer.Option(False, "--cloud/--no-cloud", help="Include patches flagged with cloud or shadow."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N patches of the split."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print the full JSON instead of the summary."),
) -> None:
    """Score a checkpoint on a split: micro / macro F1 (at 0.5 and at the tuned thresholds) and micro / macro mAP."""
    from eotwin.ben.data_options import make_options
    from eotwin.ben.train.config import EvaluateOptions
    from eotwin.ben.train.pipeline import run_evaluation

    options = make_options(EvaluateOptions, checkpoint=checkpoint, split=split, source=source, metadata=metadata,
                           output=output, batch_size=batch_size, num_workers=workers, include_snow=snow,
                           include_cloud=cloud, limit=limit, device=device)
    result = run_evaluation(options, progress=_common.progress())
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _common.out.print(f"{result['model']} on {result['split']} ({result['patches']:,} patches, {len(result['bands'])} bands)")
    _print_scores("@0.5", result["scores"]["@0.5"])
    _print_scores("tuned thresholds", result["scores"]["tuned"])
    if output is not None:
        _common.out.print(f"json     {output}")


@app.command("predict")
def predict(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `eotwin ben train`."),
    image: Path = typer.Argument(..., help="Sentinel-2 L2A GeoTIFF at 10 m holding the model's bands (named in band descriptions)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output GeoTIFF (19 bands, one per class; a PNG preview beside it)."),
    kind: str = typer.Option("probability", "--kind", help="probability (float32) or labels (uint8 0/1 with the thresholds)."),
    stride: int = typer.Option(120, "--stride", help="Output cell size in input pixels; each cell gets the 120 px window centred on it."),
    bands: str | None = typer.Option(None, "--bands", help="Band names of the image's bands in order, e.g. B02,B03,B04,B08."),
    boa_offset: float | None = typer.Option(None, "--boa-offset", help="Added to DN (default: the file's BOA_ADD_OFFSET tag, else 0)."),
    thresholds: str = typer.Option("tuned", "--thresholds", help="tuned (stored in the checkpoint) or 0.5."),
    batch_size: int = typer.Option(64, "--batch-size"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object (for scripts)."),
) -> None:
    """Predict a georeferenced per-class probability or label raster with sliding 120 x 120 windows."""
    from eotwin.ben.data_options import make_options
    from eotwin.ben.train.config import PredictOptions
    from eotwin.ben.train.predict import run_predict

    options = make_options(PredictOptions, checkpoint=checkpoint, image=image, output=output, kind=kind, stride=stride,
                           bands=tuple(b for b in bands.split(",") if b.strip()) if bands else None, boa_offset=boa_offset,
                           thresholds=thresholds, batch_size=batch_size, device=device)
    result = run_predict(options, progress=_common.progress())
    if as_json:
        typer.echo(json.dumps({
            "output": str(result.output), "preview": str(result.preview) if result.preview else None,
            "item": str(result.item) if result.item else None, "kind": result.kind, "shape": list(result.shape),
            "cell_size": result.cell_size, "windows": result.windows, "nodata_windows": result.nodata_windows,
            "boa_offset": result.boa_offset, "class_frequency": result.class_frequency,
        }))
        return
    top = sorted(result.class_frequency.items(), key=lambda item: -item[1])[:5]
    _common.out.print(f"{result.kind} raster {result.shape[0]} x {result.shape[1]} cells of {result.cell_size:g} m "
                      f"({result.windows} windows, {result.nodata_windows} nodata; BOA offset {result.boa_offset:g})")
    _common.out.print("most frequent: " + ", ".join(f"{name} {100 * share:.0f}%" for name, share in top))
    _common.out.print(f"raster   {result.output}")
    if result.preview is not None:
        _common.out.print(f"preview  {result.preview}")
    if result.item is not None:
        _common.out.print(f"item     {result.item}")
