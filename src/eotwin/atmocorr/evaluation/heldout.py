"""Every correction method on held-out 6S-made scenes: held-out surfaces under held-out atmospheres.

Test scenes: the BigEarthNet ``test``-split patches (never seen in training), six of them mosaicked
into one 240 x 360 px scene with random flips and turns, under atmospheres and geometries drawn with a
seed of their own (the same ranges as training, :data:`eotwin.atmocorr.ai.synth.SAMPLING`). Two kinds:

- ``table``: TOA from the 6S table's forward model with a smooth per-pixel AOT field and sensor noise;
- ``6s``: TOA from terms computed by the real 6S code for that atmosphere (the acceptance set of
  issue 6: "made with 6S itself, not the table"), so the table's own interpolation error is part of
  every method's error. The AOT field varies per pixel as in the table-made scenes: 6S runs at the
  field's minimum, middle and maximum AOT (three runs per band) and the terms are interpolated per pixel
  quadratically in AOT (path and spherical albedo; the log of the transmittance), a range narrow enough
  for the interpolation error to be far below the noise.

Methods, each on the same TOA. The total ozone column is known in practice (ECMWF's, in every L1C
product's auxiliary data; sen2cor's default reads it there) but hardly shows in a scene, so it is an
input, not something to infer: every method that takes it is given the scene's true ozone, and the
comparison is repeated with no ozone information at all (the ``*-ozone`` pair), where the AI falls back
on its network's own estimate and DDV on a climatological 0.33 cm-atm:

- ``ai``: the ONNX model through onnxruntime (what ``eotwin atmocorr run --ozone`` uses), given the ozone;
- ``ai-own-ozone``: the same with the network's own ozone estimate (``eotwin atmocorr run`` without ``--ozone``);
- ``6s-oracle``: the 6S-table inversion given the true AOT (per pixel), water vapour, ozone and
  aerosol model (the best a table inversion can do: the floor for any method using this table);
- ``6s-ddv``: the sen2cor-like baseline as sen2cor runs by default: water vapour from B09/B8A and a
  scene AOT from dark dense vegetation, with sen2cor's default aerosol model (rural = continental)
  and the true ozone; the acceptance baseline;
- ``6s-ddv-climatology-ozone``: the same with the climatological ozone (the baseline of ``ai-own-ozone``);
- ``6s-ddv-true-aerosol``: the same as ``6s-ddv``, told the true aerosol model of the scene (an advantage
  neither sen2cor nor the AI has; shown so the gain from knowing it is visible);
- ``dos``: dark object subtraction with Chavez's scattering model;
- ``none``: TOA reflectance as the answer.

Metrics per band over all valid pixels: RMSE, MAE, bias (method - truth); speed: pixels per second of
each method over the whole set (one process, its threads as configured). Written as JSON and PNG.

Leave-one-source-out is :mod:`eotwin.atmocorr.evaluation.loso`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from eotwin.atmocorr.ai import synth
from eotwin.atmocorr.evaluation.metrics import band_metrics
from eotwin.atmocorr.physics import DEFAULT_OZONE, Atmosphere, forward_gain, lut_correction
from eotwin.errors import EotwinError
from eotwin.progress import ProgressReporter, ensure_progress
from eotwin.sentinel2.bands import L2A_BANDS

METHODS = ("ai", "ai-own-ozone", "6s-oracle", "6s-ddv", "6s-ddv-climatology-ozone", "6s-ddv-true-aerosol", "dos",
           "none")
# acceptance targets of issue 6 (RMSE, reflectance)
TARGET_RMSE = {**dict.fromkeys(("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A"), 0.005),
               "B11": 0.01, "B12": 0.01}
MOSAIC = (2, 3)
SCENE_PIXEL_M = 10.0  # test scenes are on the 10 m grid of their surface patches


class EvaluateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Path
    scenes: int = Field(16, ge=1, le=1000)  # table-made scenes
    sixs_scenes: int = Field(0, ge=0, le=100)  # scenes made with the real 6S code
    seed: int = 1000  # training uses seeds near 0
    model: Path | None = None
    lut: Path | None = None
    ben_dir: Path | None = None


@dataclass
class TestScene:
    toa: np.ndarray  # (12, h, w)
    boa: np.ndarray  # (12, h, w) truth
    aot: np.ndarray  # (h, w) truth
    atmosphere: synth.Atmosphere
    source: str  # "table" or "6s"


def mosaic(surfaces: list[np.ndarray], rng: np.random.Generator, layout: tuple[int, int] = MOSAIC) -> np.ndarray:
    """The held-out surfaces in random order, flips and turns, tiled into one scene."""
    return synth.mosaic(surfaces, rng, layout)


def sixs_terms(atm: synth.Atmosphere, aot: np.ndarray | None = None, altitude_km: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(path, gain, s_alb) per L2A band from real 6S runs, for the scene's AOT (or per-pixel ``aot`` map), over
    ground at ``altitude_km``.

    Each array is (12, 1, 1) for a uniform atmosphere, (12, h, w) for an AOT map (see the module docstring).
    """
    from eotwin.atmocorr.sixs import simulate

    if aot is None or float(np.ptp(aot)) < 1e-3:
        nodes = np.array([atm.aot if aot is None else float(np.mean(aot))])
    else:
        lo, hi = float(aot.min()), float(aot.max())
        nodes = np.array([lo, 0.5 * (lo + hi), hi])
    path = np.empty((len(L2A_BANDS), nodes.size))
    log_gain, s_alb = np.empty_like(path), np.empty_like(path)
    for i, band in enumerate(L2A_BANDS):
        for j, value in enumerate(nodes):
            r = simulate(atm.sensor, band, aerosol=atm.aerosol, aot=float(value), sza=atm.sza, vza=atm.vza,
                         raa=atm.raa, wv=atm.wv, o3=atm.o3, rho=0.0, altitude_km=altitude_km)
            path[i, j], log_gain[i, j], s_alb[i, j] = r.toa, np.log(r.tg * r.t_down * r.t_up), r.s_alb
    if nodes.size == 1:
        return path[:, :, None], np.exp(log_gain)[:, :, None], s_alb[:, :, None]
    # quadratic Lagrange interpolation in AOT through the three runs
    x = aot.astype(np.float64)
    basis = [np.prod([(x - nodes[m]) / (nodes[k] - nodes[m]) for m in range(3) if m != k], axis=0) for k in range(3)]

    def interp(values: np.ndarray) -> np.ndarray:
        return sum(values[:, k, None, None] * basis[k][None] for k in range(3))

    return interp(path), np.exp(interp(log_gain)), interp(s_alb)


