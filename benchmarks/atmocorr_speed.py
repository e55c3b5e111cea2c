"""Speed of ``eotwin atmocorr run`` on a full Sentinel-2 tile: AI vs 6S-table inversion (DDV) vs DOS.

Makes a synthetic full-size L1C stack (``--size`` pixels per side, default 10980 at 10 m, all 13
bands, uint16 DN with RADIO_ADD_OFFSET -1000, angle and spacecraft tags): the sample scene's surface
(1098 px) pushed through the 6S table once and mirrored over the tile block by block
(:func:`eotwin.atmocorr.sample_l1c.make_tiled_l1c`), so its exact surface is known everywhere.
Then it corrects it end to end (``run_correction``: read, estimate the atmosphere, correct, write the
L2A COG stack, TCI GeoTIFF + PNG, AOT map when the method maps it, STAC item) once per method, each
in a fresh process so that its peak RSS is its own, and prints seconds, CPU seconds, megapixels per
second, peak RSS, the time per phase, the accuracy against the known surface on two 1024 px windows,
the 6S-ddv / AI time ratio, and whether the goals (a full tile in at most 3 minutes on a 2-core
machine, peak RSS at most 2 GB) are met. ``--core`` also times the correction cores alone in memory.

sen2cor is not runnable here (no ESA installation, no internet). For scale: the original DeltaTwin AI
project measured about 35 minutes per tile for sen2cor, which needs up to 4 GB of RAM (its v2.8
release notes); see ``../shared/docs/FACTS.md``.

Usage: ``.venv/bin/python benchmarks/atmocorr_speed.py [--size 10980] [--methods ai,6s-ddv,dos]
[--workdir DIR (keeps and reuses the synthetic tile)] [--model ONNX] [--core]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEN2COR_MINUTES_PER_TILE = 35  # FACTS.md: the original project's benchmark
FULL_TILE_MPX = 10980**2 / 1e6
GOAL_MINUTES = 3.0
GOAL_RSS_MB = 2048


class PhaseTimer:
    """A ProgressReporter that records how long each task of the pipeline takes."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def task(self, description: str, total: float | None):
        t0 = time.perf_counter()

        class _Task:
            def advance(self, amount: float = 1) -> None:
                return None

        try:
            yield _Task()
        finally:
            self.phases.append((description, time.perf_counter() - t0))


def one_run(l1c: str, out: str, method: str, model: str = "", block_rows: str = "0") -> None:
    """Child process: one end-to-end run; prints a JSON line."""
    from eotwin.atmocorr.pipeline import make_options, run_correction

    timer = PhaseTimer()
    t0 = time.perf_counter()
    c0 = os.times()
    extra: dict[str, object] = {"model": model} if model and method == "ai" else {}
    if method == "ai":  # time the AI itself: the mirrored sample scene is out of its distribution, and the run
        extra["ood_fallback"] = False  # would fall back to 6s-ddv (the OOD score is computed either way)
    if int(block_rows):
        extra["block_rows"] = int(block_rows)
    result = run_correction(make_options(input=l1c, output=out, method=method, **extra), timer)
    seconds = time.perf_counter() - t0
    c1 = os.times()
    print(
        json.dumps(
            {
                "method": method,
                "seconds": seconds,
                "cpu_seconds": (c1.user - c0.user) + (c1.system - c0.system),
                "megapixels": result.megapixels,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "phases": timer.phases,
                "atmosphere": {k: v for k, v in result.atmosphere.items() if isinstance(v, int | float | str)},
                "files": {k: os.path.getsize(v) for k, v in result.files.items()},
            }
        )
    )


