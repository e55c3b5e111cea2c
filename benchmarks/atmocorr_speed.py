"""Speed of the atmospheric corrections: AI (onnxruntime) vs 6S-table inversion with DDV vs DOS.

Makes an L1C stack of the sample scene (``--size`` pixels per side, default 1098 at 10 m: a
hundredth of a full 10980 x 10980 px tile) with a known 6S atmosphere,
then runs ``eotwin atmocorr run`` end to end once per method, each in a fresh process so its peak
RSS is its own, and prints seconds, megapixels per second, peak RSS and the accuracy against the
known surface, plus the ratio of every method to the AI. ``--core`` also times the correction
cores alone on the in-memory TOA (no GeoTIFF reading or writing).

sen2cor is not runnable here (no ESA installation, no internet). For scale: the original DeltaTwin AI
project measured about 35 minutes per tile for sen2cor, which needs up to 4 GB of RAM (its v2.8
release notes); see ``../shared/docs/FACTS.md``.

Usage: ``.venv/bin/python benchmarks/atmocorr_speed.py [--size 1098] [--methods ai,6s-ddv,dos] [--core]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEN2COR_MINUTES_PER_TILE = 35  # FACTS.md: the original project's benchmark


def one_run(l1c: str, truth: str, out: str, method: str) -> None:
    """Child process: one end-to-end run; prints a JSON line."""
    from eotwin.atmocorr.pipeline import make_options, run_correction

    t0 = time.perf_counter()
    result = run_correction(make_options(input=l1c, output=out, method=method, reference=truth))
    seconds = time.perf_counter() - t0
    corrected = result.metrics["corrected"] if result.metrics else {}
    print(json.dumps({
        "method": method,
        "seconds": seconds,
        "megapixels": result.megapixels,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "mean_rmse": corrected.get("mean_rmse"),
        "toa_mean_rmse": result.metrics["toa_unchanged"]["mean_rmse"] if result.metrics else None,
    }))


def core_speed(made, methods: list[str]) -> dict[str, float]:
    """Pixels per second of the correction cores on the in-memory TOA (12 bands)."""
    import numpy as np

    from eotwin.atmocorr import baselines
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.lut import load_lut
    from eotwin.atmocorr.products import L2A_BANDS
    from eotwin.atmocorr.sample_l1c import simulate_toa
    from eotwin.atmocorr.srf import normalise_sensor

    lut = load_lut()
    geo = made.geometry
    toa = simulate_toa(made.surface[[i for i in range(13) if i != 10]], lut, sensor=normalise_sensor(made.spacecraft),
                       aerosol="continental", aot=0.2, wv=1.5, o3=0.33, bands=L2A_BANDS, **geo)
    n = toa.shape[1] * toa.shape[2]
    raa = abs(geo["sun_azimuth"] - geo["view_azimuth"])
    out = {}
    for method in methods:
        t0 = time.perf_counter()
        if method == "ai":
            angles = np.array([geo["sun_zenith"], geo["view_zenith"], raa], np.float32)[:, None, None]
            OnnxModel().predict(toa, np.broadcast_to(angles, (3, *toa.shape[1:])))
        elif method == "6s-ddv":
            baselines.ddv_correction(toa, L2A_BANDS, lut, sensor="S2A", sza=geo["sun_zenith"],
                                     vza=geo["view_zenith"], raa=raa)
        elif method == "dos":
            baselines.dark_object_subtraction(toa, bands=L2A_BANDS)
        out[method] = n / (time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1098)
    parser.add_argument("--methods", default="ai,6s-ddv,dos")
    parser.add_argument("--core", action="store_true", help="also time the correction cores in memory")
    parser.add_argument("--one", nargs=4, metavar=("L1C", "TRUTH", "OUT", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_run(*args.one)
        return
    from eotwin.atmocorr.sample_l1c import make_sample_l1c

    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory(prefix="eotwin-atmocorr-bench-") as tmp:
        t0 = time.perf_counter()
        made = make_sample_l1c(Path(tmp) / "in", size=args.size)
        print(f"sample L1C stack {args.size} x {args.size} px (13 bands, 10 m) made in {time.perf_counter() - t0:.1f} s")
        results = {}
        for method in methods:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(made.l1c), str(made.truth), str(Path(tmp) / method), method],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                print(f"{method}: failed\n{proc.stderr[-2000:]}")
                continue
            results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"\nend to end (read L1C stack, correct, write COG L2A + TCI + STAC + evaluation), {args.size}^2 px")
        print(f"{'method':8s} {'seconds':>8s} {'Mpx/s':>7s} {'peak RSS MB':>12s} {'mean RMSE':>10s} {'vs ai':>7s}")
        base = results.get("ai", {}).get("seconds")
        for method, r in results.items():
            ratio = f"{r['seconds'] / base:.2f}x" if base else "-"
            print(f"{method:8s} {r['seconds']:8.2f} {r['megapixels'] / r['seconds']:7.3f} {r['peak_rss_mb']:12.0f} "
                  f"{r['mean_rmse']:10.4f} {ratio:>7s}")
        if results:
            print(f"(TOA left unchanged: mean RMSE {next(iter(results.values()))['toa_mean_rmse']:.4f})")
        if "ai" in results:
            mpx_s = results["ai"]["megapixels"] / results["ai"]["seconds"]
            tile_min = 10980**2 / 1e6 / mpx_s / 60
            print(f"AI extrapolated to a full 10980^2 tile at 10 m: {tile_min:.1f} min "
                  f"(sen2cor, not runnable here: about {SEN2COR_MINUTES_PER_TILE} min per tile per FACTS.md)")
        if args.core:
            print("\ncorrection cores alone, in memory (pixels per second):")
            for method, pps in core_speed(made, methods).items():
                print(f"{method:8s} {pps:12,.0f}   (a full 10980^2 tile: {10980**2 / pps / 60:6.1f} min)")


if __name__ == "__main__":
    main()
