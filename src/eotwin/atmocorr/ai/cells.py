"""Pure numpy pieces shared by training and inference of the AI correction (no torch, no I/O).

- :func:`cell_inputs`: the network's input, TOA reduced to cells of ``cell`` x ``cell`` pixels
  (valid-pixel mean and minimum per band, valid fraction), padded to whole atmosphere cells;
- :func:`cell_angles`: the angles averaged over the same cells;
- :func:`table_terms`: the 6S terms of every band from the network's atmosphere, through
  :meth:`~eotwin.atmocorr.lut.SixSLut.terms_for` (what :class:`~eotwin.atmocorr.ai.model.TableLayer`
  computes in torch during training);
- :func:`upsample_bilinear`: atmosphere-cell values to cells (or pixels), the same arithmetic as
  torch's ``interpolate(mode="bilinear", align_corners=False)``;
- :func:`invert_band`: the Lambertian inversion of one band with its terms given per cell (constant
  within a cell, broadcast over its pixels: no per-pixel copy of any term).

The terms are thus bilinear between atmosphere cells (240 m) at the resolution of the cells (60 m)
and constant within a cell: the same in training (:func:`eotwin.atmocorr.ai.model.upsample`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eotwin.atmocorr.physics import AI_DENOMINATOR_FLOOR, invert_gain
from eotwin.sentinel2.bands import L2A_BANDS as L2A_ORDER

N_BANDS = 12
B02 = 1  # index of B02 in the L2A band order (B01, B02, ...)
ATMOSPHERE = ("aot", "wv", "o3", "maritime")  # the network's outputs per atmosphere cell, in this order

# "what would the surface be if the AOT were ...": the cells' TOA inverted with the table under a few
# atmospheres (table nodes: exact), continental aerosol, reference water vapour and ozone. The
# bands of dark-object and dark-dense-vegetation reasoning (B12 hardly feels aerosol); the network
# learns which hypothesis makes the surface look like a surface, with the geometry divided out by 6S.
HYPOTHESIS_AOT = (0.05, 0.2, 0.5)
HYPOTHESIS_BANDS = ("B01", "B02", "B04", "B12")
# the same for water vapour: B09 (absorbed) and B8A (hardly) under a few water vapour columns
# (table nodes), AOT 0.2: where the two surfaces agree is the water vapour (sen2cor's band ratio, learned)
HYPOTHESIS_WV = (0.2, 1.0, 2.0, 3.5, 5.0)
HYPOTHESIS_WV_BANDS = ("B8A", "B09")
# hypothesis levels: 0 none, 1 the AOT hypotheses under continental aerosol, 2 under continental and
# maritime aerosol (the two answers differ in their colour: evidence of the aerosol type)
HYPOTHESIS_AEROSOLS = {0: (), 1: ("continental",), 2: ("continental", "maritime")}
N_BASE_INPUTS = 2 * N_BANDS + 1


def n_cell_inputs(hypotheses: int = 2) -> int:
    """Channels of the network's cell input at a hypothesis level (see :data:`HYPOTHESIS_AEROSOLS`)."""
    if not hypotheses:
        return N_BASE_INPUTS
    n_aot = len(HYPOTHESIS_AOT) * len(HYPOTHESIS_BANDS) * len(HYPOTHESIS_AEROSOLS[int(hypotheses)])
    return N_BASE_INPUTS + 2 * (n_aot + len(HYPOTHESIS_WV) * len(HYPOTHESIS_WV_BANDS))


N_CELL_INPUTS = n_cell_inputs(2)


def overlap_for(windows: tuple[int, ...] | list[int], cell: int, out_stride: int) -> int:
    """Pixels of context a block needs above and below for the one-pass result (whole atmosphere cells).

    A pixel's terms are bilinear between its atmosphere cell and the next one, whose value pools
    ``out_stride`` cells, each seeing ``max(windows) // 2`` cells around it: ``out_stride +
    max(windows) // 2`` cells beyond the block, rounded up to whole atmosphere cells.
    """
    cells = out_stride + max(windows) // 2
    return -(-cells // out_stride) * out_stride * cell


def _pad_to(x: np.ndarray, multiple: int, value: float) -> np.ndarray:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)], constant_values=value)


