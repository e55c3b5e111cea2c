"""The ``ai`` method of ``eotwin atmocorr run``: the exported network (:class:`~eotwin.atmocorr.ai.onnx_infer.
OnnxModel`) applied to a product block by block, with the scene-wide decisions taken first.

Before the blocks, :class:`AiCorrector` reads the scene (the whole scene, or full-resolution windows of a large
one) for its out-of-distribution score, its aerosol model and, with ``--dem``, its atmosphere; beyond the
OOD threshold it hands the product to the 6s-ddv fallback. :class:`AtmosphereStream` keeps the network's
inputs and outputs of the atmosphere rows a block's context needs, so each is computed once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eotwin.atmocorr.ai import cells as cellmath
from eotwin.atmocorr.ai.onnx_infer import OnnxModel, block_angles
from eotwin.atmocorr.retrieval import network_aot_replaces, scene_mean_aot
from eotwin.errors import EotwinError
from eotwin.geo.grid import Window

if TYPE_CHECKING:  # pragma: no cover
    from eotwin.atmocorr.correctors import BlockResult, Corrector, SceneSample
    from eotwin.atmocorr.pipeline import RunOptions
    from eotwin.geo.grid import Grid
    from eotwin.sentinel2.metadata import AngleGrid
    from eotwin.sentinel2.products import L1CProduct

logger = logging.getLogger(__name__)


def make_corrector(options: RunOptions) -> Corrector:
    """The pipeline's ``ai`` corrector (:class:`AiCorrector`), with 6s-ddv of the same options as its fallback."""
    from eotwin.atmocorr.correctors import METHODS

    return AiCorrector(model_path=options.model, lut_path=options.lut, ozone=options.ozone,
                       elevation=options.elevation, dem=options.dem, ood_threshold=options.ood_threshold,
                       ood_fallback=options.ood_fallback, fallback=lambda: METHODS["6s-ddv"](options))


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
    elevation: float | None = None  # metres, the whole scene (--elevation; the fallback gets the same)
    dem: Path | None = None  # --dem: the network's scene atmosphere, inverted per pixel by ``fallback`` with the DEM
    ood_threshold: float | None = None  # None: the threshold calibrated with the model's OOD statistics
    ood_fallback: bool = True  # False: the AI result is kept whatever the score (the score is still recorded)
    fallback: Callable[[], Corrector] | None = None  # makes the corrector used beyond the threshold
    name: str = "ai"
    overlap: int = 0  # rows of context below a block
    overlap_above: int = 0  # rows above it: the start of its first cell (the rows above that are kept from before)
    gives_aot_map: bool = True
    _model: OnnxModel | None = field(default=None, repr=False)
    _angles: AngleGrid | None = field(default=None, repr=False)
    _sensor: str = "S2A"
    _ozone: float | None = None  # the ozone used for the product being corrected (set by prepare)
    _maritime: float | None = None  # the scene's P(maritime) used for the product (set by prepare; None: per cell)
    _delegate: Corrector | None = field(default=None, repr=False)  # the fallback in use for this product
    _stream: AtmosphereStream | None = field(default=None, repr=False)  # the atmosphere rows of the product

    def __post_init__(self) -> None:
        self._model = OnnxModel(self.model_path, lut_path=self.lut_path)
        self.overlap = self._model.overlap + self._model.stride
        self.overlap_above = self._model.cell

    def prepare(self, product: L1CProduct, sample: SceneSample) -> dict[str, object]:
        from eotwin.atmocorr.correctors import product_height, resolve_ozone

        self._angles = product.angles
        self._stream, self._delegate = None, None  # nothing kept from an earlier product
        self.name, self.gives_aot_map = "ai", True
        self.overlap, self.overlap_above = self._model.overlap + self._model.stride, self._model.cell
        self._sensor = product.spacecraft
        self._ozone, source = resolve_ozone(self.ozone, product, fallback=None, lut=self._model.lut)
        meta = self._model.metadata if self._model else {}
        info: dict[str, object] = {
            "model": str(self._model.path.name if self._model else ""), "model_version": meta.get("version", ""),
            "ozone": self._ozone if self._ozone is not None else "network estimate", "ozone_source": source}
        if self.elevation is not None:
            info.update({"elevation": round(float(self.elevation), 1), "elevation_source": "given"})
            self._model.use_elevation(self.elevation)
        elif self.dem is not None:  # the network reads the scene at the DEM's median height
            self._model.use_elevation(_dem_median(self.dem, product.grid))
        elif (height := product_height(product)) is not None:  # the product's own (CAMS), as 6s-ddv takes it
            self._model.use_elevation(height[0])
            info.update({"elevation": round(height[0], 1), "elevation_source": height[1]})
        else:
            self._model.use_elevation(None)
        parts, angles, where = self._scene_parts(product, sample)
        self._model.conversion_angles = angles if self._model.elevation is not None else None
        ood_info, beyond = self._score(product, parts, angles, where)
        info.update(ood_info)
        if not beyond:
            means = self._scene_aerosol(product, parts, angles, where, info)
            info["fallback"] = "none"
            if self.dem is not None:
                return self._with_terrain(product, sample, means, info)
            return info
        scored = (parts, angles) if parts is not None else None
        why = f"OOD score {ood_info['ood_score']} > threshold {ood_info['ood_threshold']}"
        if not self.ood_fallback or self.fallback is None:
            means = self._scene_aerosol(product, parts, angles, where, info)
            info["fallback"] = f"disabled: the AI result is kept although its {why}"
            logger.warning("%s: the scene is out of the AI's distribution (%s); fallback disabled, the AI result "
                           "is kept", product.product_id, why)
            if self.dem is not None and self.fallback is not None:
                return self._with_terrain(product, sample, means, info)
            return info
        delegate = self.fallback()
        try:
            fallback_info = delegate.prepare(product, sample)
        except EotwinError as exc:  # e.g. 6s-ddv finds no signal for water vapour over open water
            self._scene_aerosol(product, parts, angles, where, info)
            info["fallback"] = f"failed: {delegate.name} cannot correct the scene ({exc}); the AI result is kept"
            if self.dem is not None:
                info["terrain"] = "not corrected: the 6S inversion with the DEM is the fallback that failed"
            logger.warning("%s: the scene is out of the AI's distribution (%s) but %s failed (%s): the AI result "
                           "is kept", product.product_id, why, delegate.name, exc)
            return info
        if scored is not None and network_aot_replaces(str(fallback_info.get("aot_source", ""))):
            delegate, fallback_info = self._with_network_aot(product, sample, scored, delegate, fallback_info)
        del scored
        self._delegate = delegate
        self.name, self.gives_aot_map = delegate.name, delegate.gives_aot_map
        self.overlap, self.overlap_above = delegate.overlap, delegate.overlap_above
        logger.warning("%s: the scene is out of the AI's distribution (%s): corrected with %s instead",
                       product.product_id, why, delegate.name)
        return {**info, **fallback_info, **ood_info, "fallback": f"{delegate.name}: {why}"}

    def _with_terrain(self, product: L1CProduct, sample: SceneSample, means: np.ndarray | None,
                      info: dict[str, object]) -> dict[str, object]:
        """``--dem``: the network's scene atmosphere (mean AOT and water vapour, its aerosol choice) corrected
        by ``fallback`` (6s-ddv) with the DEM: per-pixel height and slope illumination, as sen2cor does. The
        network's AOT map is not used: one atmosphere for the scene, like 6s-ddv's terrain inversion. ``means``:
        the network's scene means (:meth:`_scene_aerosol`)."""
        if means is None or self.fallback is None:
            raise EotwinError("--dem with ai needs the scene's overview or a window reader and the 6s-ddv fallback")
        if not np.isfinite(means).all():
            raise EotwinError(f"{product.product_id}: the network found no valid cell to read the atmosphere from")
        aot, wv = (float(means[cellmath.ATMOSPHERE.index(k)]) for k in ("aot", "wv"))
        terrain = self.fallback()
        terrain.aot, terrain.wv, terrain.aerosol = aot, wv, "maritime" if self._maritime > 0.5 else "continental"
        if self._ozone is not None:
            terrain.ozone = self._ozone
        terrain_info = terrain.prepare(product, sample)
        self._delegate = terrain
        self.gives_aot_map = False
        self.overlap, self.overlap_above = terrain.overlap, terrain.overlap_above
        kept = {k: v for k, v in terrain_info.items() if k.startswith(("elevation", "terrain", "dem"))}
        return {**info, **kept, "aot": round(aot, 5), "wv": round(wv, 4), "aerosol": terrain.aerosol,
                "aot_source": "network scene mean", "wv_source": "network scene mean",
                "inversion": f"6S with the DEM ({terrain.name}'s terrain inversion: the network's scene atmosphere, "
                             "per-pixel height and slope illumination)"}

    def close(self) -> None:
        """Release what the corrector in use holds (the DEM of a terrain inversion or fallback)."""
        _release(self._delegate)

    def _with_network_aot(self, product: L1CProduct, sample: SceneSample, scored: tuple[list[np.ndarray], np.ndarray],
                          delegate: Corrector, ddv_info: dict[str, object]) -> tuple[Corrector, dict[str, object]]:
        """The fallback with the network's scene AOT instead of the dense-vegetation one (see
        :func:`~eotwin.atmocorr.retrieval.network_aot_replaces`); its aerosol model and water vapour stay."""
        parts, angles = scored
        aot = scene_mean_aot([self._model.predict(p, angles, sensor=product.spacecraft, ozone=self._ozone)[1]
                              for p in parts])
        if not math.isfinite(aot):  # the network found no usable pixel: the retrieval stands
            return delegate, ddv_info
        hybrid = self.fallback()
        hybrid.aot, hybrid.aerosol, hybrid.wv = aot, str(ddv_info["aerosol"]), float(ddv_info["wv"])
        hybrid_info = hybrid.prepare(product, sample)
        _release(delegate)  # the DDV run it replaces may hold the DEM
        kept = {k: v for k, v in ddv_info.items() if k.startswith(("wv", "aerosol", "ddv", "excluded"))}
        logger.info("%s: beyond the OOD threshold the network's scene AOT %.3f replaces the dense-vegetation "
                    "AOT %s", product.product_id, aot, ddv_info.get("aot"))
        return hybrid, {**hybrid_info, **kept, "aot": round(aot, 5), "ddv_aot": ddv_info.get("aot"),
                        "aot_source": f"network scene mean (the dense-vegetation AOT {ddv_info.get('aot')} is not "
                                      "used beyond the OOD threshold: its Kaufman ratios fail on vegetation unlike "
                                      "the temperate one)"}

    def _scene_parts(self, product: L1CProduct, sample: SceneSample
                     ) -> tuple[list[np.ndarray] | None, np.ndarray, str]:
        """What the scene-wide decisions look at: the whole scene (the pipeline's overview at step 1) or
        full-resolution windows spread over it (the network's cells need full resolution), the scene's mean
        angles, and where that was; ``None`` and why when the sample has neither."""
        from eotwin.atmocorr.ai import ood
        from eotwin.atmocorr.physics import relative_azimuth

        a = sample.angles
        angles = np.array([a["sun_zenith"], min(a["view_zenith"], float(self._model.lut.axes["vza"][-1])),
                           float(relative_azimuth(a["sun_azimuth"], a["view_azimuth"]))], np.float32).reshape(3, 1, 1)
        if sample.overview is not None and sample.overview_step == 1:
            return [sample.overview], angles, "the whole scene"
        if sample.read_window is None:
            return None, angles, "the scene sample has neither the whole scene nor a window reader"
        windows = ood.sample_windows(product.grid.height, product.grid.width)
        return ([sample.read_window(Window(*w)) for w in windows], angles,
                f"{len(windows)} windows of {windows[0][2]} x {windows[0][3]} px")

    def _score(self, product: L1CProduct, parts: list[np.ndarray] | None, angles: np.ndarray, where: str
               ) -> tuple[dict[str, object], bool]:
        """The run info of the OOD score of the scene's ``parts`` and whether it lies beyond the threshold."""
        from eotwin.atmocorr.ai import ood

        path = ood.stats_path(self._model.path)
        if not path.is_file():
            reason = f"unavailable: no OOD statistics {path.name} beside the model"
        elif parts is None:
            reason = f"unavailable: {where}"
        else:
            stats = ood.load_statistics(path)
            try:
                ood.check_config(stats, self._model.metadata["config"], path.name)
            except EotwinError as exc:
                stats, reason = None, f"unavailable: {exc}"
            if stats is not None:
                at_sea = [self._model.sea_level_toa(p, angles, product.spacecraft) for p in parts]  # as the network sees
                score, cells = ood.scene_score(at_sea, angles, self._model.lut, product.spacecraft, stats)
                del at_sea
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

    def _scene_aerosol(self, product: L1CProduct, parts: list[np.ndarray] | None, angles: np.ndarray, where: str,
                       info: dict[str, object]) -> np.ndarray | None:
        """Choose the scene's aerosol model from the network's mean P(maritime) (:func:`cells.snap_maritime`)
        and say so in ``info``; without parts to look at, the network's P per cell stays. Returns the network's
        scene means (:meth:`OnnxModel.scene_means`, the one pass over the parts) or None."""
        self._maritime = None
        if parts is None:
            info.update({"aerosol": "network P(maritime) per cell", "aerosol_source": f"no scene-wide choice: {where}"})
            return None
        means = self._model.scene_means(parts, angles, sensor=product.spacecraft, ozone=self._ozone)
        mean = float(means[cellmath.ATMOSPHERE.index("maritime")])
        if not math.isfinite(mean):
            info.update({"aerosol": "network P(maritime) per cell",
                         "aerosol_source": "no scene-wide choice: no valid cell"})
            return means
        self._maritime = used = cellmath.snap_maritime(mean)
        lo, hi = cellmath.SCENE_AEROSOL_SNAP
        model = "maritime" if used == 1.0 else "continental" if used == 0.0 else f"blend, P(maritime) {used:.3f}"
        info.update({"aerosol": model, "maritime_probability": round(mean, 4),
                     "aerosol_source": f"network, scene mean P(maritime) {mean:.3f} over {where} (one model below "
                                       f"{lo} or above {hi}, else their blend)"})
        return means

    def correct(self, toa: np.ndarray, grid: Grid, window: Window, valid: np.ndarray) -> BlockResult:
        """One row block (``window``: the block with ``overlap_above`` rows above it and ``overlap`` below).

        Blocks come in order from the top: the network's inputs and atmosphere of every atmosphere row are
        computed once and kept while later blocks need them (:class:`AtmosphereStream`), so a block's context
        rows cost a read, not a second pass of the network. The result equals one pass over the image.
        """
        from eotwin.atmocorr.correctors import BlockResult

        if self._delegate is not None:
            return self._delegate.correct(toa, grid, window, valid)
        if self._angles is None or self._model is None:
            raise EotwinError("the AI corrector was not prepared")
        model, stride = self._model, self._model.stride
        end = window.row_off + window.height
        if window.row_off == 0 or self._stream is None or self._stream.shape != (grid.height, grid.width):
            self._stream = AtmosphereStream(model, grid.height, grid.width, self._sensor, self._ozone, self._maritime)
        stream = self._stream
        # the network's inputs of the atmosphere rows lying wholly in the window (at the bottom edge the last,
        # partial one too) that earlier blocks did not give
        first_row = -(-window.row_off // stride)
        if stream.inputs_end < first_row and stream.inputs_end < stream.rows:
            raise EotwinError(f"internal: the AI corrector takes row blocks in order (rows {stream.inputs_end * stride}"
                              f"..{window.row_off} were skipped)")
        a_from = max(stream.inputs_end, first_row)
        a_to = stream.rows if end >= grid.height else end // stride
        if a_to > a_from:
            p0, p1 = a_from * stride - window.row_off, min(a_to * stride, end) - window.row_off
            cells_window = Window(a_from * stride, window.col_off, p1 - p0, window.width)
            angles = block_angles(self._angles, grid, cells_window, cell=model.cell)
            stream.add_inputs(toa[:, p0:p1], valid[p0:p1], angles, a_from)
        # the rows corrected: from the first whole cell in the window to its end less the context below
        r0 = -(-window.row_off // model.cell) * model.cell
        r1 = end if end >= grid.height else end - self.overlap
        boa = np.empty(toa.shape, dtype=np.float32)
        aot = np.empty(toa.shape[1:], dtype=np.float32)
        rows = slice(r0 - window.row_off, max(r1, r0) - window.row_off)
        for part in (slice(0, rows.start), slice(rows.stop, None)):  # context rows: no result
            boa[:, part], aot[part] = np.nan, np.nan
        if r1 > r0:
            a0, a1 = max(r0 // stride - 1, 0), min(-(-r1 // stride) + 1, stream.rows)
            atm, atm_angles = stream.atmosphere(a0, a1)
            boa[:, rows], aot[rows] = model.invert_rows(
                toa[:, rows], atm, atm_angles, row0=r0, atm_row0=a0, atm_rows=stream.rows, sensor=self._sensor,
                valid=valid[rows])
            if end < grid.height:  # near the bottom the blocks left all lie in this window: keep everything
                stream.forget_before(r1 // stride - 2)
        return BlockResult(boa, aot)


def _release(corrector: Corrector | None) -> None:
    """Let a corrector go of what it holds (a DEM), where it holds anything."""
    release = getattr(corrector, "close", None)
    if release is not None:
        release()


def _dem_median(path: Path, grid: Grid) -> float:
    """The DEM's median height over the product's grid (metres)."""
    import contextlib

    from eotwin.atmocorr.dem import DemOnGrid

    with contextlib.ExitStack() as stack:
        median, _ = DemOnGrid(path, grid, stack).scene_elevation()
    return float(median)


class AtmosphereStream:
    """The network's atmosphere of an image given in row bands from the top, each atmosphere row once.

    Keeps the network's inputs of the recent atmosphere rows (a row's inputs depend on its own pixels
    only) and its outputs; a row's output needs the inputs of ``context`` rows on each side (the
    receptive field of the network's windows), so the network runs on the rows whose context has
    arrived, with that context, and each output row is computed once.
    """

    def __init__(self, model: OnnxModel, height: int, width: int, sensor: str, ozone: float | None,
                 maritime: float | None = None) -> None:
        self.model, self.sensor, self.ozone, self.maritime = model, sensor, ozone, maritime
        self.shape = (height, width)
        self.rows = -(-height // model.stride)  # atmosphere rows of the image
        windows = model.metadata["config"]["windows"]
        self.context = -(-(max(windows) // 2) // model.out_stride)
        self.inputs_start = self.inputs_end = 0
        self._cells: np.ndarray | None = None
        self._per_cell: np.ndarray | None = None
        self._in_angles: np.ndarray | None = None
        self.atm_start = self.atm_end = 0
        self._atm: np.ndarray | None = None
        self._atm_angles: np.ndarray | None = None

    def add_inputs(self, toa: np.ndarray, valid: np.ndarray, angles: np.ndarray, first_row: int) -> None:
        """The inputs of atmosphere rows from ``first_row`` on (``toa``: their pixel rows; ``angles`` at cells)."""
        m = self.model
        cells, per_cell, atm_angles = cellmath.network_inputs(
            m.sea_level_toa(toa, angles, self.sensor), valid, angles, m.lut, self.sensor, cell=m.cell, out_stride=m.out_stride, bright_toa=m.bright_toa,
            angles_at_cells=True, hypotheses=m.hypotheses)
        if self._cells is None or first_row != self.inputs_end:
            self._cells, self._per_cell, self._in_angles = cells, per_cell, atm_angles
            self.inputs_start = first_row
        else:
            self._cells = np.concatenate([self._cells, cells], axis=1)
            self._per_cell = np.concatenate([self._per_cell, per_cell], axis=1)
            self._in_angles = np.concatenate([self._in_angles, atm_angles], axis=1)
        self.inputs_end = self.inputs_start + self._in_angles.shape[1]

    def atmosphere(self, a0: int, a1: int) -> tuple[np.ndarray, np.ndarray]:
        """The atmosphere (4, a1 - a0, W) and its angles (3, a1 - a0, W) of atmosphere rows ``a0 .. a1``."""
        if a1 > self.atm_end:
            self._run_network(max(self.atm_end, a0), a1)
        if a0 < self.atm_start or a1 > self.atm_end:
            raise EotwinError(f"internal: atmosphere rows {a0}..{a1} are no longer (or not yet) at hand")
        rows = slice(a0 - self.atm_start, a1 - self.atm_start)
        return self._atm[:, rows], self._atm_angles[:, rows]

    def _run_network(self, lo: int, hi: int) -> None:
        """Output rows ``lo ..`` (at least to ``hi``, and as far as the inputs at hand give them exactly)."""
        hi = max(hi, self.inputs_end - self.context) if self.inputs_end < self.rows else self.rows
        need0, need1 = max(lo - self.context, 0), min(hi + self.context, self.rows)
        if need0 < self.inputs_start or need1 > self.inputs_end:
            raise EotwinError(f"internal: the network's inputs {self.inputs_start}..{self.inputs_end} lack the "
                              f"context of atmosphere rows {lo}..{hi}")
        os_ = self.model.out_stride
        i0, i1 = need0 - self.inputs_start, need1 - self.inputs_start
        atm = self.model.network(self._cells[:, i0 * os_: i1 * os_], self._per_cell[:, i0 * os_: i1 * os_], self.ozone,
                                 self.maritime)
        keep = slice(lo - need0, hi - need0)
        atm, angles = atm[:, keep], self._in_angles[:, lo - self.inputs_start: hi - self.inputs_start]
        if self._atm is None or lo != self.atm_end:
            self._atm, self._atm_angles, self.atm_start = atm, angles, lo
        else:
            self._atm = np.concatenate([self._atm, atm], axis=1)
            self._atm_angles = np.concatenate([self._atm_angles, angles], axis=1)
        self.atm_end = self.atm_start + self._atm.shape[1]

    def forget_before(self, row: int) -> None:
        """Drop the atmosphere rows before ``row`` and the inputs no later output row needs."""
        if self._atm is not None and row > self.atm_start:
            cut = min(row, self.atm_end) - self.atm_start
            self._atm, self._atm_angles = self._atm[:, cut:].copy(), self._atm_angles[:, cut:].copy()
            self.atm_start += cut
        first_input = min(row, self.atm_end) - self.context
        if self._cells is not None and first_input > self.inputs_start:
            cut = min(first_input, self.inputs_end) - self.inputs_start
            os_ = self.model.out_stride
            self._cells = self._cells[:, cut * os_:].copy()
            self._per_cell = self._per_cell[:, cut * os_:].copy()
            self._in_angles = self._in_angles[:, cut:].copy()
            self.inputs_start += cut