def accuracy(tile, l2a: Path, side: int = 1024) -> float:
    """Mean per-band RMSE of the written L2A against the known surface on two windows (corner, centre)."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from eotwin.sentinel2.bands import L2A_BANDS, S2_BANDS
    from eotwin.sentinel2.radiometry import dn_to_boa

    idx = [S2_BANDS.index(b) for b in L2A_BANDS]
    side = min(side, tile.size)
    errors = []
    with rasterio.open(l2a) as ds:
        for r, c in ((0, 0), ((tile.size - side) // 2, (tile.size - side) // 2)):
            pred = dn_to_boa(ds.read(window=Window(c, r, side, side)))
            truth = tile.surface(r, c, side, side)[idx]
            ok = np.isfinite(pred).all(0) & np.isfinite(truth).all(0)
            errors.append((pred[:, ok] - truth[:, ok]) ** 2)
    return float(np.mean(np.sqrt(np.concatenate(errors, axis=1).mean(axis=1))))


def core_speed(tile, methods: list[str]) -> dict[str, float | str]:
    """Pixels per second of the correction cores on an in-memory TOA of the base scene (12 bands)."""
    import numpy as np

    from eotwin.atmocorr import dark_object, dark_vegetation
    from eotwin.atmocorr.lut import load_lut
    from eotwin.atmocorr.sample_l1c import simulate_toa
    from eotwin.sentinel2.bands import L2A_BANDS, S2_BANDS, normalise_sensor

    lut = load_lut()
    geo = tile.geometry
    surface = tile.base_surface[[S2_BANDS.index(b) for b in L2A_BANDS]]
    toa = simulate_toa(surface, lut, sensor=normalise_sensor(tile.spacecraft), aerosol="continental", aot=0.2,
                       wv=1.5, o3=0.33, bands=L2A_BANDS, **geo)  # fmt: skip
    n = toa.shape[1] * toa.shape[2]
    raa = abs(geo["sun_azimuth"] - geo["view_azimuth"])
    out: dict[str, float | str] = {}
    for method in methods:
        t0 = time.perf_counter()
        try:
            if method == "ai":
                from eotwin.atmocorr.ai.onnx_infer import OnnxModel

                angles = np.array([geo["sun_zenith"], geo["view_zenith"], raa], np.float32)[:, None, None]
                OnnxModel().predict(toa, np.broadcast_to(angles, (3, *toa.shape[1:])))
            elif method == "6s-ddv":
                dark_vegetation.ddv_correction(toa, L2A_BANDS, lut, sensor="S2A", sza=geo["sun_zenith"],
                                         vza=geo["view_zenith"], raa=raa)  # fmt: skip
            elif method == "dos":
                dark_object.dark_object_subtraction(toa, bands=L2A_BANDS)
        except Exception as exc:  # the AI's in-memory API may change; the end-to-end figures still stand
            out[method] = f"n/a ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
            continue
        out[method] = n / (time.perf_counter() - t0)
    return out


def make_tile(workdir: Path, size: int, compress: str):
    """The synthetic tile in ``workdir``, reused when one of that size is already there."""
    from eotwin.atmocorr.sample_l1c import TILE_BASE, TiledL1C, make_tiled_l1c
    from eotwin.progress import RichProgress

    existing = workdir / "l1c_stack.tif"
    if existing.exists():
        import rasterio

        with rasterio.open(existing) as ds:
            if ds.width == size and ds.tags().get("PRODUCT_ID") == f"EOTWIN_SAMPLE_L1C_TILE_{size}":
                from eotwin.atmocorr.sample_l1c import DEFAULT_ATMOSPHERE, DEFAULT_GEOMETRY
                from eotwin.sample.scene import make_scene

                surface = make_scene(size=min(TILE_BASE, size)).surface_reflectance.astype("float32")
                print(f"reusing {existing}")
                return TiledL1C(existing, size, surface, dict(DEFAULT_ATMOSPHERE), dict(DEFAULT_GEOMETRY))
    return make_tiled_l1c(workdir, size=size, compress=compress, progress=RichProgress(sys.stderr.isatty()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980, help="pixels per side (10980: a full tile)")
    parser.add_argument("--methods", default="ai,6s-ddv,dos")
    parser.add_argument("--workdir", type=Path, help="keep the synthetic tile here and reuse it")
    parser.add_argument("--input-compress", default="deflate", choices=("deflate", "zstd", "lzw"))
    parser.add_argument("--core", action="store_true", help="also time the correction cores in memory")
    parser.add_argument("--model", default="", help="ai: model file (default: the committed one)")
    parser.add_argument("--block-rows", type=int, default=0, help="rows per block (default: the pipeline's choice)")
    parser.add_argument("--one", nargs=5, metavar=("L1C", "OUT", "METHOD", "MODEL", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_run(*args.one)
        return
    methods = args.methods.split(",")
    load_start = os.getloadavg()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eotwin-atmocorr-bench-", dir=args.workdir) as tmp:
        workdir = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        tile = make_tile(workdir, args.size, args.input_compress)
        mb = tile.l1c.stat().st_size / 2**20
        print(f"synthetic L1C stack {args.size} x {args.size} px, 13 bands, 10 m ({mb:.0f} MiB, "
              f"{args.input_compress}): ready in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        results = {}
        for method in methods:
            out = Path(tmp) / f"out-{method}"
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(tile.l1c), str(out), method, args.model, str(args.block_rows)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                print(f"{method}: failed\n{proc.stderr[-2000:]}")
                continue
            results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[method]["mean_rmse"] = accuracy(tile, out / "l2a.tif")
            shutil.rmtree(out, ignore_errors=True)  # a full tile's outputs are 0.7 GB per method
        load_end = os.getloadavg()
        print(f"\nend to end (read the L1C stack, estimate, correct, write COG L2A + TCI tif/png + AOT + STAC), "
              f"{args.size}^2 px = {args.size**2 / 1e6:.1f} Mpx, {os.cpu_count()} CPUs, "
              f"load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end")  # fmt: skip
        print(f"{'method':8s} {'seconds':>8s} {'CPU s':>7s} {'Mpx/s':>7s} {'peak RSS MB':>12s} "
              f"{'full tile min':>14s} {'mean RMSE':>10s} {'vs ai':>7s}")  # fmt: skip
        base = results.get("ai", {}).get("seconds")
        for method, r in results.items():
            mpx_s = r["megapixels"] / r["seconds"]
            ratio = f"{r['seconds'] / base:.2f}x" if base else "-"
            print(f"{method:8s} {r['seconds']:8.1f} {r['cpu_seconds']:7.1f} {mpx_s:7.3f} {r['peak_rss_mb']:12.0f} "
                  f"{FULL_TILE_MPX / mpx_s / 60:14.2f} {r['mean_rmse']:10.4f} {ratio:>7s}")  # fmt: skip
        print("\ntime per phase (s):")
        for method, r in results.items():
            phases = ", ".join(f"{name.split(' (')[0]} {sec:.1f}" for name, sec in r["phases"])
            rest = r["seconds"] - sum(sec for _, sec in r["phases"])
            print(f"  {method:8s} {phases}, other (open, PNG, STAC) {rest:.1f}")
        if "ai" in results and "6s-ddv" in results:
            print(f"\n6S-table inversion (6s-ddv) / AI time on the same input: "
                  f"{results['6s-ddv']['seconds'] / results['ai']['seconds']:.2f}")  # fmt: skip
        for method, r in results.items():
            tile_min = FULL_TILE_MPX / (r["megapixels"] / r["seconds"]) / 60
            print(f"goals {method:8s}: full tile {tile_min:.2f} min <= {GOAL_MINUTES:g} min: "
                  f"{'met' if tile_min <= GOAL_MINUTES else 'NOT met'}; peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"<= {GOAL_RSS_MB} MB: {'met' if r['peak_rss_mb'] <= GOAL_RSS_MB else 'NOT met'}")  # fmt: skip
        print(f"(sen2cor, not runnable here: about {SEN2COR_MINUTES_PER_TILE} min per tile per FACTS.md)")
        if args.core:
            print("\ncorrection cores alone, in memory (pixels per second):")
            for method, pps in core_speed(tile, methods).items():
                if isinstance(pps, str):
                    print(f"{method:8s} {pps}")
                else:
                    print(f"{method:8s} {pps:12,.0f}   (a full 10980^2 tile: {10980**2 / pps / 60:6.1f} min)")


if __name__ == "__main__":
    main()
