"""The AI correction network (torch; training and export only, inference runs the ONNX file).

Physics-shaped: the network does not map TOA to BOA directly. It estimates, per pixel, the 6S terms
of every band (path reflectance, gain ``tg * t_down * t_up`` and spherical albedo) and applies the
exact Lambertian inversion of :mod:`eotwin.atmocorr.physics`::

    y = (toa - path) / gain ;  boa = y / (1 + s_alb * y)

so a wrong atmosphere gives a physically plausible error and a right one gives the exact surface.
The terms describe the atmosphere, not the pixel, so they are computed from the context only:

1. a per-pixel feature net (1x1 convolutions) turns the 12 TOA bands (and their logarithms, whose
   differences are the band ratios that carry water vapour and aerosol colour) into ``features`` numbers,
   averaged over cells of ``stride`` x ``stride`` pixels (valid pixels only);
2. the context: means of the cell features over square windows (``windows`` cells wide, by
   cumulative sums: exact, cheap for any window, and translation-equivariant, so tiles that start on
   whole cells with an overlap of :func:`overlap_for` pixels give the same result as one pass), and
   the window minima of a few learned darkness indices (max pooling: the statistic dark-object and
   dark-vegetation methods rest on);
3. a head (1x1 convolutions on cells) maps the context and the angle features (cos sun zenith, cos
   view zenith, cos relative azimuth, air mass) to the 36 terms, as log-factors of reference terms
   (an average atmosphere), and to the AOT at 550 nm (a map the product writes); the terms are
   upsampled bilinearly to the pixels (they vary over many cells, never within one).

Only step 1 and the inversion run per pixel, which keeps a full tile within minutes on two cores.

Inputs: ``toa`` (n, 12, h, w) TOA reflectance of the L2A bands (no B10: the simulated scenes hold
no cirrus, which is B10's only signal), ``angles`` (n, 3, h, w) degrees, ``valid`` (n, 1, h, w) 0/1.
Outputs: ``boa`` (n, 12, h, w), ``aot`` (n, 1, h, w), ``terms`` (n, 36, h, w).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

N_BANDS = 12


@dataclass
class ModelConfig:
    """Architecture and normalisation, stored with the weights and in the ONNX metadata."""

    features: int = 16
    dark: int = 8  # learned darkness indices whose window minima are taken (dark-object statistics)
    feature_hidden: int = 32
    hidden: int = 64
    windows: tuple[int, ...] = (9, 25)  # context windows in cells of stride x stride pixels
    stride: int = 4  # cell size: the context and the head work on cells, the terms are upsampled bilinearly
    toa_mean: list[float] = field(default_factory=lambda: [0.1] * N_BANDS)
    toa_std: list[float] = field(default_factory=lambda: [0.1] * N_BANDS)
    ref_path: list[float] = field(default_factory=lambda: [0.05] * N_BANDS)
    ref_gain: list[float] = field(default_factory=lambda: [0.8] * N_BANDS)
    ref_s_alb: list[float] = field(default_factory=lambda: [0.1] * N_BANDS)
    ref_aot: float = 0.15
    # pixels with B02 TOA above this (cloud, snow, very bright targets; the training surfaces stay
    # below it) are left out of the context, so they cannot distort the neighbourhood's atmosphere
    bright_toa: float = 0.3

    @property
    def overlap(self) -> int:
        """Pixels of context a tile needs on each side for an exact result (a multiple of the stride)."""
        return overlap_for(self.windows, self.stride)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["windows"] = list(self.windows)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["windows"] = tuple(int(w) for w in d["windows"])
        return cls(**d)


def overlap_for(windows: tuple[int, ...] | list[int], stride: int) -> int:
    """Pixels of context for exact tiles: half the widest window and one cell for the upsampling, in cells."""
    return (max(windows) // 2 + 2) * stride


def box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum over a (2r+1) x (2r+1) window around each pixel (zero outside), by cumulative sums."""
    k = 2 * radius + 1
    h, w = x.shape[-2], x.shape[-1]
    x = nn.functional.pad(x, (0, 0, radius + 1, radius))
    c = torch.cumsum(x, dim=2)
    x = c[:, :, k : k + h] - c[:, :, :h]
    x = nn.functional.pad(x, (radius + 1, radius, 0, 0))
    c = torch.cumsum(x, dim=3)
    return c[:, :, :, k : k + w] - c[:, :, :, :w]