def _block_reduce(x: np.ndarray, cell: int, op: np.ufunc) -> np.ndarray:
    """``op`` (add or minimum) over ``cell`` x ``cell`` blocks of the last two axes, by strided slices:
    a few passes over memory, several times faster than numpy's reduction over a reshaped 5-D view."""
    out = x[..., 0::cell].copy()
    for k in range(1, cell):
        op(out, x[..., k::cell], out=out)
    rows = out[..., 0::cell, :].copy()
    for k in range(1, cell):
        op(rows, out[..., k::cell, :], out=rows)
    return rows


def cell_inputs(toa: np.ndarray, valid: np.ndarray, cell: int, out_stride: int, bright_toa: float) -> np.ndarray:
    """(25, H, W) float32: per cell the valid-pixel mean and minimum of each band and the valid fraction.

    Pixels that are invalid, not finite or bright (B02 TOA above ``bright_toa``: cloud, snow) do not
    count; a cell without such pixels has zeros. The image is padded with invalid pixels to whole
    cells, the cells with empty cells to whole atmosphere cells (``out_stride`` cells), so ``H`` and
    ``W`` are multiples of ``out_stride``.
    """
    toa = np.asarray(toa, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool)
    h = toa.shape[1]
    step = cell * CELL_ROWS_PER_CHUNK
    if h <= step:
        return _pad_to(_cell_statistics(toa, valid, cell, bright_toa), out_stride, 0.0)
    # a few cell rows at a time: each chunk's temporaries stay in the CPU cache (cells are independent)
    parts = [_cell_statistics(toa[:, r : r + step], valid[r : r + step], cell, bright_toa) for r in range(0, h, step)]
    return _pad_to(np.concatenate(parts, axis=1), out_stride, 0.0)


CELL_ROWS_PER_CHUNK = 4