def make_test_scenes(
    lut,
    n: int,
    seed: int,
    *,
    sixs_scenes: int = 0,
    ben_dir: Path | None = None,
    progress: ProgressReporter | None = None,
) -> list[TestScene]:
    """Held-out scenes (see the module docstring)."""
    surfaces = list(synth.ben_surfaces(ben_dir, synth.TEST_SPLITS).values())
    rng = np.random.default_rng(seed)
    scenes: list[TestScene] = []
    with ensure_progress(progress).task("simulating held-out scenes", total=n + sixs_scenes) as task:
        for _ in range(n):
            surface = mosaic(surfaces, rng)
            atm = synth.sample_atmosphere(rng, lut)
            toa, aot, _ = synth.simulate(surface, atm, lut, rng)
            scenes.append(TestScene(toa, surface, aot, atm, "table"))
            task.advance()
        for _ in range(sixs_scenes):
            surface = mosaic(surfaces, rng)
            atm = synth.sample_atmosphere(rng, lut)
            aot = synth.aot_field(atm, surface.shape[1:], rng, lut)
            path, gain, s_alb = sixs_terms(atm, aot)
            rho = surface.astype(np.float64)
            toa = synth.add_noise(forward_gain(rho, path, gain, s_alb).astype(np.float32), rng)
            scenes.append(TestScene(toa, surface, aot, atm, "6s"))
            task.advance()
    return scenes


