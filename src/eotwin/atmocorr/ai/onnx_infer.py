"""ONNX export (torch, training side) and inference through onnxruntime plus the 6S table (no torch).

Inference of an image: TOA to cells (:func:`~eotwin.atmocorr.ai.cells.cell_inputs`), the ONNX network
to the atmosphere on atmosphere cells, the 6S table to the terms of every band there
(:func:`~eotwin.atmocorr.ai.cells.table_terms`), bilinear upsampling of the terms to cells and the
exact inversion per pixel, band by band (bounded memory; numpy broadcasting, no per-pixel terms). The network's context is a set of window
statistics on whole cells, so a block that starts on a whole atmosphere cell and carries
``overlap`` pixels of context gives exactly the values of one pass (the pipeline's corrector,
:class:`eotwin.atmocorr.ai.corrector.AiCorrector`).

The ONNX file carries its configuration (cells, windows, overlap, band order) as metadata, so a
model file is self-describing.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eotwin.atmocorr.ai import DEFAULT_MODEL_PATH
from eotwin.atmocorr.ai import cells as cellmath
from eotwin.atmocorr.physics import forward_gain, invert_gain
from eotwin.errors import EotwinError
from eotwin.geo.grid import Window
from eotwin.progress import ProgressReporter, ensure_progress
from eotwin.sentinel2.bands import L2A_BANDS
from eotwin.sentinel2.metadata import interpolate_azimuth, interpolate_nodes

if TYPE_CHECKING:  # pragma: no cover
    from eotwin.atmocorr.ai.model import AtmoNet
    from eotwin.geo.grid import Grid
    from eotwin.sentinel2.metadata import AngleGrid

OPSET = 17
REFERENCE_WV, REFERENCE_O3 = 2.0, 0.33  # gas columns of the sea-level conversion's terms (they cancel there)
METADATA_KEY = "eotwin_atmocorr"
MODEL_FORMAT = "atmonet-2"  # cells in, atmosphere out; the 6S table does the rest


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
        self.lut = load_lut(lut_path)  # sea level: the network's inputs and its OOD score are always read there
        self.ground_lut = self.lut  # the table the surface is inverted with (see :meth:`use_elevation`)
        self.elevation: float | None = None
        self.conversion_angles: np.ndarray | None = None  # (3, 1, 1) scene angles of :meth:`sea_level_toa`

    def use_elevation(self, elevation: float | None) -> None:
        """Work on ground at ``elevation`` metres (None: sea level).

        The network was trained at sea level. Its inputs are therefore the TOA the same surface would give at
        sea level (:meth:`sea_level_toa`: the ground's aerosol-free terms undone, sea level's applied), and the
        surface is inverted with the 6S table at the ground's surface pressure (:meth:`SixSLut.at_pressure`).
        On scenes made by 6S itself at 1, 2 and 3 km this brings the error to the sea-level one (mean RMSE
        0.0020-0.0025 against 0.0050-0.0082 with the sea-level table, docs/atmocorr-ai.md)."""
        from eotwin.atmocorr.terrain import pressure_ratio

        p = 1.0 if elevation is None else float(pressure_ratio(float(elevation)))
        self.elevation = None if p == 1.0 else elevation  # sea level: nothing to convert
        self.ground_lut = self.lut if p == 1.0 else self.lut.at_pressure(p)

    def sea_level_toa(self, toa: np.ndarray, angles: np.ndarray, sensor: str) -> np.ndarray:
        """``toa`` (12, h, w) as the same ground would look at sea level (itself when :attr:`elevation` is None).

        Per band, the ground's aerosol-free 6S terms at the mean ``angles`` (:attr:`conversion_angles` when set:
        the product's scene means, so every block converts alike) are inverted and sea level's
        applied: the missing Rayleigh path and transmittance come back, and what the aerosol adds stays for
        the network to read. The gas terms are the same in both tables (at a reference column), so they cancel.
        """
        if self.elevation is None:
            return toa
        if self.conversion_angles is not None:  # one conversion for a whole product, whatever its blocks
            angles = self.conversion_angles
        sza, vza, raa = (float(np.nanmean(np.asarray(angles[i], dtype=np.float64))) for i in range(3))
        terms = [t.terms_for(sensor, L2A_BANDS, "continental", 0.0, sza, vza, raa, REFERENCE_WV, REFERENCE_O3,
                             clamp=True) for t in (self.ground_lut, self.lut)]
        ground, sea = ((t.path, t.tg * t.t_down * t.t_up, t.s_alb) for t in terms)
        out = np.empty(np.shape(toa), dtype=np.float32)
        for i in range(len(L2A_BANDS)):  # band by band: one band's temporaries at a time
            rho = invert_gain(np.asarray(toa[i], dtype=np.float32), *(np.float32(v[i]) for v in ground))
            out[i] = forward_gain(rho, *(np.float32(v[i]) for v in sea))
        return out

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
        atm, atm_angles, _ = self._atmosphere_and_weights(toa, angles, valid, sensor=sensor, cell_angles=cell_angles,
                                                          ozone=ozone)
        return atm, atm_angles

    def _atmosphere_and_weights(self, toa: np.ndarray, angles: np.ndarray, valid: np.ndarray | None, *, sensor: str,
                                cell_angles: bool = False, ozone: float | None = None
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`atmosphere` and each atmosphere cell's share of valid pixels (H, W)."""
        if ozone is not None and not self.lut.contains("o3", ozone):  # the terms lookup would clamp it silently
            lo, hi = self.lut.axes["o3"][[0, -1]]
            raise EotwinError(f"ozone {ozone} cm-atm is outside the 6S table's range [{lo:.2f}, {hi:.2f}]")
        if valid is None:
            valid = np.ones(toa.shape[1:], dtype=bool)
        cells, per_cell, atm_angles = cellmath.network_inputs(
            self.sea_level_toa(toa, angles, sensor), valid, angles, self.lut, sensor, cell=self.cell, out_stride=self.out_stride,
            bright_toa=self.bright_toa, angles_at_cells=cell_angles, hypotheses=self.hypotheses)
        weights = cellmath.pool(cells[cellmath.VALID_INPUT][None], self.out_stride)[0]
        return self.network(cells, per_cell, ozone), atm_angles, weights

    def scene_means(self, parts: list[np.ndarray], angles: np.ndarray, *, sensor: str,
                    ozone: float | None = None) -> np.ndarray:
        """The network's atmosphere (:data:`cells.ATMOSPHERE`, 4 values) averaged over the parts of a scene
        (TOA (12, h, w) each, NaN where invalid), each atmosphere cell weighted by its share of valid pixels;
        NaN where no cell has one."""
        sums, w_sum = np.zeros(len(cellmath.ATMOSPHERE)), 0.0
        for toa in parts:
            toa = np.asarray(toa, dtype=np.float32)
            atm, _, weights = self._atmosphere_and_weights(toa, angles, np.isfinite(toa).all(axis=0), sensor=sensor,
                                                           ozone=ozone)
            sums += (atm.astype(np.float64) * weights).sum(axis=(1, 2))
            w_sum += float(weights.sum())
        return sums / w_sum if w_sum > 0 else np.full(len(cellmath.ATMOSPHERE), math.nan)

    def scene_maritime(self, parts: list[np.ndarray], angles: np.ndarray, *, sensor: str,
                       ozone: float | None = None) -> tuple[float, float]:
        """The network's mean P(maritime) over the parts of a scene and the P the scene is corrected with
        (:func:`cells.scene_maritime`)."""
        mean = float(self.scene_means(parts, angles, sensor=sensor, ozone=ozone)[cellmath.ATMOSPHERE.index("maritime")])
        return mean, cellmath.snap_maritime(mean)

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
        aerosol: str = "scene",
        progress: ProgressReporter | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """BOA (12, h, w) and AOT (h, w) of an image (one pass; NaN where invalid), or of its ``rows``
        (start, stop; the start on a whole cell) only: the rest of the image is context. ``ozone``: see
        :meth:`atmosphere`. ``aerosol`` "scene": one aerosol model (or blend) for the image from the
        network's mean P(maritime) (:func:`cells.scene_maritime`, as ``eotwin atmocorr run``); "cells": the
        network's P per atmosphere cell.

        Atmosphere cells start at the image origin, so a caller that cuts a larger image must cut it
        on multiples of :attr:`stride` (see :class:`AiCorrector`) for results equal to one pass.
        """
        toa = np.asarray(toa, dtype=np.float32)
        if toa.ndim != 3 or toa.shape[0] != len(L2A_BANDS):
            raise EotwinError(f"TOA stack must be (12, h, w) of the bands {', '.join(L2A_BANDS)}, got {toa.shape}")
        h, w = toa.shape[1:]
        if not cell_angles and angles.shape[1:] not in ((1, 1), (h, w)):
            raise EotwinError(f"angles must be (3, {h}, {w}) or (3, 1, 1), got {angles.shape}")
        if aerosol not in ("scene", "cells"):
            raise EotwinError(f"aerosol must be 'scene' or 'cells', got {aerosol!r}")
        atm, atm_angles, weights = self._atmosphere_and_weights(toa, angles, valid, sensor=sensor,
                                                                cell_angles=cell_angles, ozone=ozone)
        if aerosol == "scene":
            used = cellmath.scene_maritime(atm[cellmath.ATMOSPHERE.index("maritime")], weights)[1]
            if math.isfinite(used):
                atm[cellmath.ATMOSPHERE.index("maritime")] = used
        r0, r1 = rows if rows is not None else (0, h)
        if r0 % self.cell:
            raise EotwinError(f"rows must start on a whole cell ({self.cell} px), got {r0}")
        return self.invert_rows(toa[:, r0:r1], atm, atm_angles, row0=r0, atm_row0=0, atm_rows=atm.shape[1],
                                sensor=sensor, valid=None if valid is None else np.asarray(valid)[r0:r1],
                                progress=progress)

    def network(self, cells: np.ndarray, per_cell: np.ndarray, ozone: float | None = None,
                maritime: float | None = None) -> np.ndarray:
        """The atmosphere (4, H, W) of network inputs (see :func:`cells.network_inputs`); ``ozone`` and
        ``maritime`` (the scene's P(maritime)) replace the network's estimates when given."""
        (atm,) = self.session.run(["atmosphere"], {"cells": np.ascontiguousarray(cells[None]),
                                                   "angles": np.ascontiguousarray(per_cell[None])})
        atm = atm[0]
        if ozone is not None:
            atm[cellmath.ATMOSPHERE.index("o3")] = ozone
        if maritime is not None:
            atm[cellmath.ATMOSPHERE.index("maritime")] = maritime
        return atm

    def invert_rows(
        self, toa: np.ndarray, atm: np.ndarray, atm_angles: np.ndarray, *, row0: int, atm_row0: int, atm_rows: int,
        sensor: str, valid: np.ndarray | None = None, progress: ProgressReporter | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """BOA (12, h, w) and AOT (h, w) of the image rows ``row0 .. row0 + h`` (``row0`` on a whole cell) from
        the atmosphere rows ``atm_row0 ..`` of an image of ``atm_rows`` atmosphere rows: those of the rows
        and one more on each side (bilinear) must be there."""
        h, w = toa.shape[1:]
        r0, r1 = row0, row0 + h
        a0 = max(r0 // self.stride - 1, 0)
        a1 = min(-(-r1 // self.stride) + 1, atm_rows)
        if a0 < atm_row0 or a1 > atm_row0 + atm.shape[1]:
            raise EotwinError(f"internal: atmosphere rows {atm_row0}..{atm_row0 + atm.shape[1]} do not cover {a0}..{a1}")
        sub = slice(a0 - atm_row0, a1 - atm_row0)
        path, gain, s_alb = cellmath.table_terms(self.ground_lut, sensor, atm[:, sub], atm_angles[:, sub], L2A_BANDS)
        c0, c1 = r0 // self.cell, -(-r1 // self.cell)
        wc = atm.shape[2] * self.out_stride
        up = lambda t: cellmath.upsample_bilinear(t, self.out_stride, c1 - c0, wc, row0=c0, x_row0=a0,  # noqa: E731
                                                  x_rows=atm_rows)
        boa = np.empty((len(L2A_BANDS), h, w), dtype=np.float32)
        with ensure_progress(progress).task("AI correction (onnxruntime + 6S table)", total=len(L2A_BANDS)) as task:
            for i in range(len(L2A_BANDS)):
                boa[i] = cellmath.invert_band(toa[i], up(path[i]), up(gain[i]), up(s_alb[i]), self.cell)
                task.advance()
        aot = np.repeat(np.repeat(up(atm[0, sub]), self.cell, axis=0), self.cell, axis=1)[:h, :w]
        if valid is not None:  # broadcast masks: boolean indexing of a (12, h, w) block gathers index arrays
            invalid = ~np.asarray(valid, dtype=bool)
            np.copyto(boa, np.float32(np.nan), where=invalid)
        np.copyto(aot, np.float32(np.nan), where=np.isnan(boa[0]))
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
