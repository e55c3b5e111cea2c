"""Atmospheric correction on real Sentinel-2 pairs: every method against sen2cor's L2A, beside TOA unchanged.

For every pair folder in DIR (``DIR/<pair_id>/l1c.tif, l2a.tif, pair.json``, as ``eotwin atmocorr pairs``
writes them; ``--from-fixtures`` first writes the two real sen2r Barbellino pairs there) each method of
the pipeline (``6s-ddv``, ``ai``, ``dos``, ...) runs through ``eotwin.atmocorr.pipeline.run_correction``
and is scored on SCL-clear pixels: RMSE and bias per band, mean RMSE (all shared bands, and issue 13's
set B02-B8A, B11, B12 less those the reference lacks), the share within the L2A specification
|error| <= 0.005 + 0.05 x reflectance, and the bands where it beats "TOA left unchanged". A diagnostic
repeats the mean RMSE on the pixels sen2cor's terrain correction left alone (see
``realpairs.flat_terrain_mask``). ``--eurosat`` adds the three real EuroSAT L1C patches (no reference):
scene AOT of each method and the mean NDVI of vegetation pixels before and after.

Writes ``OUT/atmocorr_real.json`` and ``OUT/atmocorr_real.png``.

Usage: ``.venv/bin/python benchmarks/atmocorr_real.py DIR [--from-fixtures] [--eurosat] [-o OUT]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def pair_table(report: dict, methods: list[str]) -> str:
    """Per band RMSE and bias of TOA unchanged and each method, then the means and the share within spec."""
    from eotwin.atmocorr.realpairs import ISSUE_BANDS, TOA_METHOD

    failed = {c: report["methods"][c]["error"] for c in methods if "error" in report["methods"][c]}
    methods = [c for c in methods if c not in failed]
    cols = [TOA_METHOD, *methods]
    if TOA_METHOD not in report["methods"]:
        return f"pair {report['pair_id']}: every method failed: " + "; ".join(f"{c}: {e}" for c, e in failed.items())
    m = {c: report["methods"][c]["metrics"] for c in cols}
    bands = list(m[TOA_METHOD]["bands"])
    issue = [b for b in ISSUE_BANDS if b in bands]
    first = m[TOA_METHOD]
    aots = ", ".join(f"{c} {_fmt(report['methods'][c]['aot'], '.3f')}" for c in methods)
    lines = [f"pair {report['pair_id']}: {first['pixels']} SCL-clear pixels; scene AOT {aots}",
             f"{'band':6s}" + "".join(f"{c:>18s}" for c in cols), f"{'':6s}" + "      rmse    bias" * len(cols)]
    for b in bands:
        lines.append(f"{b:6s}" + "".join(f"  {m[c]['bands'][b]['rmse']:8.4f} {m[c]['bands'][b]['bias']:+7.4f}"
                                         for c in cols))
    mean = lambda c, names: sum(m[c]["bands"][b]["rmse"] for b in names) / len(names)  # noqa: E731
    lines.append(f"{'mean':6s}" + "".join(f"  {mean(c, bands):8.4f}        " for c in cols) + f"  ({len(bands)} bands)")
    lines.append(f"{'mean*':6s}" + "".join(f"  {mean(c, issue):8.4f}        " for c in cols)
                 + f"  (issue 13's set: {' '.join(issue)})")
    lines.append(f"{'spec':6s}" + "".join(f"  {100 * m[c]['within_spec']:7.1f}%        " for c in cols)
                 + "  (share within 0.005 + 0.05 x refl., mean over bands)")
    for c in methods:
        worse = [b for b in bands if m[c]["bands"][b]["rmse"] >= m[TOA_METHOD]["bands"][b]["rmse"]]
        lines.append(f"  {c}: better than TOA unchanged in {len(bands) - len(worse)}/{len(bands)} bands"
                     + (f" (not in {' '.join(worse)})" if worse else ""))
    for c in methods:
        a = report["methods"][c].get("atmosphere", {})
        said = [f"{k} {a[k]}" for k in ("aot_source", "aerosol", "wv", "wv_source", "wv_edge", "ood_score", "fallback")
                if k in a]
        if said:
            lines.append(f"  {c} atmosphere: " + "; ".join(said))
    for c, error in failed.items():
        lines.append(f"  {c}: FAILED: {error}")
    flat = report.get("flat_terrain")
    if flat:
        lines.append(f"  diagnostic, {flat['pixels']} pixels left alone by sen2cor's terrain correction "
                     "(B12 gain within 4 % of its mode): mean RMSE "
                     + ", ".join(f"{c} {flat['mean_rmse'][c]:.4f}" for c in cols)
                     + "; within spec " + ", ".join(f"{c} {100 * flat['within_spec'][c]:.0f}%" for c in cols)
                     + "; better than TOA in " + ", ".join(
                         f"{c} {sum(flat['rmse'][c][b] < flat['rmse'][TOA_METHOD][b] for b in bands)}/{len(bands)}"
                         + "[not " + " ".join(b for b in bands if flat["rmse"][c][b] >= flat["rmse"][TOA_METHOD][b]) + "]"
                         for c in methods)
                     + "; bias B02/B04/B08 " + ", ".join(
                         f"{c} " + "/".join(f"{flat['bias'][c][b]:+.3f}" for b in ("B02", "B04", "B08"))
                         for c in cols))
        o = flat["oracle"]
        lines.append(f"  diagnostic, flat-terrain oracle (per band the line TOA -> sen2cor BOA fitted on those pixels, "
                     f"applied to all {o['pixels']} clear pixels): mean RMSE {o['mean_rmse']:.4f}, within spec "
                     f"{100 * o['within_spec']:.1f}%, better than TOA unchanged in {len(bands) - len(o['worse_than_toa'])}"
                     f"/{len(bands)} bands" + (f" (not in {' '.join(o['worse_than_toa'])})" if o["worse_than_toa"] else ""))
    return "\n".join(lines)


def flat_terrain(pair, report: dict, methods: list[str]) -> dict | None:
    """Metrics on the pixels sen2cor's terrain correction left alone (see ``realpairs.flat_terrain_mask``)."""
    import numpy as np

    from eotwin.atmocorr.evaluation.metrics import MetricsAccumulator
    from eotwin.atmocorr.realpairs import TOA_METHOD, flat_terrain_mask, read_reflectance
    from eotwin.sentinel2.bands import L2A_BANDS, SCL_CLEAR

    methods = [c for c in methods if "error" not in report["methods"][c]]
    if TOA_METHOD not in report["methods"]:
        return None
    bands = tuple(report["methods"][TOA_METHOD]["metrics"]["bands"])
    idx = [L2A_BANDS.index(b) for b in bands]
    data = read_reflectance(pair)
    mask = flat_terrain_mask(data, SCL_CLEAR) & np.isfinite(data["ref"][idx]).all(axis=0)
    if mask.sum() < 10:
        return None
    i = L2A_BANDS.index("B12")
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = data["ref"][i] / data["toa"][i]
    # for the picture only (not in the JSON): sen2cor's B12 gain and the pixels kept
    report["_maps"] = {"gain": np.where(np.isin(data.get("scl", 4), SCL_CLEAR), gain, np.nan), "flat": mask}
    out = {"pixels": int(mask.sum()), "mean_rmse": {}, "bias": {}}
    # the flat-terrain oracle: per band, the straight line TOA -> BOA that fits sen2cor's own result on those
    # pixels (what a perfect uniform-atmosphere correction can do), applied to every clear pixel
    clear = np.isin(data.get("scl", np.full(mask.shape, SCL_CLEAR[0])), SCL_CLEAR)
    clear &= np.isfinite(data["ref"][idx]).all(axis=0) & np.isfinite(data["toa"][idx]).all(axis=0)
    oracle = np.stack([np.polyval(np.polyfit(data["toa"][k][mask], data["ref"][k][mask], 1), data["toa"][k])
                       for k in idx])
    acc_oracle, acc_toa = MetricsAccumulator(bands), MetricsAccumulator(bands)
    acc_oracle.add(oracle, data["ref"][idx], clear)
    acc_toa.add(data["toa"][idx], data["ref"][idx], clear)
    o, t = acc_oracle.result(), acc_toa.result()
    out["oracle"] = {"pixels": o["pixels"], "mean_rmse": o["mean_rmse"], "within_spec": o["within_spec"],
                     "rmse": {b: v["rmse"] for b, v in o["bands"].items()},
                     "worse_than_toa": [b for b in bands if o["bands"][b]["rmse"] >= t["bands"][b]["rmse"]]}
    for c in [TOA_METHOD, *methods]:
        pred = data["toa"] if c == TOA_METHOD else read_reflectance(pair, Path(report["methods"][c]["l2a"]))["boa"]
        acc = MetricsAccumulator(bands)
        acc.add(pred[idx], data["ref"][idx], mask & np.isfinite(pred[idx]).all(axis=0))
        result = acc.result()
        out["mean_rmse"][c] = result["mean_rmse"]
        out["bias"][c] = {b: v["bias"] for b, v in result["bands"].items()}
        out["rmse"] = {**out.get("rmse", {}), c: {b: v["rmse"] for b, v in result["bands"].items()}}
        out["within_spec"] = {**out.get("within_spec", {}), c: result["within_spec"]}
    return out