def _cell_statistics(toa: np.ndarray, valid: np.ndarray, cell: int, bright_toa: float) -> np.ndarray:
    """:func:`cell_inputs` of an image band without the padding to whole atmosphere cells."""
    ok = valid & np.isfinite(toa.sum(axis=0)) & (toa[B02] <= bright_toa)
    h, w = toa.shape[1:]
    hc, wc = -(-h // cell), -(-w // cell)
    total = np.zeros((N_BANDS, hc, wc), np.float32)
    low = np.zeros((N_BANDS, hc, wc), np.float32)
    count = np.zeros((hc, wc), np.float32)
    # whole cells straight from the image; the partial last row and column of cells from small padded copies
    hf, wf = (h // cell) * cell, (w // cell) * cell
    parts = [(slice(0, hf), slice(0, wf))]
    if hf < h:
        parts.append((slice(hf, h), slice(0, w)))
    if wf < w:
        parts.append((slice(0, hf), slice(wf, w)))
    for rows, cols in parts:
        x, m = toa[:, rows, cols], ok[rows, cols]
        if x.shape[1] == 0 or x.shape[2] == 0:
            continue
        ph, pw = (-x.shape[1]) % cell, (-x.shape[2]) % cell
        if ph or pw:
            x, m = np.pad(x, [(0, 0), (0, ph), (0, pw)]), np.pad(m, [(0, ph), (0, pw)])
        target = (slice(rows.start // cell, rows.start // cell + x.shape[1] // cell),
                  slice(cols.start // cell, cols.start // cell + x.shape[2] // cell))
        if m.all():
            total[:, target[0], target[1]] = _block_reduce(x, cell, np.add)
            low[:, target[0], target[1]] = _block_reduce(x, cell, np.minimum)
        else:
            total[:, target[0], target[1]] = _block_reduce(np.where(m, x, np.float32(0)), cell, np.add)
            low[:, target[0], target[1]] = _block_reduce(np.where(m, x, np.float32(np.inf)), cell, np.minimum)
        count[target] = _block_reduce(m.astype(np.float32), cell, np.add)
    mean = total / np.maximum(count, 1.0)
    low = np.where(count > 0, low, np.float32(0))
    return np.concatenate([mean, low, (count / (cell * cell))[None]]).astype(np.float32)


def cell_angles(angles: np.ndarray, cell: int, out_stride: int) -> np.ndarray:
    """(3, H, W) angles averaged over cells (edge values repeated into the padding)."""
    angles = np.asarray(angles, dtype=np.float32)
    stride = cell * out_stride
    h, w = angles.shape[1:]
    ph, pw = (-h) % stride, (-w) % stride
    if ph or pw:
        angles = np.pad(angles, [(0, 0), (0, ph), (0, pw)], mode="edge")
    n, h, w = angles.shape
    return angles.reshape(n, h // cell, cell, w // cell, cell).mean(axis=(2, 4), dtype=np.float32)


def pad_edge(x: np.ndarray, multiple: int) -> np.ndarray:
    """(..., H, W) padded by repeating the edge to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)], mode="edge")


def pool(x: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks of the last two axes (their sizes are multiples of it)."""
    *lead, h, w = x.shape
    return x.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


def hypothesis_features(lut, sensor: str, cells: np.ndarray, atm_angles: np.ndarray, out_stride: int,
                        aerosols: tuple[str, ...] = ("continental", "maritime")) -> np.ndarray:
    """Cell means then minima of :data:`HYPOTHESIS_BANDS` inverted under each :data:`HYPOTHESIS_AOT`
    atmosphere of each aerosol model in ``aerosols``, then of :data:`HYPOTHESIS_WV_BANDS` under each
    :data:`HYPOTHESIS_WV` (continental), with the table's terms at the atmosphere cells' angles
    (3, H/out_stride, W/out_stride), constant over their cells."""
    sza, vza, raa = (atm_angles[i][None].astype(np.float64) for i in range(3))
    expand = lambda x: np.repeat(np.repeat(x.astype(np.float32), out_stride, axis=-2), out_stride, axis=-1)  # noqa: E731
    valid = cells[2 * N_BANDS][None, None] > 0
    out = []
    hypotheses = [(HYPOTHESIS_BANDS, aerosol, np.asarray(HYPOTHESIS_AOT, np.float64)[:, None, None], lut.wv_ref)
                  for aerosol in aerosols]
    hypotheses.append((HYPOTHESIS_WV_BANDS, "continental", 0.2, np.asarray(HYPOTHESIS_WV, np.float64)[:, None, None]))
    for bands, aerosol, aot, wv in hypotheses:
        t = lut.terms_for(sensor, bands, aerosol, aot, sza, vza, raa, wv, lut.o3_ref, clamp=True)
        path, gain, s_alb = (expand(x) for x in (t.path, t.tg * t.t_down * t.t_up, t.s_alb))  # (B, K, H, W)
        idx = [L2A_ORDER.index(b) for b in bands]
        for offset in (0, N_BANDS):  # means, then minima
            rho = invert_gain(cells[[offset + i for i in idx]][:, None], path, gain, s_alb,
                              floor=AI_DENOMINATOR_FLOOR)
            out.append(np.where(valid, rho, 0.0).reshape(-1, *cells.shape[1:]))
    return np.concatenate(out).astype(np.float32)


def network_inputs(
    toa: np.ndarray,
    valid: np.ndarray,
    angles: np.ndarray,
    lut,
    sensor: str,
    *,
    cell: int,
    out_stride: int,
    bright_toa: float,
    angles_at_cells: bool = False,
    hypotheses: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Everything the network sees, the same in training and inference.

    Returns (cells (n_cell_inputs(hypotheses), H, W), angles on cells (3, H, W), angles on atmosphere
    cells). ``hypotheses`` is the level of :data:`HYPOTHESIS_AEROSOLS` (True counts as 1).
    ``angles`` are per pixel (3, h, w), per cell with ``angles_at_cells``, or (3, 1, 1) for the same
    angles everywhere.
    """
    base = cell_inputs(toa, valid, cell, out_stride, bright_toa)
    shape = base.shape[1:]
    angles = np.asarray(angles, dtype=np.float32)
    if angles.shape[1:] == (1, 1):
        per_cell = np.ascontiguousarray(np.broadcast_to(angles, (3, *shape)))
    elif angles_at_cells:
        per_cell = pad_edge(angles, out_stride)[:, : shape[0], : shape[1]]
    else:
        per_cell = cell_angles(angles, cell, out_stride)
    atm_angles = pool(per_cell, out_stride)
    if not hypotheses:
        return base, per_cell, atm_angles
    hyp = hypothesis_features(lut, sensor, base, atm_angles, out_stride, HYPOTHESIS_AEROSOLS[int(hypotheses)])
    return np.concatenate([base, hyp]), per_cell, atm_angles


def table_terms(
    lut, sensor: str, atmosphere: np.ndarray, angles: np.ndarray, bands: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(path, gain, s_alb), each (12, H, W), from the atmosphere (4, H, W) and angles (3, H, W).

    The two aerosol models' terms are blended by the network's P(maritime), as in training; when it is
    below 1e-3 (above 1 - 1e-3) everywhere, only one model is looked up.
    """
    aot, wv, o3, p_mar = (atmosphere[i].astype(np.float64) for i in range(4))
    sza, vza, raa = (angles[i].astype(np.float64) for i in range(3))
    if float(p_mar.max()) < 1e-3:
        p_mar = np.zeros_like(p_mar)  # snap: the maritime look-up would change nothing visible
    elif float(p_mar.min()) > 1 - 1e-3:
        p_mar = np.ones_like(p_mar)
    out = [np.zeros((len(bands), *aot.shape)) for _ in range(3)]
    for aerosol, weight in (("continental", 1.0 - p_mar), ("maritime", p_mar)):
        if not weight.any():
            continue
        t = lut.terms_for(sensor, bands, aerosol, aot, sza, vza, raa, wv, o3, clamp=True)
        for acc, part in zip(out, (t.path, t.tg * t.t_down * t.t_up, t.s_alb), strict=True):
            acc += weight * part
    path, gain, s_alb = out
    return path.astype(np.float32), gain.astype(np.float32), s_alb.astype(np.float32)


VALID_INPUT = 2 * N_BANDS  # the cell input holding the share of valid pixels (see :func:`cell_inputs`)
# The aerosol model is a property of the scene, not of a cell: the scene's mean P(maritime) decides it,
# snapped to one model when clear (below / above these) and kept as a blend in between (see scene_maritime)
SCENE_AEROSOL_SNAP = (0.35, 0.65)


def scene_maritime(p_maritime: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(the scene's mean P(maritime), weighted by each atmosphere cell's share of valid pixels; the P the
    whole scene is corrected with: 0 or 1 beyond :data:`SCENE_AEROSOL_SNAP`, else the mean). NaN, NaN when
    no cell has a valid pixel.

    Why: on 6S-made leave-one-source-out scenes (seeds 1000-4000, BigEarthNet, Major-TOM, PROSAIL) the
    per-cell blend of the two models' terms follows the surface as much as the aerosol; one choice per
    scene lowered the mean RMSE on every source and seed (docs/atmocorr-ai.md).
    """
    w = np.asarray(weights, dtype=np.float64)
    total = float(w.sum())
    if total <= 0:
        return math.nan, math.nan
    mean = float((np.asarray(p_maritime, dtype=np.float64) * w).sum() / total)
    return mean, snap_maritime(mean)


def snap_maritime(mean: float) -> float:
    """The P(maritime) a scene of mean P ``mean`` is corrected with: 0 or 1 beyond :data:`SCENE_AEROSOL_SNAP`,
    else ``mean`` (the blend); NaN stays NaN."""
    lo, hi = SCENE_AEROSOL_SNAP
    return 0.0 if mean < lo else 1.0 if mean > hi else mean


def upsample_bilinear(x: np.ndarray, factor: int, h: int, w: int, *, row0: int = 0, x_row0: int = 0,
                      x_rows: int | None = None) -> np.ndarray:
    """(..., H, W) -> (..., h, w): torch's bilinear ``align_corners=False`` upsampling by ``factor``, cropped.

    For a band of rows: output rows ``row0 .. row0 + h`` of the whole upsampled grid, from ``x`` holding
    rows ``x_row0 ..`` of the whole coarse grid of ``x_rows`` rows (clamping happens at its edges only).
    """
    x = np.asarray(x, dtype=np.float32)
    x_rows = x_rows if x_rows is not None else x_row0 + x.shape[-2]

    def axis_weights(start: int, n_out: int, n_in: int, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(start, start + n_out, dtype=np.float64) + 0.5) / factor - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo - first, hi - first, (src - lo).astype(np.float32)

    r0, r1, fr = axis_weights(row0, h, x_rows, x_row0)
    if r0.size and (r0.min() < 0 or r1.max() >= x.shape[-2]):
        raise ValueError("upsample_bilinear: the coarse rows given do not cover the rows asked for")
    c0, c1, fc = axis_weights(0, w, x.shape[-1], 0)
    rows = x[..., r0, :] * (1 - fr)[:, None] + x[..., r1, :] * fr[:, None]
    return rows[..., c0] * (1 - fc) + rows[..., c1] * fc


def invert_band(toa: np.ndarray, path: np.ndarray, gain: np.ndarray, s_alb: np.ndarray, cell: int) -> np.ndarray:
    """Surface reflectance (h, w) of one band; the terms are per cell (H, W) with H*cell >= h, W*cell >= w."""
    h, w = toa.shape
    hc, wc = -(-h // cell), -(-w // cell)
    ph, pw = hc * cell - h, wc * cell - w
    x = np.pad(toa, [(0, ph), (0, pw)]) if ph or pw else toa
    view = x.reshape(hc, cell, wc, cell)
    per_cell = lambda t: t[:hc, None, :wc, None].astype(np.float32)  # noqa: E731
    # the reciprocal per cell, multiplied: the per-pixel divisions cost more than the last bit it changes
    y = invert_gain(view, per_cell(path), None, per_cell(s_alb), inverse_gain=per_cell(1.0 / gain),
                    floor=AI_DENOMINATOR_FLOOR)
    return y.reshape(hc * cell, wc * cell)[:h, :w]


# ----------------------------------------------------------------------------- 6S table terms per scene
@dataclass
class SceneTables:
    """The table's terms for a batch of scenes (each one geometry and spacecraft), for :class:`TableLayer`.

    Shapes (n scenes, 2 aerosol models [continental, maritime], nodes..., 12 bands): ``path``
    (n, 2, aot, wv, o3, 12); ``log_t`` = log(t_down t_up) (n, 2, aot, 12); ``s_alb`` (n, 2, aot, 12);
    ``log_tg`` (n, wv, o3, 12).
    """

    aot_nodes: np.ndarray
    wv_nodes: np.ndarray
    o3_nodes: np.ndarray
    path: np.ndarray
    log_t: np.ndarray
    s_alb: np.ndarray
    log_tg: np.ndarray


def scene_tables(lut, geometries: list[tuple[str, float, float, float]]) -> SceneTables:
    """Terms at the table's AOT, water-vapour and ozone nodes for each (sensor, sza, vza, raa): numpy, so the
    processes that simulate training batches never import torch."""
    aot, wv, o3 = lut.axes["aot"], lut.axes["wv"], lut.axes["o3"]
    grid = np.meshgrid(aot, wv, o3, indexing="ij")
    paths, log_ts, salbs, log_tgs = [], [], [], []
    for sensor, sza, vza, raa in geometries:
        per_model = [lut.terms_for(sensor, L2A_ORDER, aerosol, *grid[:1], sza, vza, raa, grid[1], grid[2])
                     for aerosol in ("continental", "maritime")]
        paths.append(np.stack([np.moveaxis(t.path, 0, -1) for t in per_model]))
        log_ts.append(np.stack([np.moveaxis(np.log(t.t_down[:, :, 0, 0] * t.t_up[:, :, 0, 0]), 0, -1)
                                for t in per_model]))
        salbs.append(np.stack([np.moveaxis(t.s_alb[:, :, 0, 0], 0, -1) for t in per_model]))
        log_tgs.append(np.moveaxis(np.log(per_model[0].tg[:, 0]), 0, -1))
    f32 = lambda xs: np.ascontiguousarray(np.stack(xs), dtype=np.float32)  # noqa: E731
    return SceneTables(aot, wv, o3, f32(paths), f32(log_ts), f32(salbs), f32(log_tgs))
