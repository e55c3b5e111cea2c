"""The physical baselines (6s-ddv, dos) per real surface source: retrieved AOT and RMSE, beside TOA unchanged.

Each source of :mod:`eotwin.atmocorr.ai.surfaces` (BigEarthNet test patches, Major-TOM, EnMAP, Sahara,
water) gives 2 x 2 crops of 96 px (``loso.loso_surface``); TOA comes from the 6S table at AOT 0.1
and 0.3 under continental and maritime aerosol (sun zenith 35, view zenith 5, relative azimuth 60 deg,
water vapour 2.0 g/cm2, ozone 0.33 cm-atm). Prints, per scene, the AOT each method retrieved and where it
came from (``aot_source``), and per source the mean RMSE over B02-B8A, B11, B12. No 6S runs: a few
seconds per source.

Usage: ``.venv/bin/python benchmarks/atmocorr_ddv_sources.py [--seed 5] [--sources ben,majortom,...]``
"""

from __future__ import annotations

import argparse

import numpy as np

ISSUE_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
GEOMETRY = {"sza": 35.0, "vza": 5.0, "raa": 60.0}


def _rmse(image: np.ndarray, surface: np.ndarray, bands: list[int]) -> float:
    """Mean over ``bands`` of the per-band RMSE against the true surface."""
    return float(np.mean(np.sqrt(np.nanmean((image[bands] - surface[bands]) ** 2, axis=(1, 2)))))


def main() -> None:
    from eotwin.atmocorr import dark_object, dark_vegetation, physics
    from eotwin.atmocorr.ai import surfaces
    from eotwin.atmocorr.evaluation import loso
    from eotwin.atmocorr.lut import load_lut
    from eotwin.sentinel2.bands import L2A_BANDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--sources", default="ben,majortom,enmap,sahara,water")
    args = parser.parse_args()
    lut = load_lut()
    bands = [L2A_BANDS.index(b) for b in ISSUE_BANDS]
    methods = {"6s-ddv": dark_vegetation.ddv_correction, "dos": dark_object.dos_correction}
    means: dict[tuple[str, str], list[float]] = {}
    print("source    aerosol     AOT  method  retrieved  source of the AOT                        RMSE")
    for source in surfaces.parse_sources(args.sources):
        patches = surfaces.load_sources(source, split="test")[source]
        rng = np.random.default_rng(args.seed)
        for aerosol in ("continental", "maritime"):
            for aot in (0.1, 0.3):
                surface = loso.loso_surface(patches, rng).astype(np.float64)
                terms = lut.terms_for("S2A", L2A_BANDS, aerosol, aot=aot, wv=2.0, o3=0.33, **GEOMETRY)
                toa = physics.forward(surface, terms).astype(np.float32)
                means.setdefault((source, "toa"), []).append(_rmse(toa, surface, bands))
                for name, correct in methods.items():
                    result = correct(toa, L2A_BANDS, lut, sensor="S2A", o3=0.33, **GEOMETRY)
                    means.setdefault((source, name), []).append(_rmse(result.boa, surface, bands))
                    print(f"{source:9s} {aerosol:11s} {aot:.1f}  {name:7s} {result.aot:6.3f} {result.aerosol[:4]}  "
                          f"{result.retrieval.source[:40]:40s} {means[(source, name)][-1]:.4f}")
    print("\nmean RMSE over B02-B8A, B11, B12 per source (4 scenes each)")
    print("source        toa   6s-ddv      dos")
    for source in surfaces.parse_sources(args.sources):
        print(f"{source:9s} " + " ".join(f"{np.mean(means[(source, m)]):8.4f}" for m in ("toa", *methods)))


if __name__ == "__main__":
    main()
