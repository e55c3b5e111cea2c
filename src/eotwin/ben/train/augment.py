"""Augmentation that is safe for multispectral tensors (C x H x W, any number of bands, normalised).

Only geometric transforms and radiometric changes that keep band ratios meaningful: the 8 dihedral
transforms (rotations by 90 degrees and their mirror images: land cover has no preferred orientation),
brightness as a multiplicative gain in DN (as illumination changes do), contrast around each band's
image mean, Gaussian blur, and a random resized crop back to the input size. No colour jitter in hue or
saturation, which assume RGB. Augmentation is applied to training samples only; evaluation and
prediction never call it.

Dihedral element ``k`` (0..7) is ``F^f R^r`` with ``r = k % 4`` quarter turns (counter-clockwise, as
``torch.rot90``) followed, when ``f = k // 4`` is 1, by a left-right flip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from eotwin.errors import EotwinError

DIHEDRAL_ORDER = 8


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply dihedral element ``k`` to the last two (spatial) dimensions of ``x``."""
    if not 0 <= k < DIHEDRAL_ORDER:
        raise EotwinError(f"dihedral element must be 0..7, got {k}")
    r, f = k % 4, k // 4
    out = torch.rot90(x, r, dims=(-2, -1)) if r else x
    return torch.flip(out, dims=(-1,)) if f else out


def dihedral_compose(a: int, b: int) -> int:
    """The element ``c`` with ``dihedral(dihedral(x, b), a) == dihedral(x, c)`` (apply ``b`` first).

    From ``R F = F R^-1``: ``F^fa R^ra F^fb R^rb = F^(fa+fb) R^(ra (-1)^fb + rb)``.
    """
    ra, fa, rb, fb = a % 4, a // 4, b % 4, b // 4
    r = (ra * (-1 if fb else 1) + rb) % 4
    return r + 4 * ((fa + fb) % 2)


def dihedral_inverse(k: int) -> int:
    """The element undoing ``k``: the opposite rotation, or ``k`` itself for the mirror images."""
    return k if k >= 4 else (-k) % 4


class Augment:
    """Random training augmentation of one normalised (C, H, W) float tensor.

    ``band_offset`` is mean / std per band (from the normalisation statistics); with it, brightness is a
    gain on the DN values (``x' = g x + (g - 1) mean / std``); without it, brightness is a gain on ``x``.
    """

    def __init__(self, *, dihedral: bool = True, brightness: float = 0.0, contrast: float = 0.0,
                 blur_p: float = 0.0, blur_sigma: tuple[float, float] = (0.1, 1.0), crop_p: float = 0.0,
                 crop_scale: tuple[float, float] = (0.6, 1.0), crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 band_offset: Sequence[float] | np.ndarray | None = None) -> None:
        for name, p in (("blur_p", blur_p), ("crop_p", crop_p)):
            if not 0 <= p <= 1:
                raise EotwinError(f"augment.{name} must be in [0, 1], got {p}")
        if not 0 <= brightness < 1 or not 0 <= contrast < 1:
            raise EotwinError("augment.brightness and augment.contrast must be in [0, 1)")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise EotwinError(f"augment.crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
        if not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise EotwinError(f"augment.blur_sigma must satisfy 0 < low <= high, got {blur_sigma}")
        self.use_dihedral = dihedral
        self.brightness, self.contrast = brightness, contrast
        self.blur_p, self.blur_sigma = blur_p, blur_sigma
        self.crop_p, self.crop_scale, self.crop_ratio = crop_p, crop_scale, crop_ratio
        self.band_offset = None if band_offset is None else torch.as_tensor(np.asarray(band_offset), dtype=torch.float32)

    @property
    def active(self) -> bool:
        return bool(self.use_dihedral or self.brightness or self.contrast or self.blur_p or self.crop_p)

    @staticmethod
    def _uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand(()))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise EotwinError(f"augmentation expects a (C, H, W) tensor, got shape {tuple(x.shape)}")
        if self.crop_p and float(torch.rand(())) < self.crop_p:
            x = self._resized_crop(x)
        if self.use_dihedral:
            x = dihedral(x, int(torch.randint(DIHEDRAL_ORDER, ())))
        if self.brightness:
            gain = self._uniform(1 - self.brightness, 1 + self.brightness)
            offset = self.band_offset.to(x.device)[:, None, None] if self.band_offset is not None else 0.0
            x = gain * x + (gain - 1) * offset
        if self.contrast:
            factor = self._uniform(1 - self.contrast, 1 + self.contrast)
            mean = x.mean(dim=(-2, -1), keepdim=True)
            x = (x - mean) * factor + mean
        if self.blur_p and float(torch.rand(())) < self.blur_p:
            x = gaussian_blur(x, self._uniform(*self.blur_sigma))
        return x.contiguous()

    def _resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        height, width = x.shape[-2:]
        area = height * width
        log_ratio = (math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]))
        for _ in range(10):
            target = area * self._uniform(*self.crop_scale)
            ratio = math.exp(self._uniform(*log_ratio))
            w = round(math.sqrt(target * ratio))
            h = round(math.sqrt(target / ratio))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(height - h + 1, ()))
                left = int(torch.randint(width - w + 1, ()))
                return TF.resized_crop(x, top, left, h, w, [height, width], antialias=True)
        return x


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every band (kernel 2 * ceil(3 sigma) + 1, reflected borders)."""
    from torchvision.transforms.v2 import functional as TF

    size = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(x, [size, size], [sigma, sigma])