def eurosat(fixtures: Path, output: Path, methods: list[str], progress) -> list[dict]:
    """Scene AOT and vegetation NDVI before/after per EuroSAT patch and method."""
    from eotwin.atmocorr.realpairs import correct, eurosat_stacks, scene_aot, vegetation_ndvi
    from eotwin.errors import EotwinError
    from eotwin.sentinel2.bands import L2A_BANDS
    from eotwin.sentinel2.products import open_l1c, open_l2a_reference
    from eotwin.sentinel2.reading import BandReader, toa_scaling

    rows = []
    for folder in eurosat_stacks(fixtures, output / "eurosat_stacks"):
        l1c = open_l1c(folder / "l1c.tif")
        with BandReader({b: l1c.bands[b] for b in L2A_BANDS}, l1c.grid) as reader:
            toa = reader.read(L2A_BANDS, scaling=toa_scaling(l1c, L2A_BANDS))
        for method in methods:
            try:
                result = correct(folder / "l1c.tif", method, output / "eurosat_runs" / folder.name / method,
                                 progress=progress)
            except EotwinError as exc:
                rows.append({"patch": folder.name, "method": method, "error": str(exc),
                             "sun_zenith": l1c.angles.means()["sun_zenith"]})
                continue
            boa_product = open_l2a_reference(result.files["l2a"])
            with BandReader(boa_product.bands, l1c.grid) as reader:
                boa = reader.read(L2A_BANDS, scaling=[(boa_product.offsets[b], boa_product.quantification)
                                                      for b in L2A_BANDS])
            rows.append({"patch": folder.name, "method": method, "aot": scene_aot(result),
                         "aot_source": result.atmosphere.get("aot_source", "AOT map mean" if "aot" in result.files
                                                             else None),
                         "sun_zenith": l1c.angles.means()["sun_zenith"], "ndvi": vegetation_ndvi(toa, boa)})
    return rows


