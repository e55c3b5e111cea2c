"""Does the AI know when it does not know? Its out-of-distribution score next to its error, scene by scene.

Scenes (all made with the 6S table's forward model and sensor noise, :func:`eotwin.atmocorr.ai.synth.simulate`,
atmospheres drawn as in training with a seed of their own):

- ``held-out``: BigEarthNet test-split patches (never trained on) in 2 x 3 mosaics
  (:func:`eotwin.atmocorr.evaluation.heldout.make_test_scenes`): in distribution;
- ``sahara``: crops of the real Sahara L2A tile (sen2cor, T29RKH 2020-02-19, 100 m; 20 m and 60 m bands
  upsampled bilinearly), ``../shared/fixtures/ac/l2a_desert_T29RKH_20200219_riotilerpds``;
- ``water``: the real L2A water and sea-ice patches of ``../shared/fixtures/ac/l2a_hydro_water`` (offsets
  as its README says: -1000 except patch_10; patch_10000, ambiguous there, is taken with -1000);
- ``majortom``: crops of the two real Major-TOM L2A cells (equatorial Africa, South-East Asia) of
  ``../shared/fixtures/s2img/rico-hdl/Major-TOM-Core`` (offset -1000 for N0400; the N9999 cell's offset
  is read from its values);
- ``demo``: the sample scene of ``eotwin atmocorr sample-l1c`` (AOT 0.2, continental: its defaults);
- and, without a reference (score and decision only), the real L1C patches: EuroSAT (``../shared/fixtures/
  s2img/rico-hdl/EuroSAT_MS``, angles not stored: 40/5/90 degrees assumed) and the two Brazilian
  SSL4EO-style patches (``../shared/fixtures/ac/l1c_ssl4eo_style_sig_brazil``, GEE's mean angles).

Printed per scene: the OOD score, whether the pipeline would fall back (score > threshold), the AI's and
6s-ddv's mean RMSE over the 12 bands against the true surface, and the Spearman correlation of the score
with the AI's RMSE. ``--fit`` first recomputes the statistics beside the model: contexts of 240 training
scenes drawn as training draws them, threshold = 1.25 x the highest score of 24 held-out scenes (seed
1000, the evaluation's); the table's held-out scenes use another seed (3000).

Usage: ``.venv/bin/python benchmarks/atmocorr_ood.py [--fit] [--held-out 12] [--json OUT.json]``
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
SAHARA = FIXTURES / "ac" / "l2a_desert_T29RKH_20200219_riotilerpds"
WATER = FIXTURES / "ac" / "l2a_hydro_water"
MAJOR_TOM = FIXTURES / "s2img" / "rico-hdl" / "Major-TOM-Core" / "S2L2A"
EUROSAT = FIXTURES / "s2img" / "rico-hdl" / "EuroSAT_MS"
BRAZIL = FIXTURES / "ac" / "l1c_ssl4eo_style_sig_brazil"
EUROSAT_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
EUROSAT_ANGLES = (40.0, 5.0, 90.0)  # not stored in the patches: a mid-latitude summer sun, near nadir
WATER_OFFSETS = {"patch_0": -1000, "patch_10": 0, "patch_100": -1000, "patch_1000": -1000, "patch_10000": -1000,
                 "patch_1": -1000, "patch_100000": -1000}
CROP = (240, 360)  # the held-out mosaics' size


def read_band_files(folder: Path, offset: float, size: int | None = None) -> np.ndarray:
    """(12, n, n) surface reflectance of one L2A folder with a file per band (B01.tif ...), each band
    resampled bilinearly onto the finest band's grid (or ``size``)."""
    import rasterio
    from rasterio.enums import Resampling

    from eotwin.sentinel2.bands import L2A_BANDS

    if size is None:
        with rasterio.open(folder / "B02.tif") as ds:
            size = ds.width
    out = []
    for band in L2A_BANDS:
        with rasterio.open(folder / f"{band}.tif") as ds:
            out.append(ds.read(1, out_shape=(size, size), resampling=Resampling.bilinear).astype(np.float32))
    dn = np.stack(out)
    return np.where(dn > 0, (dn + offset) / 10000.0, np.nan).astype(np.float32)


def read_stack(path: Path, offset: float) -> np.ndarray:
    """(12, h, w) surface reflectance of a 12-band L2A stack in L2A band order."""
    import rasterio

    with rasterio.open(path) as ds:
        dn = ds.read().astype(np.float32)
    return np.where(dn > 0, (dn + offset) / 10000.0, np.nan).astype(np.float32)


def crops(surface: np.ndarray, n: int, size: tuple[int, int], rng: np.random.Generator) -> list[np.ndarray]:
    h, w = surface.shape[1:]
    out = []
    for _ in range(n):
        r, c = int(rng.integers(0, h - size[0] + 1)), int(rng.integers(0, w - size[1] + 1))
        out.append(surface[:, r : r + size[0], c : c + size[1]])
    return out


