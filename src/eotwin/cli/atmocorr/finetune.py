"""``eotwin atmocorr train --pairs DIR``: fine-tune the atmosphere network on real L1C/L2A pairs.

Not a command of its own: ``train`` hands over here when ``--pairs`` is given (the same model, the same
``-o``), so this module only parses, calls :func:`eotwin.atmocorr.ai.finetune.finetune` and prints.
"""

from __future__ import annotations

import json
from pathlib import Path

from eotwin.cli import _common
from eotwin.errors import EotwinError


def run_finetune(*, pairs: Path, output: Path | None, init: Path | None, steps: int | None, lr: float | None,
                 seed: int, max_minutes: float, threads: int | None, lut: Path | None, scl: str,
                 as_json: bool) -> None:
    """Parse the options the fine-tuning shares with ``train``, run it, print the before/after figures."""
    from eotwin.atmocorr.ai.finetune import FinetuneOptions, finetune
    from eotwin.options import validated

    if output is None:
        raise EotwinError("--pairs needs -o/--output MODEL.onnx (fine-tuning never replaces the committed model)")
    try:
        classes = tuple(int(v) for v in scl.split(","))
    except ValueError:
        raise EotwinError(f"--scl must look like 4,5 (SCL classes), got {scl!r}") from None
    values: dict = dict(pairs=pairs, output=output, seed=seed, max_minutes=max_minutes, threads=threads or 1,
                        lut=lut, scl=classes)
    values.update({k: v for k, v in (("init", init), ("steps", steps), ("lr", lr)) if v is not None})
    options = validated(FinetuneOptions, **values)
    result = finetune(options, progress=_common.progress())
    summary = result.summary
    if as_json:
        _common.out.print_json(json.dumps(summary))
        return
    _common.say(f"{result.steps} steps in {result.seconds:.0f} s on {len(summary['pairs'])} pair(s)")
    _common.say("mean RMSE against the L2A (share within 0.005 + 0.05 x reflectance) on the clear pixels")
    _common.out.print(f"{'pair':28s} {'pixels':>7s} {'TOA':>14s} {'before':>14s} {'after':>14s}   AOT before -> after")
    cell = lambda x: f"{x['mean_rmse']:.4f} ({100 * x['within_spec']:3.0f}%)"  # noqa: E731
    for pair_id, s in summary["pairs"].items():
        _common.out.print(f"{pair_id:28s} {s['clear_pixels']:7d} {cell(s['toa_unchanged']):>14s} "
                          f"{cell(s['before']):>14s} {cell(s['after']):>14s}   "
                          f"{s['before']['atmosphere']['aot']:.3f} -> {s['after']['atmosphere']['aot']:.3f}")
    _common.out.print(f"onnx      {result.onnx_path}")
    _common.out.print(f"weights   {result.weights_path}")
