"""The AI correction network (torch; training and export only, inference runs the ONNX file).

Physics-grounded hybrid: the network does not produce surface reflectance. It reads the scene and
estimates the *atmosphere* (aerosol optical thickness at 550 nm, water vapour, ozone and the
probability of a maritime aerosol) on a grid of "atmosphere cells"; the 6S table turns that
atmosphere and the sun and view angles into the terms of every band, and the exact Lambertian
inversion of :mod:`eotwin.atmocorr.physics` gives the surface::

    y = (toa - path) / (tg * t_down * t_up) ;  boa = y / (1 + s_alb * y)

So geometry, gas absorption and spectral dependences come from 6S, never from learned weights, and
the network's job is what sen2cor's dark-dense-vegetation and band-ratio heuristics do, learned
from 6S-simulated scenes instead of assumed.

Inputs are *cells*: the TOA of ``cell`` x ``cell`` pixels (6 x 6 at 10 m = 60 m, sen2cor's aerosol
resolution) reduced to their valid-pixel mean and minimum per band, and the surface those would be
under a few hypothetical atmospheres (:func:`eotwin.atmocorr.ai.cells.network_inputs`, numpy, shared
by training and inference: the 6S table divides the geometry out before the network looks). The network:

1. a feature net (1x1 convolutions) on each cell: normalised means, their logarithms (band ratios
   carry water vapour and aerosol colour) and the logarithms of the cell minima (the darkest
   10 m pixel of the cell: dark-object evidence);
2. context: window means of the features over square windows of cells (cumulative sums, exact and
   translation-equivariant) and window minima of learned darkness indices (max pooling);
3. the context averaged over ``out_stride`` x ``out_stride`` cells (an atmosphere cell: 240 m by
   default; aerosol fields are smooth at that scale) and a head of 1x1 convolutions that also sees
   the angles gives the four atmosphere values, squashed into the table's ranges.

Everything is on whole cells, so tiles that start on whole atmosphere cells with an overlap of
:func:`overlap_for` pixels give the same atmosphere as one pass.

:class:`TableLayer` is the 6S table in torch for training: per scene (one geometry and spacecraft)
it holds the table's terms at the nodes of AOT, water vapour and ozone for both aerosol models and
interpolates them exactly as :meth:`eotwin.atmocorr.lut.SixSLut.terms_for` does (linear, the
transmittances log-linear), so what the network learns through it is what inference gets from
``terms_for``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from eotwin.atmocorr.ai.cells import (  # noqa: F401  (SceneTables, scene_tables: re-exported)
    ATMOSPHERE,
    N_BASE_INPUTS,
    SceneTables,
    n_cell_inputs,
    overlap_for,
    scene_tables,
)
from eotwin.atmocorr.physics import AI_DENOMINATOR_FLOOR

N_BANDS = 12


@dataclass
class ModelConfig:
    """Architecture, normalisation and output ranges, stored with the weights and in the ONNX metadata."""

    features: int = 24
    dark: int = 8  # learned darkness indices whose window minima are taken (dark-object statistics)
    feature_hidden: int = 48
    hidden: int = 64
    windows: tuple[int, ...] = (5, 17)  # context windows in cells
    cell: int = 6  # pixels per cell side (60 m at 10 m)
    out_stride: int = 4  # cells per atmosphere cell side (240 m)
    toa_mean: list[float] = field(default_factory=lambda: [0.1] * N_BANDS)
    toa_std: list[float] = field(default_factory=lambda: [0.1] * N_BANDS)
    # output ranges (the table's axes, or narrower)
    aot_range: tuple[float, float] = (0.005, 0.8)
    wv_range: tuple[float, float] = (0.2, 5.0)
    o3_range: tuple[float, float] = (0.25, 0.45)
    # pixels with B02 TOA above this (cloud, snow, very bright targets) stay out of the context
    bright_toa: float = 0.3
    # hypothesis features of the cells (cells.HYPOTHESIS_AEROSOLS: 0 none, 1 continental, 2 both models)
    hypotheses: int = 0
    # attention pooling: heads, each a learned relevance of every cell (softmax over the window) and
    # ``attention_values`` learned values averaged with it: "which cells tell the aerosol" (0: none)
    attention: int = 0
    attention_values: int = 3

    @property
    def n_inputs(self) -> int:
        """Channels of the network's ``cells`` input."""
        return n_cell_inputs(int(self.hypotheses))

    @property
    def stride(self) -> int:
        """Pixels per atmosphere cell side: tiles must start on multiples of it."""
        return self.cell * self.out_stride

    @property
    def overlap(self) -> int:
        """Pixels of context a tile needs on each side for an exact result (a multiple of the stride)."""
        return overlap_for(self.windows, self.cell, self.out_stride)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("windows", "aot_range", "wv_range", "o3_range"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        for k in ("windows", "aot_range", "wv_range", "o3_range"):
            d[k] = tuple(d[k])
        return cls(**d)


def box_sum(x: torch.Tensor, radius: int, wide: bool = False) -> torch.Tensor:
    """Sum over a (2r+1) x (2r+1) window around each element (zero outside), by cumulative sums.

    ``wide``: values of a wide dynamic range (attention weights up to e^12) are summed in float64:
    a row of a full tile holds 1830 cells, and a float32 cumulative sum would lose the small windows'
    sums in the large running totals. Values in [0, 1] lose nothing that matters in float32.
    """
    k = 2 * radius + 1
    h, w = x.shape[-2], x.shape[-1]
    dtype = x.dtype
    x = nn.functional.pad(x.double() if wide else x, (0, 0, radius + 1, radius))
    c = torch.cumsum(x, dim=2)
    x = c[:, :, k : k + h] - c[:, :, :h]
    x = nn.functional.pad(x, (radius + 1, radius, 0, 0))
    c = torch.cumsum(x, dim=3)
    return (c[:, :, :, k : k + w] - c[:, :, :, :w]).to(dtype)


class AtmoNet(nn.Module):
    """Cells (n, config.n_inputs, H, W) and cell angles (n, 3, H, W) -> atmosphere (n, 4, H/out_stride, W/out_stride).

    ``H`` and ``W`` must be multiples of ``out_stride`` (:func:`cells.cell_inputs` pads them).
    Output channels: AOT at 550 nm, water vapour (g/cm2), ozone (cm-atm), P(maritime aerosol).
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        self.register_buffer("toa_mean", torch.tensor(c.toa_mean).view(1, N_BANDS, 1, 1))
        self.register_buffer("toa_std", torch.tensor(c.toa_std).view(1, N_BANDS, 1, 1))
        n_in = 3 * N_BANDS + (c.n_inputs - N_BASE_INPUTS)
        self.feature = nn.Sequential(
            nn.Conv2d(n_in, c.feature_hidden, 1),
            nn.GELU(),
            nn.Conv2d(c.feature_hidden, c.features, 1),
            nn.Tanh(),
        )
        self.darkness = nn.Conv2d(n_in, c.dark, 1)
        per_window = c.features + c.dark
        if c.attention:
            # per head: a relevance logit and its values, from the cell's inputs
            self.attend = nn.Sequential(
                nn.Conv2d(n_in, c.feature_hidden, 1),
                nn.GELU(),
                nn.Conv2d(c.feature_hidden, c.attention * (1 + c.attention_values), 1),
            )
            per_window += c.attention * (1 + c.attention_values)
        n_head = per_window * len(c.windows) + c.features + 4
        self.head = nn.Sequential(
            nn.Conv2d(n_head, c.hidden, 1),
            nn.GELU(),
            nn.Conv2d(c.hidden, c.hidden, 1),
            nn.GELU(),
            nn.Conv2d(c.hidden, len(ATMOSPHERE), 1),
        )
        nn.init.zeros_(self.head[-1].weight)  # start from the middle of every range
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, cells: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        c = self.config
        mean, low = cells[:, :N_BANDS], cells[:, N_BANDS : 2 * N_BANDS]
        frac, hypotheses = cells[:, 2 * N_BANDS : N_BASE_INPUTS], cells[:, N_BASE_INPUTS:]
        v = (frac > 0).to(cells.dtype)
        mean = torch.where(v > 0, mean, self.toa_mean)  # cells without valid pixels: finite, weight 0
        low = torch.where(v > 0, low, self.toa_mean)
        log_mean = torch.log(self.toa_mean)
        inputs = torch.cat(
            [(mean - self.toa_mean) / self.toa_std,
             torch.log(mean.clamp(min=1e-3)) - log_mean,
             torch.log(low.clamp(min=1e-3)) - log_mean,
             *([(hypotheses.clamp(-0.5, 1.0) - 0.1) / 0.1] if c.hypotheses else [])],
            dim=1,
        )
        weight = frac * v
        feats = self.feature(inputs) * weight
        dark = torch.where(v > 0, self.darkness(inputs), torch.full_like(v, 1e4))
        if c.attention:
            heads = self.attend(inputs)
            logits, values = heads[:, : c.attention], torch.tanh(heads[:, c.attention :])
            relevance = torch.exp(logits.clamp(-12.0, 12.0)) * weight  # empty cells: none
            weighted = values * relevance.repeat_interleave(c.attention_values, dim=1)
        context = []
        for window in c.windows:
            r = window // 2
            count = box_sum(weight, r).clamp(min=1e-3)
            context.append(box_sum(feats, r) / count)
            lo = -nn.functional.max_pool2d(-dark, (window, 1), stride=1, padding=(r, 0))
            lo = -nn.functional.max_pool2d(-lo, (1, window), stride=1, padding=(0, r))
            context.append(lo.clamp(-20.0, 20.0))
            if c.attention:
                total = box_sum(relevance, r, wide=True)
                context.append(box_sum(weighted, r, wide=True)
                               / total.clamp(min=1e-6).repeat_interleave(c.attention_values, dim=1))
                context.append(torch.log(total / count + 1e-6) / 10.0)  # how much relevant evidence the window holds
        s = c.out_stride
        own = nn.functional.avg_pool2d(feats, s) / nn.functional.avg_pool2d(weight, s).clamp(min=1e-3)
        pooled = [nn.functional.avg_pool2d(x, s) for x in context]
        rad = nn.functional.avg_pool2d(angles, s) * (math.pi / 180.0)
        cos_s, cos_v = torch.cos(rad[:, 0:1]), torch.cos(rad[:, 1:2])
        air_mass = 1.0 / cos_s.clamp(min=0.05) + 1.0 / cos_v.clamp(min=0.05)
        geo = torch.cat([cos_s, cos_v, torch.cos(rad[:, 2:3]), (air_mass - 3.0) / 2.0], dim=1)
        out = self.head(torch.cat([*pooled, own, geo], dim=1))
        return torch.cat(
            [
                _log_range(out[:, 0:1], c.aot_range),
                _sqrt_range(out[:, 1:2], c.wv_range),
                _lin_range(out[:, 2:3], c.o3_range),
                torch.sigmoid(out[:, 3:4] - 1.0),  # starts at P = 0.27, the training prior
            ],
            dim=1,
        )


def _lin_range(x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.sigmoid(x)


def _log_range(x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    return torch.exp(lo + (hi - lo) * torch.sigmoid(x))


def _sqrt_range(x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    lo, hi = math.sqrt(bounds[0]), math.sqrt(bounds[1])
    return (lo + (hi - lo) * torch.sigmoid(x)) ** 2


# ----------------------------------------------------------------------------- 6S table in torch
def _bracket(nodes: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower node index and (differentiable) weight of the upper node for values ``x``."""
    idx = (torch.bucketize(x.detach().contiguous(), nodes, right=True) - 1).clamp(0, nodes.numel() - 2)
    lo, hi = nodes[idx], nodes[idx + 1]
    return idx, ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


class TableLayer(nn.Module):
    """Terms (n, 12, h, w) each of path, gain and spherical albedo from the atmosphere (n, 4, h, w)."""

    def forward(self, atmosphere: torch.Tensor, tables: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        aot, wv, o3, p_mar = (atmosphere[:, i] for i in range(4))  # (n, h, w) each
        n = atmosphere.shape[0]
        b = torch.arange(n).view(n, 1, 1).expand_as(aot)
        ia, wa = _bracket(tables["aot_nodes"], aot)
        iw, ww = _bracket(torch.sqrt(tables["wv_nodes"]), torch.sqrt(wv))
        io, wo = _bracket(tables["o3_nodes"], o3)
        wa, ww, wo = wa[..., None], ww[..., None], wo[..., None]  # broadcast over bands

        def per_model(m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            path = 0.0
            for da, fa in ((0, 1 - wa), (1, wa)):
                for dw, fw in ((0, 1 - ww), (1, ww)):
                    for do, fo in ((0, 1 - wo), (1, wo)):
                        path = path + fa * fw * fo * tables["path"][b, m, ia + da, iw + dw, io + do]
            log_t = (1 - wa) * tables["log_t"][b, m, ia] + wa * tables["log_t"][b, m, ia + 1]
            s_alb = (1 - wa) * tables["s_alb"][b, m, ia] + wa * tables["s_alb"][b, m, ia + 1]
            return path, log_t, s_alb

        log_tg = 0.0
        for dw, fw in ((0, 1 - ww), (1, ww)):
            for do, fo in ((0, 1 - wo), (1, wo)):
                log_tg = log_tg + fw * fo * tables["log_tg"][b, iw + dw, io + do]
        (pc, tc, sc), (pm, tm, sm) = per_model(0), per_model(1)
        p = p_mar[..., None]
        path = (1 - p) * pc + p * pm
        gain = torch.exp(log_tg) * ((1 - p) * torch.exp(tc) + p * torch.exp(tm))
        s_alb = (1 - p) * sc + p * sm
        to_bands_first = lambda x: x.permute(0, 3, 1, 2)  # noqa: E731
        return to_bands_first(path), to_bands_first(gain), to_bands_first(s_alb)


def tables_to_torch(tables: SceneTables) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.asarray(getattr(tables, k), dtype=np.float32))
            for k in ("aot_nodes", "wv_nodes", "o3_nodes", "path", "log_t", "s_alb", "log_tg")}


def invert(toa: torch.Tensor, path: torch.Tensor, gain: torch.Tensor, s_alb: torch.Tensor) -> torch.Tensor:
    """:func:`eotwin.atmocorr.physics.invert_gain` in torch, for training (same formula, same floor:
    :data:`~eotwin.atmocorr.physics.AI_DENOMINATOR_FLOOR` only bites on nonsense, TOA far below the path)."""
    y = (toa - path) / gain
    return y / (1.0 + s_alb * y).clamp(min=AI_DENOMINATOR_FLOOR)


def upsample(terms: torch.Tensor, out_stride: int, cell: int, h: int, w: int) -> torch.Tensor:
    """Atmosphere-cell terms to pixels: bilinear to cells, constant within a cell (as inference does,
    see :func:`eotwin.atmocorr.ai.cells.invert_band`)."""
    out = nn.functional.interpolate(terms, scale_factor=float(out_stride), mode="bilinear", align_corners=False)
    out = out.repeat_interleave(cell, dim=2).repeat_interleave(cell, dim=3)
    return out[:, :, :h, :w]


def upsample_every(terms: torch.Tensor, out_stride: int, cell: int, shape: tuple[int, int], step: int) -> torch.Tensor:
    """:func:`upsample` at every ``step``-th row and column of an ``shape`` (h, w) image only: the same values
    as ``upsample(...)[:, :, ::step, ::step]`` without making the full-resolution tensor (fine-tuning on
    large pairs keeps its memory bounded this way)."""
    out = nn.functional.interpolate(terms, scale_factor=float(out_stride), mode="bilinear", align_corners=False)
    rows = torch.arange(0, shape[0], step) // cell
    cols = torch.arange(0, shape[1], step) // cell
    return out.index_select(2, rows).index_select(3, cols)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