def ai_ood_score(scene: TestScene, lut, model) -> tuple[float, float]:
    """The model's OOD score of the scene and the threshold beside the model."""
    from eotwin.atmocorr.ai import ood

    path = ood.stats_path(model.path)
    if not path.is_file():
        raise EotwinError(f"no OOD statistics {path.name} beside the model")
    stats = ood.load_statistics(path)
    score, _ = ood.scene_score(scene.toa, scene_angles(scene), lut, scene.atmosphere.sensor, stats)
    return float(score), float(stats.threshold)


def scene_angles(scene: TestScene) -> np.ndarray:
    """(3, 1, 1) sun zenith, view zenith and relative azimuth of a test scene, as the network takes them."""
    atm = scene.atmosphere
    return np.array([atm.sza, atm.vza, atm.raa], np.float32).reshape(3, 1, 1)


def ddv_result(scene: TestScene, lut, *, aerosol: str | None = None, o3: float | None = None):
    """6s-ddv on a test scene (open water from the scene itself): its :class:`DdvResult`. ``aerosol`` None: the
    DDV picks the model; ``o3`` None: the scene's own ozone."""
    from eotwin.atmocorr import dark_vegetation

    atm = scene.atmosphere
    o3 = atm.o3 if o3 is None else o3
    open_water = dark_vegetation.open_water_mask(scene.toa, L2A_BANDS, lut, pixel_size=SCENE_PIXEL_M,
                                                 sensor=atm.sensor, sza=atm.sza, vza=atm.vza, raa=atm.raa, o3=o3)
    return dark_vegetation.ddv_correction(scene.toa, L2A_BANDS, lut, sensor=atm.sensor, sza=atm.sza, vza=atm.vza,
                                          raa=atm.raa, aerosol=aerosol, o3=o3, open_water=open_water)


def ai_out_of_distribution(scene: TestScene, lut, model) -> bool:
    """Whether the model's OOD score of the scene passes its threshold (the pipeline then uses 6s-ddv)."""
    score, threshold = ai_ood_score(scene, lut, model)
    return score > threshold


def fallback_correction(scene: TestScene, lut, model) -> np.ndarray:
    """BOA of a scene beyond the OOD threshold, as the pipeline corrects it: 6s-ddv, with the network's scene
    AOT where the DDV's came from dense vegetation (:func:`~eotwin.atmocorr.retrieval.network_aot_replaces`)."""
    from eotwin.atmocorr.retrieval import network_aot_replaces, scene_mean_aot

    atm = scene.atmosphere
    ddv = ddv_result(scene, lut)
    if ddv.retrieval is None or not network_aot_replaces(ddv.retrieval.source):
        return ddv.boa
    aot = scene_mean_aot([model.predict(scene.toa, scene_angles(scene), sensor=atm.sensor, ozone=atm.o3)[1]])
    if not np.isfinite(aot):
        return ddv.boa
    return lut_correction(scene.toa, L2A_BANDS, lut, sensor=atm.sensor,
                          atmosphere=Atmosphere(aot, ddv.wv, atm.o3, ddv.aerosol), geometry=atm.geometry)