def foreign_surfaces(rng: np.random.Generator, per_source: int) -> list[tuple[str, np.ndarray]]:
    """(name, surface) of the foreign sources (see the module docstring)."""
    import rasterio

    out = []
    sahara = read_band_files(SAHARA, 0.0)
    out += [(f"sahara-{i}", s) for i, s in enumerate(crops(sahara, per_source, CROP, rng))]
    for path in sorted(WATER.glob("patch_*.tif"), key=lambda p: int(p.stem.split("_")[1])):
        surface = read_stack(path, WATER_OFFSETS[path.stem])
        out.append((f"water-{path.stem.removeprefix('patch_')}", surface[:, :240, :240]))
    for folder in sorted(MAJOR_TOM.glob("*/*/*")):
        with rasterio.open(folder / "B01.tif") as ds:
            b01 = ds.read(1)
        low = float(np.percentile(b01[b01 > 0], 0.1))
        offset = -1000.0 if "_N0400_" in folder.name or low >= 1000 else 0.0
        cell = read_band_files(folder, offset)
        tile = folder.name.split("_")[5]
        out += [(f"majortom-{tile}-{i}", s) for i, s in enumerate(crops(cell, per_source, CROP, rng))]
    return out


def real_l1c() -> list[tuple[str, np.ndarray, tuple[float, float, float]]]:
    """(name, TOA (12, h, w), (sun zenith, view zenith, relative azimuth)) of the real L1C patches: EuroSAT
    (64 x 64 px, angles assumed) and the two Brazilian SSL4EO-style patches (264 x 264 px, GEE's mean angles)."""
    import rasterio
    from rasterio.enums import Resampling

    from eotwin.atmocorr.physics import relative_azimuth
    from eotwin.sentinel2.bands import L2A_BANDS

    out = []
    for path in sorted(EUROSAT.glob("*/*.tif")):
        with rasterio.open(path) as ds:
            dn = ds.read().astype(np.float32)
        out.append((f"eurosat-{path.stem}", dn[[EUROSAT_ORDER.index(b) for b in L2A_BANDS]] / 10000.0, EUROSAT_ANGLES))
    for folder in sorted(BRAZIL.glob("*/*/")):
        meta = json.loads((folder / "metadata.json").read_text())
        meta = meta.get("properties", meta)
        bands = []
        for band in L2A_BANDS:
            with rasterio.open(folder / f"B{band[1:].lstrip('0')}.tif") as ds:
                bands.append(ds.read(1, out_shape=(264, 264), resampling=Resampling.bilinear).astype(np.float32))
        raa = float(relative_azimuth(meta["MEAN_SOLAR_AZIMUTH_ANGLE"], meta["MEAN_INCIDENCE_AZIMUTH_ANGLE_B8A"]))
        angles = (meta["MEAN_SOLAR_ZENITH_ANGLE"], meta["MEAN_INCIDENCE_ZENITH_ANGLE_B8A"], raa)
        out.append((f"brazil-{folder.name.split('_')[-1]}", np.stack(bands) / 10000.0, angles))
    return out


def scene_row(name: str, toa: np.ndarray, truth: np.ndarray, atm, lut, model, stats, valid=None) -> dict:
    """Score and both methods' mean RMSE for one scene."""
    from eotwin.atmocorr import dark_vegetation
    from eotwin.atmocorr.ai import ood
    from eotwin.atmocorr.evaluation.metrics import band_metrics
    from eotwin.errors import EotwinError

    angles = np.array([atm.sza, atm.vza, atm.raa], np.float32)[:, None, None]
    valid = np.isfinite(toa).all(axis=0) if valid is None else valid
    score, n_cells = ood.scene_score(toa, angles, lut, atm.sensor, stats, valid)
    ai = model.predict(toa, np.broadcast_to(angles, (3, *toa.shape[1:])), valid, sensor=atm.sensor, ozone=atm.o3)[0]
    # the alternatives read from the network's own output: the spread of its AOT over the scene and its
    # uncertainty about the aerosol model, P(maritime) x (1 - P(maritime))
    atmosphere, _ = model.atmosphere(toa, angles, valid, sensor=atm.sensor, ozone=atm.o3)
    p_maritime = atmosphere[3]
    mean = lambda pred: float(np.mean([m["rmse"] for m in band_metrics(pred, truth).values()]))  # noqa: E731
    try:
        ddv = mean(dark_vegetation.ddv_correction(toa, tuple(model.metadata["bands"]), lut, sensor=atm.sensor, sza=atm.sza,
                                            vza=atm.vza, raa=atm.raa, aerosol="continental", o3=atm.o3,
                                            valid=valid).boa)
        ddv_error = ""
    except EotwinError as exc:  # 6s-ddv refuses the scene (e.g. open water: no B8A signal for water vapour)
        ddv, ddv_error = math.nan, str(exc)
    return {"scene": name, "source": name.rsplit("-", 1)[0].split("-T")[0], "score": score, "cells": n_cells, "aerosol": atm.aerosol, "aot": atm.aot,
            "aot_log_spread": float(np.std(np.log(atmosphere[0]))),
            "aerosol_uncertainty": float(np.mean(p_maritime * (1 - p_maritime))),
            "ai_rmse": mean(ai), "ddv_rmse": ddv, "ddv_error": ddv_error, "fallback": bool(score > stats.threshold)}