def write_png(path: Path, reports: list[dict], methods: list[str]) -> None:
    from eotwin.report.plotting import pyplot

    plt = pyplot()
    import numpy as np

    from eotwin.atmocorr.realpairs import TOA_METHOD
    from eotwin.io.files import atomic_path

    cols = [TOA_METHOD, *methods]
    fig, axes = plt.subplots(len(reports), 3, figsize=(19, 4.2 * len(reports)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 0.45]})
    for row, report in zip(axes, reports, strict=True):
        if TOA_METHOD not in report["methods"]:
            continue
        bands = list(report["methods"][TOA_METHOD]["metrics"]["bands"])
        x = np.arange(len(bands))
        width = 0.8 / len(cols)
        for k, c in enumerate(cols):
            if "metrics" not in report["methods"].get(c, {}):
                continue
            m = report["methods"][c]["metrics"]["bands"]
            label = "TOA unchanged" if c == TOA_METHOD else c
            row[0].bar(x + (k - len(cols) / 2 + 0.5) * width, [m[b]["rmse"] for b in bands], width, label=label)
            row[1].bar(x + (k - len(cols) / 2 + 0.5) * width, [m[b]["bias"] for b in bands], width, label=label)
        maps = report.get("_maps")
        if maps is not None:
            im = row[2].imshow(maps["gain"], cmap="viridis", vmin=0.8, vmax=1.8)
            row[2].contour(maps["flat"].astype(float), levels=[0.5], colors="w", linewidths=0.8)
            fig.colorbar(im, ax=row[2], fraction=0.08)
        row[2].set_title("sen2cor B12 BOA/TOA (clear px);\nwhite: terrain left alone", fontsize=9)
        row[2].set_axis_off()
        for ax, what in zip(row[:2], ("RMSE", "bias (method - sen2cor L2A)"), strict=True):
            ax.set_xticks(x, bands)
            ax.set_ylabel(f"{what}, reflectance")
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(f"{report['pair_id']}: {what}", fontsize=10)
        row[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def main() -> int:
    from eotwin.atmocorr.correctors import default_method
    from eotwin.atmocorr.realpairs import (
        AT_ELEVATION_METHODS,
        ELEVATION_SUFFIX,
        FIXED_AOT_PREFIX,
        TOA_METHOD,
        barbellino_pairs,
        benchmark_methods,
        evaluate_pair,
        list_pairs,
    )
    from eotwin.errors import EotwinError
    from eotwin.io.files import ensure_writable_dir, write_json_atomic
    from eotwin.progress import RichProgress

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="folder of pair folders")
    parser.add_argument("--from-fixtures", action="store_true", help="first write the real Barbellino pairs into DIR")
    parser.add_argument("--eurosat", action="store_true", help="also the three real EuroSAT L1C patches")
    parser.add_argument("--fixtures", type=Path, default=REPO.parent / "shared" / "fixtures")
    parser.add_argument("--methods", default=",".join(benchmark_methods()),
                        help="comma-separated (default: every method, and ai-raw: ai without its fallback)")
    parser.add_argument("--elevation", action="store_true", help=f"also {', '.join(AT_ELEVATION_METHODS)}: the method "
                        "given the ground height of each pair's elevation_m (the Barbellino pairs carry the lake's)")
    parser.add_argument("--fixed-aot", default="", help="also 6s-ddv given these AOTs (comma-separated), a diagnostic")
    parser.add_argument("-o", "--output", type=Path, default=Path("atmocorr_real"))
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    progress = RichProgress(enabled=not args.quiet)
    try:
        methods += [f"{FIXED_AOT_PREFIX}{float(v):g}" for v in args.fixed_aot.split(",") if v.strip()]
        methods += list(AT_ELEVATION_METHODS) if args.elevation else []
        unknown = [m for m in methods if m.removesuffix(ELEVATION_SUFFIX) not in benchmark_methods()
                   and not m.startswith(FIXED_AOT_PREFIX)]
        if unknown:
            raise EotwinError(f"unknown method(s) {', '.join(unknown)}: expected some of {', '.join(benchmark_methods())}")
        out = ensure_writable_dir(args.output)
        if args.from_fixtures:
            barbellino_pairs(args.fixtures, args.dir)
        pairs = list_pairs(args.dir)
        reports = []
        for pair in pairs:
            report = evaluate_pair(pair, methods, out / "runs", progress)
            try:
                report["flat_terrain"] = flat_terrain(pair, report, methods)
            except EotwinError as exc:  # a large pair: the diagnostic is skipped, and says so
                report["flat_terrain"] = None
                print(f"{pair.pair_id}: terrain diagnostic skipped ({exc})")
            reports.append(report)
            print(pair_table(report, methods))
            print()
        default = default_method()
        print(f"summary over {len(reports)} pairs (default method: {default}); mean RMSE, "
              "share within spec, bands better than TOA unchanged")
        acceptance = {}
        for c in [TOA_METHOD, *methods]:
            cells = []
            for r in reports:
                if "metrics" not in r["methods"].get(c, {}):
                    cells.append(f"{r['pair_id']} FAILED")
                    acceptance.setdefault(c, []).append(False)
                    continue
                m = r["methods"][c]["metrics"]
                toa = r["methods"][TOA_METHOD]["metrics"]["bands"]
                better = sum(m["bands"][b]["rmse"] < toa[b]["rmse"] for b in toa)
                cells.append(f"{r['pair_id']} {m['mean_rmse']:.4f} {100 * m['within_spec']:5.1f}%"
                             + ("" if c == TOA_METHOD else f" {better}/{len(toa)}"))
                if c != TOA_METHOD:
                    acceptance.setdefault(c, []).append(better == len(toa))
            print(f"  {c:8s} " + " | ".join(cells))
        for c in dict.fromkeys([default, "ai"]):
            if c in acceptance:
                ok = all(acceptance[c])
                print(f"acceptance: {c} better than TOA unchanged in every shared band on every pair: "
                      f"{'yes' if ok else 'NO'}")
        eurosat_rows = None
        if args.eurosat:
            eurosat_methods = [m for m in methods if m != "dos" and not m.endswith(ELEVATION_SUFFIX)] or methods  # EuroSAT has no height
            eurosat_rows = eurosat(args.fixtures, out, eurosat_methods, progress)
            print("\nEuroSAT L1C patches (no reference; date and angles assumed, see patch.json): scene AOT, "
                  "mean NDVI of vegetation pixels (TOA NDVI >= 0.4) before -> after")
            for row in eurosat_rows:
                if "error" in row:
                    print(f"  {row['patch']:14s} {row['method']:7s} sza {row['sun_zenith']:5.2f}  FAILED: {row['error']}")
                    continue
                n = row["ndvi"]
                ndvi = ("no vegetation pixel" if not n["pixels"]
                        else f"{n['toa']:.3f} -> {n['corrected']:.3f} ({n['pixels']} px, "
                             f"{'rises' if n['corrected'] > n['toa'] else 'DOES NOT RISE'})")
                aot = row["aot"]
                in_range = "-" if aot is None else ("in 0.02-0.5" if 0.02 <= aot <= 0.5 else "OUTSIDE 0.02-0.5")
                print(f"  {row['patch']:14s} {row['method']:7s} sza {row['sun_zenith']:5.2f}  AOT "
                      f"{_fmt(aot, '.3f')} ({row['aot_source']}, {in_range})  NDVI {ndvi}")
        write_png(out / "atmocorr_real.png", reports, methods)
        for r in reports:
            r.pop("_maps", None)
        write_json_atomic(out / "atmocorr_real.json",
                          {"pairs": reports, "default_method": default, "methods": methods, "eurosat": eurosat_rows})
        print(f"\nwrote {out / 'atmocorr_real.json'} and {out / 'atmocorr_real.png'}")
    except EotwinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
