"""Accuracy of the AI correction on held-out surfaces and atmospheres, next to the 6S oracle, 6S + DDV, DOS
and no correction (see :mod:`eotwin.atmocorr.ai.evaluate` for how the test scenes are made).

Prints the RMSE table per band for table-made scenes and, with ``--sixs N``, for N scenes whose TOA
comes from the real 6S code; the acceptance check of issue 6 (RMSE <= 0.005 on B02-B8A, <= 0.01 on
B11-B12, better than DOS and DDV on every band); speeds; and writes ``evaluation_ai.json`` and
``evaluation_ai.png`` into ``--output``.

Usage: ``.venv/bin/python benchmarks/atmocorr_accuracy.py [--scenes 16] [--sixs 4] [-o OUTDIR]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    from eotwin.atmocorr.ai.evaluate import EvaluateOptions, evaluate, format_table
    from eotwin.progress import RichProgress

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--sixs", type=int, default=0, help="scenes made with the real 6S code")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("-o", "--output", type=Path, default=Path("atmocorr_accuracy"))
    args = parser.parse_args()
    t0 = time.perf_counter()
    report = evaluate(
        EvaluateOptions(output=args.output, scenes=args.scenes, sixs_scenes=args.sixs, seed=args.seed,
                        model=args.model),
        progress=RichProgress(),
    )
    print(format_table(report, "table"))
    if args.sixs:
        print()
        print(format_table(report, "6s"))
    print(f"\nAI AOT map: RMSE {report['ai_aot']['rmse']:.3f}, bias {report['ai_aot']['bias']:+.3f}")
    print("\nacceptance (table-made scenes): band, AI RMSE, target met, beats DOS, beats DDV")
    for band, a in report["acceptance"].items():
        target = "-" if a["meets_target"] is None else ("yes" if a["meets_target"] else "NO")
        print(f"{band:5s} {a['ai_rmse']:.4f}  {target:4s} {'yes' if a['beats_dos'] else 'NO':4s} "
              f"{'yes' if a['beats_ddv'] else 'NO'}")
    print(f"\nwrote {args.output / 'evaluation_ai.json'} and {args.output / 'evaluation_ai.png'} "
          f"in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
