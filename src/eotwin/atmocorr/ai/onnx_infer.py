"""ONNX export (torch, training side) and inference through onnxruntime plus the 6S table (no torch).

Inference of an image: TOA to cells (:func:`~eotwin.atmocorr.ai.cells.cell_inputs`), the ONNX network
to the atmosphere on atmosphere cells, the 6S table to the terms of every band there
(:func:`~eotwin.atmocorr.ai.cells.table_terms`), bilinear upsampling of the terms to cells and the
exact inversion per pixel, band by band (bounded memory; numpy broadcasting, no per-pixel terms). The network's context is a set of window
statistics on whole cells, so a block that starts on a whole atmosphere cell and carries
``overlap`` pixels of context gives exactly the values of one pass (:class:`AiCorrector`).

The ONNX file carries its configuration (cells, windows, overlap, band order) as metadata, so a
model file is self-describing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eotwin.atmocorr.ai import DEFAULT_MODEL_PATH
from eotwin.atmocorr.ai import cells as cellmath
from eotwin.atmocorr.products import L2A_BANDS, interpolate_azimuth, interpolate_nodes
from eotwin.errors import EotwinError
from eotwin.geo.grid import Window
from eotwin.progress import ProgressReporter, ensure_progress

if TYPE_CHECKING:  # pragma: no cover
    from eotwin.atmocorr.ai.model import AtmoNet
    from eotwin.atmocorr.pipeline import BlockResult, Corrector, SceneSample
    from eotwin.atmocorr.products import AngleGrid, L1CProduct
    from eotwin.geo.grid import Grid

OPSET = 17
METADATA_KEY = "eotwin_atmocorr"
MODEL_FORMAT = "atmonet-2"  # cells in, atmosphere out; the 6S table does the rest
logger = logging.getLogger(__name__)


def export_onnx(model: AtmoNet, path: str | Path, extra: dict | None = None) -> Path:
    """Write the network as ONNX (dynamic batch and size) with its configuration as metadata."""
    import onnx
    import torch

    from eotwin.io.files import atomic_path

    model = model.eval()
    size = 4 * model.config.out_stride
    cells = torch.full((1, model.config.n_inputs, size, size), 0.1)
    angles = torch.full((1, 3, size, size), 30.0)
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and shape-inference notes
        torch.onnx.export(
            model,
            (cells, angles),
            str(tmp),
            input_names=["cells", "angles"],
            output_names=["atmosphere"],
            dynamic_axes={k: {0: "n", 2: "h", 3: "w"} for k in ("cells", "angles", "atmosphere")},
            opset_version=OPSET,
            dynamo=False,
        )
        proto = onnx.load(str(tmp))
        meta = {"format": MODEL_FORMAT, "config": model.config.to_dict(), "bands": list(L2A_BANDS),
                "overlap": model.config.overlap, "stride": model.config.stride, **(extra or {})}
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta, sort_keys=True)
        onnx.save(proto, str(tmp))
    return path


class OnnxModel:
    """An exported model in an onnxruntime session, plus the 6S table that turns its atmosphere into terms."""

    def __init__(self, path: str | Path | None = None, threads: int | None = None, lut_path: Path | None = None) -> None:
        import onnxruntime as ort

        from eotwin.atmocorr.lut import load_lut

        self.path = Path(path) if path is not None else DEFAULT_MODEL_PATH
        if not self.path.is_file():
            raise EotwinError(f"AI model not found: {self.path} (train one with `eotwin atmocorr train`)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 8)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.enable_cpu_mem_arena = False  # the arena keeps every call's peak allocation: RSS grows, speed does not
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EotwinError(f"cannot load AI model {self.path}: {str(exc).splitlines()[0]}") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise EotwinError(f"{self.path} is not an eotwin atmospheric-correction model (no {METADATA_KEY} metadata)")
        self.metadata = _checked_metadata(raw, self.path)
        if self.metadata.get("format") != MODEL_FORMAT:
            raise EotwinError(f"{self.path} is an older model format ({self.metadata.get('format', 'atmonet-1')}), "
                              f"expected {MODEL_FORMAT}: retrain it with `eotwin atmocorr train`")
        if tuple(self.metadata["bands"]) != L2A_BANDS:
            raise EotwinError(f"{self.path}: model bands {self.metadata['bands']} differ from {list(L2A_BANDS)}")
        config = self.metadata["config"]
        self.cell, self.out_stride = int(config["cell"]), int(config["out_stride"])
        self.bright_toa = float(config["bright_toa"])
        self.hypotheses = int(config.get("hypotheses", 0))
        self.overlap = cellmath.overlap_for(config["windows"], self.cell, self.out_stride)
        self.stride = int(self.metadata["stride"])
        self.lut = load_lut(lut_path)


    def atmosphere(
        self, toa: np.ndarray, angles: np.ndarray, valid: np.ndarray | None = None, *, sensor: str,
        cell_angles: bool = False, ozone: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The network's atmosphere (4, H, W) on atmosphere cells and the angles (3, H, W) there.

        ``angles`` are per pixel (3, h, w), or per cell with ``cell_angles=True``; a (3, 1, 1) array
        means the same angles everywhere. ``ozone`` (cm-atm), when known (the ECMWF total column of the
        L1C's auxiliary data, which sen2cor uses too), replaces the network's own estimate: ozone barely
        shows in a scene, so the network can only guess it from its training range.
        """
        if ozone is not None and not self.lut.contains("o3", ozone):  # the terms lookup would clamp it silently
            lo, hi = self.lut.axes["o3"][[0, -1]]
            raise EotwinError(f"ozone {ozone} cm-atm is outside the 6S table's range [{lo:.2f}, {hi:.2f}]")
        if valid is None:
            valid = np.ones(toa.shape[1:], dtype=bool)
        cells, per_cell, atm_angles = cellmath.network_inputs(
            toa, valid, angles, self.lut, sensor, cell=self.cell, out_stride=self.out_stride,
            bright_toa=self.bright_toa, angles_at_cells=cell_angles, hypotheses=self.hypotheses)
        (atm,) = self.session.run(["atmosphere"], {"cells": cells[None], "angles": per_cell[None]})
        atm = atm[0]
        if ozone is not None:
            atm[cellmath.ATMOSPHERE.index("o3")] = ozone
        return atm, atm_angles

    def predict(
        self,
        toa: np.ndarray,
        angles: np.ndarray,
        valid: np.ndarray | None = None,
        *,
        sensor: str,
        cell_angles: bool = False,
        rows: tuple[int, int] | None = None,
        ozone: float | None = None,
        progress: ProgressReporter | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """BOA (12, h, w) and AOT (h, w) of an image (one pass; NaN where invalid), or of its ``rows``
        (start, stop; the start on a whole cell) only: the rest of the image is context. ``ozone``: see
        :meth:`atmosphere`.

        Atmosphere cells start at the image origin, so a caller that cuts a larger image must cut it
        on multiples of :attr:`stride` (see :class:`AiCorrector`) for results equal to one pass.
        """
        toa = np.asarray(toa, dtype=np.float32)
        if toa.ndim != 3 or toa.shape[0] != len(L2A_BANDS):
            raise EotwinError(f"TOA stack must be (12, h, w) of the bands {', '.join(L2A_BANDS)}, got {toa.shape}")
        h, w = toa.shape[1:]
        if not cell_angles and angles.shape[1:] not in ((1, 1), (h, w)):
            raise EotwinError(f"angles must be (3, {h}, {w}) or (3, 1, 1), got {angles.shape}")
        atm, atm_angles = self.atmosphere(toa, angles, valid, sensor=sensor, cell_angles=cell_angles, ozone=ozone)
        # only the rows asked for: their atmosphere cells and one more on each side (bilinear)
        r0, r1 = rows if rows is not None else (0, h)
        if r0 % self.cell:
            raise EotwinError(f"rows must start on a whole cell ({self.cell} px), got {r0}")
        a0 = max(r0 // self.stride - 1, 0)
        a1 = min(-(-r1 // self.stride) + 1, atm.shape[1])
        path, gain, s_alb = cellmath.table_terms(self.lut, sensor, atm[:, a0:a1], atm_angles[:, a0:a1], L2A_BANDS)
        c0, c1 = r0 // self.cell, -(-r1 // self.cell)
        wc = atm.shape[2] * self.out_stride
        up = lambda t: cellmath.upsample_bilinear(t, self.out_stride, c1 - c0, wc, row0=c0, x_row0=a0,  # noqa: E731
                                                  x_rows=atm.shape[1])
        boa = np.empty((len(L2A_BANDS), r1 - r0, w), dtype=np.float32)
        with ensure_progress(progress).task("AI correction (onnxruntime + 6S table)", total=len(L2A_BANDS)) as task:
            for i in range(len(L2A_BANDS)):
                boa[i] = cellmath.invert_band(toa[i, r0:r1], up(path[i]), up(gain[i]), up(s_alb[i]), self.cell)
                task.advance()
        aot = np.repeat(np.repeat(up(atm[0, a0:a1]), self.cell, axis=0), self.cell, axis=1)[: r1 - r0, :w]
        if valid is not None:
            invalid = ~np.asarray(valid, dtype=bool)[r0:r1]
            boa[:, invalid] = np.nan
            aot[invalid] = np.nan
        aot[np.isnan(boa[0])] = np.nan
        return boa, aot


def block_angles(angles: AngleGrid, grid: Grid, window: Window, cell: int = 1) -> np.ndarray:
    """(3, h, w) model angles of a block: sun zenith, band-mean view zenith and relative azimuth.

    With ``cell`` > 1, at the centres of the block's cells of ``cell`` x ``cell`` pixels (the block
    starts on a whole cell): the angles are smooth, their mean over a cell is its centre value, and
    the model only looks at cells. A constant grid (mean angles in a stack's tags) gives (3, 1, 1).
    """
    from eotwin.atmocorr.physics import relative_azimuth

    if cell > 1:
        from affine import Affine

        from eotwin.geo.grid import Grid as _Grid

        coarse = _Grid(grid.transform * Affine.scale(cell), -(-grid.width // cell), -(-grid.height // cell), grid.crs)
        r0, c0 = window.row_off // cell, window.col_off // cell
        grid, window = coarse, Window(r0, c0, -(-(window.row_off + window.height) // cell) - r0,
                                       -(-(window.col_off + window.width) // cell) - c0)

    wr, wc = angles.weights(grid, window)
    shape = (window.height, window.width)
    sza = interpolate_nodes(angles.sun_zenith, wr, wc)
    vza = interpolate_nodes(np.mean([angles.view_zenith[b] for b in L2A_BANDS if b in angles.view_zenith], axis=0),
                            wr, wc)
    saa = interpolate_azimuth(angles.sun_azimuth, wr, wc)
    band = "B8A" if "B8A" in angles.view_azimuth else next(iter(angles.view_azimuth))
    vaa = interpolate_azimuth(angles.view_azimuth[band], wr, wc)
    raa = relative_azimuth(saa, vaa)
    if all(np.asarray(v).size == 1 for v in (sza, vza, raa)):
        return np.array([np.ravel(v)[0] for v in (sza, vza, raa)], np.float32).reshape(3, 1, 1)
    return np.stack([np.broadcast_to(v, shape) for v in (sza, vza, raa)]).astype(np.float32)


@dataclass
class AiCorrector:
    """The ``ai`` method of ``eotwin atmocorr run``: the model per row block, with overlap for its context.

    ``prepare`` first scores how foreign the scene is to the network (:mod:`eotwin.atmocorr.ai.ood`, on the
    pipeline's decimated overview); above the threshold the scene is corrected by ``fallback`` (the
    pipeline's 6s-ddv) instead, and the run info, the product's tags and one log line say so.
    """

    model_path: Path | None = None
    lut_path: Path | None = None
    ozone: float | None = None  # cm-atm as given (--ozone); None: the product's own, else the network's estimate
    ood_threshold: float | None = None  # None: the threshold calibrated with the model's OOD statistics
    ood_fallback: bool = True  # False: the AI result is kept whatever the score (the score is still recorded)
    fallback: Callable[[], Corrector] | None = None  # makes the corrector used beyond the threshold
    name: str = "ai"
    overlap: int = 0
    gives_aot_map: bool = True
    _model: OnnxModel | None = field(default=None, repr=False)
    _angles: AngleGrid | None = field(default=None, repr=False)
    _sensor: str = "S2A"
    _ozone: float | None = None  # the ozone used for the product being corrected (set by prepare)
    _delegate: Corrector | None = field(default=None, repr=False)  # the fallback in use for this product

    def __post_init__(self) -> None:
        self._model = OnnxModel(self.model_path, lut_path=self.lut_path)
        self.overlap = self._model.overlap + self._model.stride

    def prepare(self, product: L1CProduct, sample: SceneSample) -> dict[str, object]:
        from eotwin.atmocorr.pipeline import resolve_ozone

        self._angles = product.angles
        self._sensor = product.spacecraft
        self._ozone, source = resolve_ozone(self.ozone, product, fallback=None, lut=self._model.lut)
        meta = self._model.metadata if self._model else {}
        info: dict[str, object] = {
            "model": str(self._model.path.name if self._model else ""), "model_version": meta.get("version", ""),
            "ozone": self._ozone if self._ozone is not None else "network estimate", "ozone_source": source}
        ood_info, beyond = self._score(product, sample)
        info.update(ood_info)
        if not beyond:
            info["fallback"] = "none"
            return info
        why = f"OOD score {ood_info['ood_score']} > threshold {ood_info['ood_threshold']}"
        if not self.ood_fallback or self.fallback is None:
            info["fallback"] = f"disabled: the AI result is kept although its {why}"
            logger.warning("%s: the scene is out of the AI's distribution (%s); fallback disabled, the AI result "
                           "is kept", product.product_id, why)
            return info
        delegate = self.fallback()
        try:
            fallback_info = delegate.prepare(product, sample)
        except EotwinError as exc:  # e.g. 6s-ddv finds no signal for water vapour over open water
            info["fallback"] = f"failed: {delegate.name} cannot correct the scene ({exc}); the AI result is kept"
            logger.warning("%s: the scene is out of the AI's distribution (%s) but %s failed (%s): the AI result "
                           "is kept", product.product_id, why, delegate.name, exc)
            return info
        self._delegate = delegate
        self.name, self.overlap, self.gives_aot_map = delegate.name, delegate.overlap, delegate.gives_aot_map
        logger.warning("%s: the scene is out of the AI's distribution (%s): corrected with %s instead",
                       product.product_id, why, delegate.name)
        return {**info, **fallback_info, **ood_info, "fallback": f"{delegate.name}: {why}"}

    def _score(self, product: L1CProduct, sample: SceneSample) -> tuple[dict[str, object], bool]:
        """The run info of the OOD score and whether the scene lies beyond the threshold."""
        from eotwin.atmocorr.ai import ood
        from eotwin.atmocorr.physics import relative_azimuth

        path = ood.stats_path(self._model.path)
        whole = sample.overview is not None and sample.overview_step == 1
        if not path.is_file():
            reason = f"unavailable: no OOD statistics {path.name} beside the model"
        elif not whole and sample.read_window is None:
            reason = "unavailable: the scene sample has neither the whole scene nor a window reader"
        else:
            stats = ood.load_statistics(path)
            try:
                ood.check_config(stats, self._model.metadata["config"], path.name)
            except EotwinError as exc:
                stats, reason = None, f"unavailable: {exc}"
            if stats is not None:
                a = sample.angles
                angles = np.array([a["sun_zenith"], min(a["view_zenith"], float(self._model.lut.axes["vza"][-1])),
                                   float(relative_azimuth(a["sun_azimuth"], a["view_azimuth"]))],
                                  np.float32).reshape(3, 1, 1)
                if whole:
                    parts, where = sample.overview, "the whole scene"
                else:  # full-resolution windows: the score is only meaningful on cells of the network's size
                    windows = ood.sample_windows(product.grid.height, product.grid.width)
                    parts = [sample.read_window(Window(*w)) for w in windows]
                    where = f"{len(windows)} windows of {windows[0][2]} x {windows[0][3]} px"
                score, cells = ood.scene_score(parts, angles, self._model.lut, product.spacecraft, stats)
                del parts
                threshold = self.ood_threshold if self.ood_threshold is not None else stats.threshold
                info: dict[str, object] = {
                    "ood_score": round(score, 4) if math.isfinite(score) else "inf (no usable cell)",
                    "ood_threshold": threshold, "ood_cells": cells, "ood_scored_on": where}
                if (note := ood.stale_note(stats, self._model.path)) is not None:
                    info["ood_statistics"] = note
                    logger.warning("%s: OOD statistics %s %s", product.product_id, path.name, note)
                return info, score > threshold
        logger.warning("%s: %s; the AI cannot tell whether it knows this scene", product.product_id, reason)
        return {"ood_score": reason, "ood_threshold": self.ood_threshold if self.ood_threshold is not None
                else "unavailable"}, False

    def correct(self, toa: np.ndarray, grid: Grid, window: Window, valid: np.ndarray) -> BlockResult:
        from eotwin.atmocorr.pipeline import BlockResult

        if self._delegate is not None:
            return self._delegate.correct(toa, grid, window, valid)
        if self._angles is None or self._model is None:
            raise EotwinError("the AI corrector was not prepared")
        # the model samples its head every `stride` pixels from the image origin: start on such a row
        # (the rows skipped are context rows, the pipeline gives one stride more than the model needs)
        skip = (-window.row_off) % self._model.stride if window.row_off > 0 else 0
        cells_window = Window(window.row_off + skip, window.col_off, window.height - skip, window.width)
        angles = block_angles(self._angles, grid, cells_window, cell=self._model.cell)
        # the rows the pipeline keeps: all but the context it added (at the image's edges it adds less)
        context = self.overlap
        first = context if window.row_off > 0 else 0
        last = window.height - context if window.row_off + window.height < grid.height else window.height
        first = max(first, skip)
        first -= (first - skip) % self._model.cell  # on a whole cell of the model's grid
        boa = np.full(toa.shape, np.nan, dtype=np.float32)
        aot = np.full(toa.shape[1:], np.nan, dtype=np.float32)
        if last > first:
            boa[:, first:last], aot[first:last] = self._model.predict(
                toa[:, skip:], angles, valid[skip:], sensor=self._sensor, cell_angles=True,
                rows=(first - skip, last - skip), ozone=self._ozone)
        return BlockResult(boa, aot)


def _checked_metadata(raw: str, path: Path) -> dict:
    """The model's metadata, checked before use: it is text in a file anyone can write."""
    try:
        meta = json.loads(raw)
    except ValueError:
        raise EotwinError(f"{path}: the model's {METADATA_KEY} metadata is not JSON") from None
    try:
        config = meta["config"]
        checks = {
            "bands": isinstance(meta["bands"], list) and all(isinstance(b, str) for b in meta["bands"]),
            "stride": isinstance(meta["stride"], int) and 1 <= meta["stride"] <= 512,
            "config.cell": isinstance(config["cell"], int) and 1 <= config["cell"] <= 64,
            "config.out_stride": isinstance(config["out_stride"], int) and 1 <= config["out_stride"] <= 64,
            "config.windows": isinstance(config["windows"], list) and 0 < len(config["windows"]) <= 8
            and all(isinstance(w, int) and 1 <= w <= 129 and w % 2 == 1 for w in config["windows"]),
            "config.bright_toa": isinstance(config["bright_toa"], int | float) and 0 < config["bright_toa"] <= 2,
            "config.hypotheses": isinstance(config.get("hypotheses", 0), int) and 0 <= config.get("hypotheses", 0) <= 8,
        }
    except (KeyError, TypeError):
        raise EotwinError(f"{path}: the model's {METADATA_KEY} metadata lacks bands, stride or config") from None
    wrong = [name for name, ok in checks.items() if not ok]
    if wrong:
        raise EotwinError(f"{path}: the model's metadata has invalid {', '.join(wrong)}")
    return meta
