"""Atmospheric correction over high ground: scenes made by 6S itself with the target at 0-3 km, corrected
as if at sea level and with the ground's height (``--elevation``), by ``ai`` and ``6s-ddv``.

Each scene: six held-out BigEarthNet test patches mosaicked (as :mod:`eotwin.atmocorr.evaluation.heldout`),
an atmosphere drawn from the training ranges with a uniform AOT, TOA from 6S's own terms at the target
altitude plus sensor noise. Methods: ``ai`` (the network, no OOD fallback: what it does itself) told sea
level and told the height (:meth:`OnnxModel.use_elevation`: the network reads the TOA the ground would give
at sea level, the inversion takes the ground's table); ``6s-ddv`` with the sea-level table and with the
ground's (``--elevation``). Prints per height the mean RMSE over B02-B8A, B11, B12 (mean over scenes), the
network's scene AOT against the truth, and its OOD score on what it reads (threshold beside the model).

Usage: ``.venv/bin/python benchmarks/atmocorr_altitude.py [--heights 0,1,2,3] [--scenes 5] [--seed 77]``
(12 6S runs per scene, about 5 s each scene).
"""

from __future__ import annotations

import argparse

import numpy as np

MEAN_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
METHODS = ("ai, sea level", "ai --elevation", "6s-ddv, sea level", "6s-ddv --elevation")


def main() -> None:
    from eotwin.atmocorr.ai import ood, synth
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.evaluation.heldout import TestScene, ddv_result, mosaic, scene_angles, sixs_terms
    from eotwin.atmocorr.lut import load_lut
    from eotwin.atmocorr.physics import forward_gain
    from eotwin.atmocorr.terrain import pressure_ratio
    from eotwin.progress import RichProgress
    from eotwin.sentinel2.bands import L2A_BANDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heights", default="0,1,2,3", help="target altitudes, km (comma-separated)")
    parser.add_argument("--scenes", type=int, default=5, help="scenes per height")
    parser.add_argument("--seed", type=int, default=77)
    args = parser.parse_args()
    heights = [float(h) for h in args.heights.split(",") if h.strip()]
    if not heights or min(heights) < 0 or max(heights) > 5 or args.scenes < 1:
        raise SystemExit("error: --heights must lie within 0-5 km and --scenes be at least 1")
    lut, model = load_lut(), OnnxModel()
    stats = ood.load_statistics(ood.stats_path(model.path))
    surfaces = list(synth.ben_surfaces(None, synth.TEST_SPLITS).values())
    scored = [L2A_BANDS.index(b) for b in MEAN_BANDS]
    rows = []
    progress = RichProgress()
    with progress.task("6S scenes over high ground", total=len(heights) * args.scenes) as task:
        for z in heights:
            rng = np.random.default_rng(args.seed)  # the same surfaces and atmospheres at every height
            ground = lut.at_pressure(float(pressure_ratio(z * 1000.0)))
            errors, aots, scores = {m: [] for m in METHODS}, [], []
            for _ in range(args.scenes):
                surface = mosaic(surfaces, rng)
                atm = synth.sample_atmosphere(rng, lut)
                path, gain, s_alb = sixs_terms(atm, altitude_km=z)
                toa = synth.add_noise(forward_gain(surface.astype(np.float64), path, gain, s_alb).astype(np.float32),
                                      rng)
                scene = TestScene(toa, surface, np.full(surface.shape[1:], atm.aot, np.float32), atm, "6s")
                angles = scene_angles(scene)
                boa = {}
                for name, elevation in (("ai, sea level", None), ("ai --elevation", z * 1000.0)):
                    model.use_elevation(elevation)
                    boa[name], aot = model.predict(toa, angles, sensor=atm.sensor, ozone=atm.o3)
                    if elevation is not None:
                        aots.append((atm.aot, float(np.nanmean(aot))))
                        scores.append(ood.scene_score(model.sea_level_toa(toa, angles, atm.sensor), angles, lut,
                                                      atm.sensor, stats)[0])
                model.use_elevation(None)
                boa["6s-ddv, sea level"] = ddv_result(scene, lut).boa
                boa["6s-ddv --elevation"] = ddv_result(scene, ground).boa
                for name, b in boa.items():
                    errors[name].append(float(np.sqrt(np.nanmean((b - surface) ** 2, axis=(1, 2)))[scored].mean()))
                task.advance()
            rows.append((z, {m: float(np.mean(v)) for m, v in errors.items()}, aots, scores))
    print(f"scenes made by 6S at target altitude ({args.scenes} per height, seed {args.seed}); mean RMSE over "
          f"{' '.join(MEAN_BANDS)}, mean over scenes")
    print(f"{'height':>6}  " + "  ".join(f"{m:>18}" for m in METHODS))
    for z, means, _, _ in rows:
        print(f"{z:>4.1f} km  " + "  ".join(f"{means[m]:>18.4f}" for m in METHODS))
    print(f"network's scene AOT with --elevation (truth -> read) and its OOD score (threshold {stats.threshold}):")
    for z, _, aots, scores in rows:
        pairs = ", ".join(f"{t:.3f}->{r:.3f}" for t, r in aots)
        print(f"{z:>4.1f} km  AOT {pairs}; OOD {', '.join(f'{s:.2f}' for s in scores)}")
    for z, means, _, _ in rows:
        if z > 0:
            print(f"{z:.1f} km: ai --elevation / ai at sea level = {means['ai --elevation'] / means['ai, sea level']:.2f}")


if __name__ == "__main__":
    main()