def correct_scene(method: str, scene: TestScene, lut, model) -> np.ndarray:
    """BOA (12, h, w) of one test scene by one method."""
    from eotwin.atmocorr import dark_object

    atm = scene.atmosphere
    if method == "none":
        return scene.toa
    if method == "dos":
        return dark_object.dos_correction(scene.toa, L2A_BANDS, lut, sensor=atm.sensor, sza=atm.sza, vza=atm.vza,
                                        raa=atm.raa, o3=atm.o3).boa
    if method == "6s-oracle":
        return lut_correction(scene.toa, L2A_BANDS, lut, sensor=atm.sensor,
                              atmosphere=Atmosphere(scene.aot, atm.wv, atm.o3, atm.aerosol), geometry=atm.geometry)
    if method in ("6s-ddv", "6s-ddv-climatology-ozone", "6s-ddv-true-aerosol"):
        aerosol = atm.aerosol if method == "6s-ddv-true-aerosol" else None  # None: DDV picks the model per scene
        o3 = DEFAULT_OZONE if method == "6s-ddv-climatology-ozone" else None
        return ddv_result(scene, lut, aerosol=aerosol, o3=o3).boa
    if method == "ai-run":  # as `--method ai` runs: the network, unless its OOD score says it does not know
        if not ai_out_of_distribution(scene, lut, model):
            return correct_scene("ai", scene, lut, model)
        return fallback_correction(scene, lut, model)
    if method in ("ai", "ai-own-ozone"):
        return model.predict(scene.toa, scene_angles(scene), sensor=atm.sensor,
                             ozone=atm.o3 if method == "ai" else None)[0]
    raise EotwinError(f"unknown method {method!r}")


def evaluate(options: EvaluateOptions, progress: ProgressReporter | None = None) -> dict:
    """Run every method on the held-out scenes; write ``evaluation_ai.json`` and ``evaluation_ai.png``."""
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.lut import load_lut
    from eotwin.io.files import ensure_writable_dir, write_json_atomic

    progress = ensure_progress(progress)
    out_dir = ensure_writable_dir(Path(options.output))
    lut = load_lut(options.lut)
    model = OnnxModel(options.model)
    scenes = make_test_scenes(lut, options.scenes, options.seed, sixs_scenes=options.sixs_scenes,
                              ben_dir=options.ben_dir, progress=progress)
    report: dict = {"scenes": {"table": options.scenes, "6s": options.sixs_scenes,
                               "size": list(scenes[0].toa.shape[1:]), "seed": options.seed,
                               "surfaces": "BigEarthNet v2 test split (held out)"},
                    "model": str(model.path), "model_metadata": model.metadata,
                    "targets_rmse": TARGET_RMSE, "methods": {}}
    examples: dict[str, np.ndarray] = {}
    with progress.task("evaluating methods", total=len(METHODS) * len(scenes)) as task:
        for method in METHODS:
            per_source: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"table": [], "6s": []}
            seconds = 0.0
            for i, scene in enumerate(scenes):
                t0 = time.perf_counter()
                boa = correct_scene(method, scene, lut, model)
                seconds += time.perf_counter() - t0
                per_source[scene.source].append((boa, scene.boa))
                if i == 0:
                    examples[method] = boa
                task.advance()
            pixels = sum(s.toa.shape[1] * s.toa.shape[2] for s in scenes)
            entry = {"pixels_per_second": pixels / max(seconds, 1e-9), "seconds": seconds}
            for source, pairs in per_source.items():
                if pairs:
                    pred = np.concatenate([p.reshape(12, -1) for p, _ in pairs], axis=1)
                    truth = np.concatenate([t.reshape(12, -1) for _, t in pairs], axis=1)
                    m = band_metrics(pred, truth)
                    entry[source] = {"bands": m, "mean_rmse": float(np.mean([v["rmse"] for v in m.values()]))}
            report["methods"][method] = entry
    # AI AOT map vs truth
    aot_err = []
    for scene in scenes[: min(len(scenes), 8)]:
        angles = np.broadcast_to(np.array([scene.atmosphere.sza, scene.atmosphere.vza, scene.atmosphere.raa],
                                          np.float32)[:, None, None], (3, *scene.toa.shape[1:]))
        aot_err.append((model.predict(scene.toa, angles, sensor=scene.atmosphere.sensor)[1] - scene.aot).ravel())
    err = np.concatenate(aot_err)
    report["ai_aot"] = {"rmse": float(np.sqrt(np.nanmean(err**2))), "bias": float(np.nanmean(err))}
    report["ai_atmosphere"] = [scene_atmosphere(scene, model) for scene in scenes]
    report["acceptance"] = acceptance(report)
    write_json_atomic(out_dir / "evaluation_ai.json", report)
    write_report_png(out_dir / "evaluation_ai.png", report, scenes[0], examples)
    return report