class AtmoNet(nn.Module):
    """See the module docstring."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        self.register_buffer("toa_mean", torch.tensor(c.toa_mean).view(1, N_BANDS, 1, 1))
        self.register_buffer("toa_std", torch.tensor(c.toa_std).view(1, N_BANDS, 1, 1))
        self.register_buffer("ref_path", torch.tensor(c.ref_path).view(1, N_BANDS, 1, 1))
        self.register_buffer("ref_gain", torch.tensor(c.ref_gain).view(1, N_BANDS, 1, 1))
        self.register_buffer("ref_s_alb", torch.tensor(c.ref_s_alb).view(1, N_BANDS, 1, 1))
        self.feature = nn.Sequential(
            nn.Conv2d(2 * N_BANDS, c.feature_hidden, 1),
            nn.GELU(),
            nn.Conv2d(c.feature_hidden, c.features, 1),
            nn.Tanh(),
        )
        self.darkness = nn.Conv2d(2 * N_BANDS, c.dark, 1)
        n_in = (c.features + c.dark) * len(c.windows) + 4
        self.head = nn.Sequential(
            nn.Conv2d(n_in, c.hidden, 1),
            nn.GELU(),
            nn.Conv2d(c.hidden, c.hidden, 1),
            nn.GELU(),
            nn.Conv2d(c.hidden, 3 * N_BANDS + 1, 1),
        )
        nn.init.zeros_(self.head[-1].weight)  # start from the reference (average) atmosphere
        nn.init.zeros_(self.head[-1].bias)

    def forward(
        self, toa: torch.Tensor, angles: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        s = c.stride
        h, w = toa.shape[-2], toa.shape[-1]
        valid = valid.to(toa.dtype)
        x = torch.where(valid > 0, toa, self.toa_mean)  # no-data pixels: finite values, masked below
        context_valid = valid * (x[:, 1:2] <= c.bright_toa).to(toa.dtype)
        # pad to whole cells: padded pixels are invalid (no weight), angles repeat the edge
        pad = (0, (s - w % s) % s, 0, (s - h % s) % s)
        xp = nn.functional.pad(x, pad)
        vp = nn.functional.pad(context_valid, pad)
        ap = nn.functional.pad(angles, pad, mode="replicate")
        # linear and log reflectances: band ratios (water vapour, aerosol colour) are differences of logs
        logs = torch.log(xp.clamp(min=1e-3)) - torch.log(self.toa_mean)
        inputs = torch.cat([(xp - self.toa_mean) / self.toa_std, logs], dim=1)
        feats = self.feature(inputs) * vp
        # window minima of the darkness indices (no-data pixels count as bright, so never as the minimum)
        dark = torch.where(vp > 0, self.darkness(inputs), torch.full_like(vp, 1e4))
        cell_dark = -nn.functional.max_pool2d(-dark, s)
        cell_feats = nn.functional.avg_pool2d(feats, s)  # per cell: mean of valid-weighted features
        cell_valid = nn.functional.avg_pool2d(vp, s)
        context = []
        for window in c.windows:
            r = window // 2
            count = box_sum(cell_valid, r).clamp(min=1.0 / (s * s))
            context.append(box_sum(cell_feats, r) / count)
            low = -nn.functional.max_pool2d(-cell_dark, (window, 1), stride=1, padding=(r, 0))
            low = -nn.functional.max_pool2d(-low, (1, window), stride=1, padding=(0, r))
            context.append(low.clamp(-20.0, 20.0))
        rad = nn.functional.avg_pool2d(ap, s) * (math.pi / 180.0)
        cos_s, cos_v = torch.cos(rad[:, 0:1]), torch.cos(rad[:, 1:2])
        air_mass = 1.0 / cos_s.clamp(min=0.05) + 1.0 / cos_v.clamp(min=0.05)
        geo = torch.cat([cos_s, cos_v, torch.cos(rad[:, 2:3]), (air_mass - 3.0) / 2.0], dim=1)
        out = self.head(torch.cat([*context, geo], dim=1))
        if s > 1:
            out = nn.functional.interpolate(out, scale_factor=float(s), mode="bilinear", align_corners=False)
            out = out[:, :, :h, :w]
        n = N_BANDS
        path = self.ref_path * torch.exp(out[:, :n].clamp(-6.0, 4.0))
        gain = self.ref_gain * torch.exp(out[:, n : 2 * n].clamp(-4.0, 1.0))
        s_alb = self.ref_s_alb * torch.exp(out[:, 2 * n : 3 * n].clamp(-6.0, 2.0))
        aot = c.ref_aot * torch.exp(out[:, 3 * n :].clamp(-6.0, 3.0))
        y = (x - path) / gain
        boa = y / (1.0 + s_alb * y).clamp(min=0.2)  # the clamp only bites on nonsense (TOA far below path)
        return boa, aot, torch.cat([path, gain, s_alb], dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