def spearman(x: list[float], y: list[float]) -> float:
    """Rank correlation over the pairs where both are known (an infinite score ranks highest)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~np.isnan(x) & ~np.isnan(y)
    rank = lambda v: np.argsort(np.argsort(np.nan_to_num(v[keep], posinf=1e9)))  # noqa: E731
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


def fit(lut, model, held_out: int) -> None:
    from eotwin.atmocorr.ai import ood, synth
    from eotwin.atmocorr.ai import surfaces as library
    from eotwin.atmocorr.evaluation import heldout

    t0 = time.perf_counter()
    # the model's training sources (models from before the surface library: BigEarthNet only)
    sources = model.metadata.get("train_sources") or ["ben"]
    surfaces = library.load_sources(sources, split="train")
    stats = ood.fit_statistics(surfaces, lut, model.metadata["config"], spectra=synth.builtin_spectra(),
                               layout=(2, 2))  # train.py's default mosaics (the ONNX metadata does not record it)
    scenes = heldout.make_test_scenes(lut, held_out, seed=1000)
    scores = []
    for s in scenes:
        angles = np.array([s.atmosphere.sza, s.atmosphere.vza, s.atmosphere.raa], np.float32)[:, None, None]
        scores.append(ood.scene_score(s.toa, angles, lut, s.atmosphere.sensor, stats)[0])
    threshold = ood.calibrate_threshold(stats, scores)
    stats.training["model_sha256"] = ood.model_digest(model.path)
    path = ood.write_statistics(ood.stats_path(model.path), stats)
    print(f"fitted {path.name}: {stats.training['contexts']} training contexts of {stats.training['scenes']} scenes, "
          f"{stats.mean.size} features; held-out scores (seed 1000, {len(scores)} scenes) "
          f"mean {np.mean(scores):.3f}, max {np.max(scores):.3f}; threshold {threshold:.3f} "
          f"({time.perf_counter() - t0:.0f} s)")


def main() -> None:
    from eotwin.atmocorr.ai import ood, synth
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.evaluation import heldout
    from eotwin.atmocorr.lut import load_lut
    from eotwin.atmocorr.physics import relative_azimuth
    from eotwin.atmocorr.sample_l1c import DEFAULT_ATMOSPHERE, DEFAULT_GEOMETRY, simulate_toa
    from eotwin.sample.scene import make_scene
    from eotwin.sentinel2.bands import L2A_BANDS, S2_BANDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="recompute the statistics beside the model first")
    parser.add_argument("--calibration-scenes", type=int, default=24)
    parser.add_argument("--held-out", type=int, default=12, help="held-out BigEarthNet scenes in the table")
    parser.add_argument("--per-source", type=int, default=3, help="crops of the Sahara tile and each Major-TOM cell")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    lut = load_lut()
    model = OnnxModel(args.model)
    if args.fit:
        fit(lut, model, args.calibration_scenes)
    stats = ood.load_statistics(ood.stats_path(model.path))
    ood.check_config(stats, model.metadata["config"])
    rows = []
    for i, s in enumerate(heldout.make_test_scenes(lut, args.held_out, seed=3000)):
        rows.append(scene_row(f"held-out-{i}", s.toa, s.boa, s.atmosphere, lut, model, stats))
    rng = np.random.default_rng(4000)
    for name, surface in foreign_surfaces(rng, args.per_source):
        atm = synth.sample_atmosphere(rng, lut)
        surface = np.nan_to_num(surface, nan=0.0)
        valid = surface.max(axis=0) > 0
        toa, _, _ = synth.simulate(surface, atm, lut, rng)
        toa[:, ~valid] = np.nan
        truth = np.where(valid, surface, np.nan)
        rows.append(scene_row(name, toa, truth, atm, lut, model, stats, valid))
    # the demo scene, as `eotwin atmocorr sample-l1c` makes it (no noise: the stack is written exactly)
    scene = make_scene(size=600, seed=42)
    idx = [S2_BANDS.index(b) for b in L2A_BANDS]
    geo, a = DEFAULT_GEOMETRY, DEFAULT_ATMOSPHERE
    toa = simulate_toa(scene.surface_reflectance.astype(np.float32), lut, sensor="S2A", aerosol=str(a["aerosol"]),
                       aot=float(a["aot"]), wv=float(a["wv"]), o3=float(a["o3"]), **geo)[idx]
    valid = ~scene.nodata
    toa[:, ~valid] = np.nan
    atm = synth.Atmosphere("S2A", str(a["aerosol"]), float(a["aot"]), float(a["wv"]), float(a["o3"]),
                           geo["sun_zenith"], geo["view_zenith"],
                           float(relative_azimuth(geo["sun_azimuth"], geo["view_azimuth"])))
    truth = np.where(valid, scene.surface_reflectance[idx], np.nan).astype(np.float32)
    rows.append(scene_row("demo-sample", toa, truth, atm, lut, model, stats, valid))

    print(f"threshold {stats.threshold:.3f} ({stats.calibration.get('rule', '')}; held-out max "
          f"{stats.calibration.get('held_out_max', math.nan):.3f} over {stats.calibration.get('held_out_scenes')} "
          "scenes)")
    print(f"{'scene':22s} {'aerosol':11s} {'AOT':>5s} {'score':>7s} {'cells':>5s} {'AI RMSE':>8s} "
          f"{'DDV RMSE':>8s}  decision")
    for r in rows:
        decision = "fall back to 6s-ddv" if r["fallback"] else "ai"
        print(f"{r['scene']:22s} {r['aerosol']:11s} {r['aot']:5.2f} {r['score']:7.3f} {r['cells']:5d} "
              f"{r['ai_rmse']:8.4f} {r['ddv_rmse']:8.4f}  {decision}"
              + (f" (6s-ddv fails: {r['ddv_error']})" if r["ddv_error"] else ""))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["source"], []).append(r)
    print(f"\n{'source':10s} {'scenes':>6s} {'score':>13s} {'fall back':>9s} {'AI RMSE':>8s} {'DDV RMSE':>8s} "
          f"{'with fallback':>13s}")
    for source, rs in groups.items():
        # what the pipeline gives: 6s-ddv beyond the threshold, the AI where 6s-ddv refuses the scene
        chosen = [r["ddv_rmse"] if r["fallback"] and np.isfinite(r["ddv_rmse"]) else r["ai_rmse"] for r in rs]
        scores = [r["score"] for r in rs]
        print(f"{source:10s} {len(rs):6d} {min(scores):6.2f}-{max(scores):6.2f} {sum(r['fallback'] for r in rs):9d} "
              f"{np.mean([r['ai_rmse'] for r in rs]):8.4f} {np.nanmean([r['ddv_rmse'] for r in rs]):8.4f} "
              f"{np.mean(chosen):13.4f}")
    print(f"\nSpearman correlation of score and AI RMSE over all {len(rows)} scenes: "
          f"{spearman([r['score'] for r in rows], [r['ai_rmse'] for r in rows]):+.2f}; of score and "
          f"AI RMSE - DDV RMSE: {spearman([r['score'] for r in rows], [r['ai_rmse'] - r['ddv_rmse'] for r in rows]):+.2f}")
    for key, label in (("aot_log_spread", "spread of the AI's log AOT"),
                       ("aerosol_uncertainty", "the AI's aerosol-model uncertainty P(1-P)")):
        print(f"Spearman correlation of {label} and AI RMSE: "
              f"{spearman([r[key] for r in rows], [r['ai_rmse'] for r in rows]):+.2f}; and AI RMSE - DDV RMSE: "
              f"{spearman([r[key] for r in rows], [r['ai_rmse'] - r['ddv_rmse'] for r in rows]):+.2f}")
    real = []
    print("\nreal L1C patches (no reference: the score, the decision and the AI's scene-mean AOT)")
    for name, toa, (sza, vza, raa) in real_l1c():
        angles = np.array([sza, vza, raa], np.float32).reshape(3, 1, 1)
        score, cells = ood.scene_score(toa, angles, lut, "S2A", stats)
        atmosphere, _ = model.atmosphere(toa, angles, sensor="S2A")
        real.append({"scene": name, "score": score, "cells": cells, "ai_aot": float(np.mean(atmosphere[0])),
                     "fallback": bool(score > stats.threshold)})
        print(f"{name:26s} score {score:7.3f} over {cells:3d} cells  AI AOT {real[-1]['ai_aot']:.3f}  "
              f"{'fall back to 6s-ddv' if real[-1]['fallback'] else 'ai'}")
    if args.json:
        args.json.write_text(json.dumps({"threshold": stats.threshold, "rows": rows, "real_l1c": real}, indent=1))


if __name__ == "__main__":
    main()