def scene_atmosphere(scene: TestScene, model) -> dict:
    """The AI's scene-mean atmosphere next to the truth (does it tell the aerosol type, the water vapour?)."""
    atm = scene.atmosphere
    angles = np.array([atm.sza, atm.vza, atm.raa], np.float32)[:, None, None]
    est, _ = model.atmosphere(scene.toa, angles, sensor=atm.sensor)
    return {"source": scene.source, "aerosol": atm.aerosol, "aot": float(np.mean(scene.aot)),
            "ai_aot": float(np.mean(est[0])), "wv": atm.wv, "ai_wv": float(np.mean(est[1])),
            "o3": atm.o3, "ai_o3": float(np.mean(est[2])), "ai_p_maritime": float(np.mean(est[3]))}


def aerosol_type_summary(report: dict) -> str:
    """One line: the AI's mean P(maritime) on maritime and on continental scenes, and how often P > 0.5 is right."""
    rows = report.get("ai_atmosphere", [])
    if not rows:
        return "AI aerosol type: no scenes"
    by_type = {k: [r["ai_p_maritime"] for r in rows if r["aerosol"] == k] for k in ("maritime", "continental")}
    right = sum((r["ai_p_maritime"] > 0.5) == (r["aerosol"] == "maritime") for r in rows)
    means = ", ".join(f"{len(v)} {k} scenes {np.mean(v):.2f}" for k, v in by_type.items() if v)
    return f"AI aerosol type: mean P(maritime) on {means}; P > 0.5 right on {right} of {len(rows)} scenes"


def ozone_summary(report: dict) -> str:
    """One line: how well the network's own ozone estimate follows the truth, next to guessing the mean."""
    rows = report.get("ai_atmosphere", [])
    if not rows:
        return "AI ozone: no scenes"
    truth = np.array([r["o3"] for r in rows])
    est = np.array([r["ai_o3"] for r in rows])
    return (f"AI's own ozone estimate: RMSE {np.sqrt(np.mean((est - truth) ** 2)):.3f} cm-atm against a spread of "
            f"the truth of {np.std(truth):.3f} (estimates {est.min():.3f}-{est.max():.3f}): the scene hardly tells it")


def acceptance(report: dict) -> dict:
    """Per band: does the AI meet the issue's RMSE target and beat DOS and DDV, DDV both with the same
    ozone as the AI (``beats_ddv``) and with neither knowing it (``beats_ddv_without_ozone``)? Judged on
    the 6S-made scenes (the issue's acceptance set) when there are any, else on the table-made ones."""
    m = report["methods"]
    source = "6s" if "6s" in m["ai"] else "table"
    out = {"source": source}
    for b in L2A_BANDS:
        ai = m["ai"][source]["bands"][b]["rmse"]
        out[b] = {
            "ai_rmse": ai,
            "target": TARGET_RMSE.get(b),
            "meets_target": None if b not in TARGET_RMSE else ai <= TARGET_RMSE[b],
            "beats_dos": ai < m["dos"][source]["bands"][b]["rmse"],
            "beats_ddv": ai < m["6s-ddv"][source]["bands"][b]["rmse"],
            "beats_ddv_without_ozone": (m["ai-own-ozone"][source]["bands"][b]["rmse"]
                                        < m["6s-ddv-climatology-ozone"][source]["bands"][b]["rmse"]),
            "beats_ddv_true_aerosol": ai < m["6s-ddv-true-aerosol"][source]["bands"][b]["rmse"],
        }
    return out


