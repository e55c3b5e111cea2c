"""An L2A-like product against a reference L2A: ``eotwin atmocorr evaluate PRED REF`` and the run's report.

PRED and REF are each an L2A SAFE (folder or zip) or a GeoTIFF stack with bands named B01 ... B12,
B8A in the band descriptions and the L2A convention (``BOA = (DN + BOA_ADD_OFFSET) / 10000``). The
reference is read on PRED's grid. Valid pixels: finite in both, and of a clear SCL class when the
reference has an SCL band. With ``--l1c`` the same metrics are computed for "TOA left unchanged", so
the gain of the correction is visible.

Metrics per band: RMSE, MAE, bias, R2 (streaming, :class:`~eotwin.atmocorr.evaluation.metrics.MetricsAccumulator`),
PSNR = 10 log10(range^2 / MSE) and SSIM (Wang et al. 2004: 7 x 7 uniform window, K1 0.01, K2 0.03)
with the explicit ``data_range`` (reflectance, default 1.0), SSIM averaged over windows whose 49 pixels
are all valid; and the mean spectral angle (SAM, degrees). Outputs: ``evaluation.json`` and
``evaluation.png`` (per-band density scatter, RMSE-over-bands error map, B04 error map, true colour
side by side).

``eotwin atmocorr run --reference`` scores its blocks as it writes them (:func:`accumulate_reference`)
and draws its own ``evaluation.png`` (:func:`write_evaluation_png`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from eotwin.atmocorr.evaluation.metrics import MetricsAccumulator
from eotwin.errors import EotwinError
from eotwin.geo.grid import Window
from eotwin.progress import ProgressReporter, ensure_progress
from eotwin.sentinel2.bands import L2A_BANDS, SCL_CLEAR, TCI_BANDS
from eotwin.sentinel2.products import open_l2a_reference
from eotwin.sentinel2.radiometry import BOA_ADD_OFFSET, QUANTIFICATION
from eotwin.sentinel2.reading import BandReader

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
SCATTER_SAMPLE = 200_000
PREVIEW_SIDE = 800
TCI_SATURATION_PLOT = 0.25  # the run's evaluation.png: reflectance shown as white
BLOCK_ROWS = 128  # a full-tile block of 128 rows costs ~400 MB across pred, ref, TOA, SSIM and metrics


class _SsimAccumulator:
    """Sum of the SSIM map over fully valid windows, per band, block by block (blocks overlap by the
    window's half-width, so the sum equals that of one pass)."""

    def __init__(self, n_bands: int, data_range: float) -> None:
        self.c1 = (SSIM_K1 * data_range) ** 2
        self.c2 = (SSIM_K2 * data_range) ** 2
        self.sums = np.zeros(n_bands)
        self.count = 0

    def add(self, pred: np.ndarray, ref: np.ndarray, valid: np.ndarray, inner: slice) -> None:
        from scipy.ndimage import uniform_filter

        full = uniform_filter(valid.astype(np.float32), SSIM_WINDOW, mode="constant")[inner] > 1 - 1e-4
        if not full.any():
            return
        self.count += int(full.sum())
        for i in range(pred.shape[0]):
            x = np.where(valid, pred[i], 0.0).astype(np.float64)
            y = np.where(valid, ref[i], 0.0).astype(np.float64)
            f = lambda a: uniform_filter(a, SSIM_WINDOW, mode="constant")[inner]  # noqa: E731
            mx, my = f(x), f(y)
            vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
            ssim = ((2 * mx * my + self.c1) * (2 * cxy + self.c2)) / ((mx**2 + my**2 + self.c1) * (vx + vy + self.c2))
            self.sums[i] += float(ssim[full].sum())

    def result(self) -> np.ndarray:
        return self.sums / self.count if self.count else np.full(self.sums.shape, np.nan)


def evaluate_products(
    pred_path: str | Path,
    ref_path: str | Path,
    output: str | Path,
    *,
    l1c: str | Path | None = None,
    data_range: float = 1.0,
    progress: ProgressReporter | None = None,
) -> dict:
    """Compare PRED with REF (see the module docstring); write the JSON report and the PNG; return the report."""
    from eotwin.io.files import ensure_writable_dir, write_json_atomic
    from eotwin.io.raster import gdal_cache_env, raster_info
    from eotwin.sentinel2.bands import SCL_CLEAR

    if not data_range > 0:
        raise EotwinError(f"--data-range must be positive, got {data_range}")
    out_dir = ensure_writable_dir(Path(output))
    pred = open_l2a_reference(pred_path)
    grid = raster_info(pred_path).grid if pred.kind == "stack" else None
    if grid is None:
        first = next(b for b in L2A_BANDS if b in pred.bands)
        grid = raster_info(pred.bands[first].path).grid
    ref = open_l2a_reference(ref_path, round(grid.res[0]))
    bands = tuple(b for b in L2A_BANDS if b in pred.bands and b in ref.bands)
    if not bands:
        raise EotwinError(f"{pred_path} and {ref_path} share no band")
    toa_product = None
    if l1c is not None:
        from eotwin.sentinel2.products import open_l1c, with_grid

        toa_product = with_grid(open_l1c(l1c), grid)
    acc, acc_toa = MetricsAccumulator(bands), MetricsAccumulator(bands)
    ssim = _SsimAccumulator(len(bands), data_range)
    rng = np.random.default_rng(0)
    keep = min(1.0, SCATTER_SAMPLE / (grid.width * grid.height))
    scatter_p, scatter_r = [], []
    step = max(1, math.ceil(max(grid.width, grid.height) / PREVIEW_SIDE))
    preview_rows: dict[str, list[np.ndarray]] = {"pred": [], "ref": [], "err": [], "b04": []}
    half = SSIM_WINDOW // 2
    tci = [bands.index(b) for b in TCI_BANDS if b in bands]  # the bands the previews keep
    scale = lambda product, names: [(product.offsets.get(b, 0.0), product.quantification) for b in names]  # noqa: E731
    with contextlib.ExitStack() as stack:
        stack.enter_context(gdal_cache_env(128))
        pred_reader = stack.enter_context(BandReader(pred.bands, grid))
        ref_reader = stack.enter_context(BandReader(ref.bands, grid, categorical=("SCL",)))
        toa_reader = stack.enter_context(BandReader(toa_product.bands, grid)) if toa_product else None
        task = stack.enter_context(ensure_progress(progress).task("evaluating", total=grid.height))
        for window in grid.row_blocks(BLOCK_ROWS):
            top = max(0, window.row_off - half)
            bottom = min(grid.height, window.row_off + window.height + half)
            read = Window(top, 0, bottom - top, grid.width)
            inner = slice(window.row_off - top, window.row_off - top + window.height)
            p = pred_reader.read(bands, read, scaling=scale(pred, bands))
            r = ref_reader.read(bands, read, scaling=scale(ref, bands))
            valid = np.isfinite(p).all(axis=0) & np.isfinite(r).all(axis=0)
            if "SCL" in ref.bands:
                scl = ref_reader.read(("SCL",), read)[0]
                valid &= np.isin(np.nan_to_num(scl, nan=0).astype(np.int64), SCL_CLEAR)
            ssim.add(p, r, valid, inner)
            p, r, valid = p[:, inner], r[:, inner], valid[inner]
            acc.add(p, r, valid)
            if toa_reader is not None:
                t = toa_reader.read(bands, window, scaling=scale(toa_product, bands))
                acc_toa.add(t, r, valid & np.isfinite(t).all(axis=0))
            pick = valid & (rng.random(valid.shape) < keep)
            scatter_p.append(p[:, pick])
            scatter_r.append(r[:, pick])
            rows = slice((-window.row_off) % step, None, step)
            pv, rv = p[:, rows, ::step], r[:, rows, ::step]
            # the true-colour bands only, as copies: a strided view would keep each whole block alive until
            # the end (a full tile's worth of blocks: out of memory)
            preview_rows["pred"].append(pv[tci])
            preview_rows["ref"].append(rv[tci])
            err = np.sqrt(np.mean((pv - rv) ** 2, axis=0))
            err[~valid[rows, ::step]] = np.nan
            preview_rows["err"].append(err)
            b04 = bands.index("B04") if "B04" in bands else 0
            preview_rows["b04"].append(np.where(valid[rows, ::step], pv[b04] - rv[b04], np.nan))
            task.advance(window.height)
    metrics = acc.result()
    if metrics["pixels"] == 0:
        raise EotwinError(f"{pred_path} and {ref_path} share no valid pixel (check the grids and no-data)")
    ssim_values = ssim.result()
    for i, b in enumerate(bands):
        mse = metrics["bands"][b]["rmse"] ** 2
        metrics["bands"][b]["psnr_db"] = float(10 * math.log10(data_range**2 / mse)) if mse > 0 else None
        metrics["bands"][b]["ssim"] = float(ssim_values[i])
    report = {
        "prediction": str(pred_path),
        "reference": str(ref_path),
        "grid": {"width": grid.width, "height": grid.height, "crs": grid.crs.to_string(), "resolution": grid.res[0]},
        "data_range": data_range,
        "valid_pixels": "finite in both" + (", SCL clear classes " + str(list(SCL_CLEAR)) if "SCL" in ref.bands else ""),
        "corrected": metrics,
        "toa_unchanged": acc_toa.result() if toa_product else None,
    }
    write_json_atomic(out_dir / "evaluation.json", report)
    previews = {k: (np.concatenate(v, axis=-2) if v else None) for k, v in preview_rows.items()}
    _write_png(out_dir / "evaluation.png", report, bands, np.concatenate(scatter_p, axis=1),
               np.concatenate(scatter_r, axis=1), previews)
    return report


def _write_png(path: Path, report: dict, bands: tuple[str, ...], sp: np.ndarray, sr: np.ndarray, previews) -> Path:
    from eotwin.report.plotting import pyplot

    plt = pyplot()

    from eotwin.io.files import atomic_path

    fig = plt.figure(figsize=(20, 13))
    grid = fig.add_gridspec(3, 8)
    for i, b in enumerate(bands[:12]):
        ax = fig.add_subplot(grid[i // 6, i % 6])
        hi = float(np.nanpercentile(np.concatenate([sp[i], sr[i]]), 99.5)) if sp.shape[1] else 1.0
        ax.hist2d(sr[i], sp[i], bins=80, range=[[0, hi], [0, hi]], cmap="viridis", cmin=1)
        ax.plot([0, hi], [0, hi], "w--", lw=0.8)
        m = report["corrected"]["bands"][b]
        ax.set_title(f"{b}: RMSE {m['rmse']:.4f}, SSIM {m['ssim']:.3f}", fontsize=8)
        ax.tick_params(labelsize=6)
    def rgb(stack: np.ndarray) -> np.ndarray:  # the previews hold the true-colour bands only
        return np.clip(np.nan_to_num(np.moveaxis(stack, 0, -1)) / 0.25, 0, 1)

    has_rgb = all(b in bands for b in TCI_BANDS)
    panels = [("prediction (true colour)", rgb(previews["pred"]) if has_rgb else None),
              ("reference (true colour)", rgb(previews["ref"]) if has_rgb else None)]
    for k, (title, image) in enumerate(panels):
        ax = fig.add_subplot(grid[2, 2 * k : 2 * k + 2])
        if image is not None:
            ax.imshow(image)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[2, 4:6])
    err = previews["err"]
    im = ax.imshow(err, cmap="magma", vmin=0, vmax=max(float(np.nanpercentile(err, 99)), 1e-4))
    ax.set_title("RMSE over bands per pixel", fontsize=9)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax = fig.add_subplot(grid[2, 6:8])
    b04 = previews["b04"]
    lim = max(float(np.nanpercentile(np.abs(b04), 99)), 1e-4)
    im = ax.imshow(b04, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title("B04 error (prediction - reference)", fontsize=9)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, fraction=0.04)
    toa = report["toa_unchanged"]
    fig.suptitle(f"mean RMSE {report['corrected']['mean_rmse']:.4f}, SAM {report['corrected']['sam_degrees']:.2f} deg"
                 + (f" (TOA unchanged: {toa['mean_rmse']:.4f})" if toa else "")
                 + f"; density scatter: prediction (y) vs reference (x); data range {report['data_range']}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=70, format="png")
    plt.close(fig)
    return path


def accumulate_reference(
    acc: MetricsAccumulator,
    acc_toa: MetricsAccumulator,
    reference,
    ref_reader: BandReader,
    window: Window,
    boa: np.ndarray,
    toa: np.ndarray,
    valid: np.ndarray,
) -> None:
    """Add one block of the run (BOA and TOA) to the accumulators, scored against the reference's block."""
    bands = acc.bands
    dn = ref_reader.read(bands, window)
    offsets = np.array([reference.offsets.get(b, 0.0) for b in bands], dtype=np.float32)[:, None, None]
    ref = (dn + offsets) / np.float32(reference.quantification)
    mask = valid & np.isfinite(ref).all(axis=0)
    if "SCL" in reference.bands:
        scl = ref_reader.read(("SCL",), window)[0]
        mask &= np.isin(np.nan_to_num(scl, nan=0).astype(np.int64), SCL_CLEAR)
    idx = [L2A_BANDS.index(b) for b in bands]
    acc.add(boa[idx], ref, mask)
    acc_toa.add(toa[idx], ref, mask)


def write_evaluation_png(
    path: Path, metrics: Mapping[str, object], l2a_path: Path, ref_reader: BandReader | None, reference
) -> Path:
    """Per-band RMSE and bias (corrected vs TOA unchanged) and the two products side by side in true colour."""
    from eotwin.report.plotting import pyplot

    plt = pyplot()

    from eotwin.io.files import atomic_path
    from eotwin.io.raster import open_raster

    corrected = metrics["corrected"]["bands"]  # type: ignore[index]
    toa = metrics["toa_unchanged"]["bands"]  # type: ignore[index]
    bands = list(corrected)
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    x = np.arange(len(bands))
    for ax, key, label in ((axes[1, 0], "rmse", "RMSE"), (axes[1, 1], "bias", "bias (product - reference)")):
        ax.bar(x - 0.2, [toa[b][key] for b in bands], 0.4, label="TOA unchanged", color="#bbbbbb")
        ax.bar(
            x + 0.2, [corrected[b][key] for b in bands], 0.4, label=str(metrics["method"]), color="#1f77b4"
        )
        ax.set_xticks(x, bands, rotation=45)
        ax.set_ylabel(f"{label} (reflectance)")
        ax.axhline(0, color="k", lw=0.5)
        ax.legend()
    with open_raster(l2a_path) as ds:
        scale = max(1.0, max(ds.width, ds.height) / 600)
        shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        idx = [L2A_BANDS.index(b) + 1 for b in TCI_BANDS]
        dn = ds.read(idx, out_shape=(3, *shape)).astype(np.float32)
    pred = np.where(dn > 0, (dn + BOA_ADD_OFFSET) / QUANTIFICATION, np.nan)
    axes[0, 0].imshow(_rgb_for_plot(pred))
    axes[0, 0].set_title(f"corrected ({metrics['method']})")
    if ref_reader is not None and all(b in reference.bands for b in TCI_BANDS):
        rdn = ref_reader.read(TCI_BANDS, out_shape=shape)
        offs = np.array([reference.offsets.get(b, 0.0) for b in TCI_BANDS], dtype=np.float32)[:, None, None]
        axes[0, 1].imshow(_rgb_for_plot((rdn + offs) / np.float32(reference.quantification)))
    axes[0, 1].set_title("reference L2A")
    for ax in axes[0]:
        ax.set_axis_off()
    c, t = metrics["corrected"], metrics["toa_unchanged"]  # type: ignore[index]
    fig.suptitle(
        f"mean RMSE {c['mean_rmse']:.4f} (TOA unchanged {t['mean_rmse']:.4f}), "  # type: ignore[index]
        f"SAM {c['sam_degrees']:.2f} deg, {c['pixels']} pixels"
    )  # type: ignore[index]
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def _rgb_for_plot(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(np.moveaxis(rgb, 0, -1), nan=0.0) / TCI_SATURATION_PLOT, 0.0, 1.0)
