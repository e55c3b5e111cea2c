"""``eotwin atmocorr train``: train the AI correction on 6S-simulated scenes (CPU) and export it to ONNX."""

from __future__ import annotations

from pathlib import Path

import typer

from eotwin.cli import _common
from eotwin.cli.atmocorr import app


@app.command("train")
def train_command(
    output: Path = typer.Option(None, "--output", "-o", help="ONNX file to write (default: the committed model "
                                "src/eotwin/atmocorr/data/ai_atmocorr.onnx); the weights go beside it as .pt."),
    steps: int | None = typer.Option(None, "--steps", help="Optimiser steps (fresh simulated scenes every step; "
                                     "default 1500, with --pairs 60)."),
    batch: int = typer.Option(8, "--batch", help="Scenes per step."),
    mosaic: str = typer.Option("2x2", "--mosaic", help="Scene layout: ROWSxCOLS BigEarthNet patches of 120 px."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (cosine decay; default 3e-3, with --pairs 1e-3)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (scenes, atmospheres, initial weights)."),
    max_minutes: float = typer.Option(18.0, "--max-minutes", help="Stop after this many minutes even if steps remain."),
    threads: int | None = typer.Option(None, "--threads", help="Torch CPU threads (default 1: fastest on a shared machine)."),
    lut: Path | None = typer.Option(None, "--lut", help="6S look-up table (default: the committed one)."),
    ben_dir: Path | None = typer.Option(None, "--ben-dir", help="BigEarthNet v2 source (default: .eotwin-data/BENv2)."),
    init: Path | None = typer.Option(None, "--init", help="Continue from these weights (.pt of an earlier run)."),
    sources: str = typer.Option("ben", "--sources", help="Surface sources, comma-separated: ben, majortom, enmap, prosail, "
                                "sahara, water (docs/atmocorr-ai.md)."),
    hold_out: str | None = typer.Option(None, "--hold-out", help="Leave this source out of --sources (its "
                                        "leave-one-source-out fold)."),
    windows: str = typer.Option("5,17", "--windows", help="Context windows in cells of 60 m, odd sizes, comma-separated."),
    attention: int = typer.Option(8, "--attention", help="Attention-pooling heads (0: window means and minima only)."),
    hypotheses: int = typer.Option(2, "--hypotheses", help="Hypothesis features: 0 none, 1 continental, 2 both aerosol models."),
    workers: int = typer.Option(1, "--workers", help="Processes simulating the next batches while torch trains "
                                "(0: inline; the committed model used 2 on a 2-core machine)."),
    pairs: Path | None = typer.Option(None, "--pairs", help="Fine-tune --init (default: the committed weights) on "
                                      "the real pairs DIR/<pair_id>/{l1c.tif,l2a.tif,pair.json} instead."),
    scl: str = typer.Option("4,5", "--scl", help="With --pairs: SCL classes whose pixels count (6: water too)."),
    as_json: bool = typer.Option(False, "--json", help="With --pairs: print the before/after summary as JSON."),
) -> None:
    """Train the AI atmospheric correction on simulated scenes: real surfaces + sampled 6S atmospheres."""
    from eotwin.atmocorr.ai.train import TrainOptions, train
    from eotwin.errors import EotwinError
    from eotwin.options import validated

    if pairs is not None:
        from eotwin.cli.atmocorr.finetune import run_finetune

        run_finetune(pairs=pairs, output=output, init=init, steps=steps, lr=lr, seed=seed, max_minutes=max_minutes,
                     threads=threads, lut=lut, scl=scl, as_json=as_json)
        return
    if as_json:
        raise EotwinError("--json is only for fine-tuning (--pairs)")
    try:
        layout = tuple(int(v) for v in mosaic.lower().split("x"))
    except ValueError:
        raise EotwinError(f"--mosaic must look like 2x2, got {mosaic!r}") from None
    try:
        window_sizes = tuple(int(v) for v in windows.split(","))
    except ValueError:
        raise EotwinError(f"--windows must look like 5,17, got {windows!r}") from None
    from eotwin.atmocorr.ai.surfaces import loso_split, parse_sources

    names = parse_sources(sources)
    if hold_out is not None:
        names = loso_split(names, hold_out.strip().lower())[0]
    values = dict(sources=names, windows=window_sizes, attention=attention, hypotheses=hypotheses,
                  steps=1500 if steps is None else steps, batch=batch, layout=layout, lr=3e-3 if lr is None else lr,
                  seed=seed, max_minutes=max_minutes, lut=lut, ben_dir=ben_dir, init=init,
                  threads=threads or 1, workers=workers)
    if output is not None:
        values["output"] = output
    options = validated(TrainOptions, **values)
    result = train(options, progress=_common.progress())
    _common.say(f"{result.steps} steps in {result.seconds:.0f} s, final loss {result.final_loss:.4f}")
    _common.out.print(f"validation BOA RMSE {result.validation['boa_rmse']:.4f}, "
                      f"AOT log RMSE {result.validation['aot_log_rmse']:.3f}")
    _common.out.print(f"onnx      {result.onnx_path}")
    _common.out.print(f"weights   {result.weights_path}")