def format_table(report: dict, source: str = "table") -> str:
    """The RMSE table (bands x methods) as text."""
    methods = [k for k in METHODS if source in report["methods"][k]]
    short = {"6s-ddv-true-aerosol": "ddv+aer", "ai-own-ozone": "ai-own-o3", "6s-ddv-climatology-ozone": "ddv-clim-o3"}
    lines = [f"RMSE per band, {source}-made held-out scenes ({report['scenes'][source]})",
             f"{'band':5s}" + "".join(f"{short.get(k, k):>12s}" for k in methods) + f"{'target':>9s}"]
    for b in L2A_BANDS:
        row = "".join(f"{report['methods'][k][source]['bands'][b]['rmse']:12.4f}" for k in methods)
        target = TARGET_RMSE.get(b)
        lines.append(f"{b:5s}{row}{target if target else '-':>9}")
    lines.append(f"{'mean':5s}" + "".join(f"{report['methods'][k][source]['mean_rmse']:12.4f}" for k in methods))
    lines.append(f"{'Mpx/s':5s}" + "".join(f"{report['methods'][k]['pixels_per_second'] / 1e6:12.3f}"
                                           for k in methods))
    return "\n".join(lines)


def write_report_png(path: Path, report: dict, scene: TestScene, examples: dict[str, np.ndarray]) -> Path:
    """RMSE and bias per band for every method, and one scene in true colour with the AI error map."""
    from eotwin.report.plotting import pyplot

    plt = pyplot()

    from eotwin.io.files import atomic_path

    fig = plt.figure(figsize=(15, 9))
    grid = fig.add_gridspec(2, 4)
    x = np.arange(len(L2A_BANDS))
    colours = {"ai": "#1f77b4", "ai-own-ozone": "#aec7e8", "6s-oracle": "#2ca02c", "6s-ddv": "#ff7f0e",
               "6s-ddv-climatology-ozone": "#ffbb78", "6s-ddv-true-aerosol": "#d62728", "dos": "#9467bd",
               "none": "#999999"}
    source = report["acceptance"]["source"]  # the acceptance set: 6S-made scenes when there are any
    for col, key in ((slice(0, 2), "rmse"), (slice(2, 4), "bias")):
        ax = fig.add_subplot(grid[0, col])
        width = 0.8 / len(METHODS)
        for k, method in enumerate(METHODS):
            vals = [report["methods"][method][source]["bands"][b][key] for b in L2A_BANDS]
            ax.bar(x + (k - len(METHODS) / 2 + 0.5) * width, vals, width, label=method, color=colours[method])
        if key == "rmse":
            ax.set_yscale("log")
            ax.plot(x, [TARGET_RMSE.get(b, np.nan) for b in L2A_BANDS], "k_", ms=14, mew=2, label="target")
        ax.set_xticks(x, L2A_BANDS, rotation=45)
        ax.set_ylabel(f"{key.upper() if key == 'rmse' else key} (reflectance), {source}-made scenes")
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=8)
    rgb = [L2A_BANDS.index(b) for b in ("B04", "B03", "B02")]

    def show(ax, arr, title):
        ax.imshow(np.clip(np.nan_to_num(np.moveaxis(arr[rgb], 0, -1)) / 0.2, 0, 1))
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()

    atm = scene.atmosphere
    show(fig.add_subplot(grid[1, 0]), scene.toa, f"TOA (AOT {atm.aot:.2f}, WV {atm.wv:.1f}, {atm.aerosol})")
    show(fig.add_subplot(grid[1, 1]), scene.boa, "truth (held-out BigEarthNet patches)")
    show(fig.add_subplot(grid[1, 2]), examples["ai"], "AI (onnxruntime)")
    ax = fig.add_subplot(grid[1, 3])
    err = np.sqrt(np.nanmean((examples["ai"] - scene.boa) ** 2, axis=0))
    im = ax.imshow(err, cmap="magma", vmin=0, vmax=max(float(np.nanpercentile(err, 99)), 1e-4))
    ax.set_title("AI RMSE over bands per pixel", fontsize=9)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, fraction=0.04)
    means = [f"{k} {report['methods'][k][source]['mean_rmse']:.4f}" for k in METHODS]
    fig.suptitle(f"held-out evaluation on {report['scenes'][source]} {source}-made scenes, mean RMSE:\n"
                 + ", ".join(means[:4]) + "\n" + ", ".join(means[4:]), fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path
