"""Colour from image pixels to 8-bit RGB (pure).

* uint8 images (a Sentinel-2 TCI) are taken as they are.
* Reflectance (uint16 DN with scale/offset, converted by :mod:`eotwin.sentinel2.radiometry`, or float)
  is mapped linearly from a fixed reflectance range to 0..255 (default 0.0..0.3: vegetation and soils
  fill the range, snow and clouds saturate, as in ESA's true-colour images), or from per-band
  percentiles computed once over an overview of the image. Deterministic: the same input gives the same colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_REFLECTANCE_RANGE = (0.0, 0.3)


@dataclass(frozen=True)
class Stretch:
    """Linear per-band map from [low, high] to [0, 255]; None for 8-bit input taken as is."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    def apply(self, reflectance: np.ndarray) -> np.ndarray:
        """(3, ...) float reflectance -> (3, ...) uint8."""
        low = np.asarray(self.low, dtype=np.float32).reshape((3,) + (1,) * (reflectance.ndim - 1))
        high = np.asarray(self.high, dtype=np.float32).reshape(low.shape)
        scaled = (reflectance.astype(np.float32) - low) * (255.0 / np.maximum(high - low, 1e-12))
        scaled = np.nan_to_num(scaled, nan=0.0)  # NaN reflectance is no data: masked by the caller, any colour will do
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def fixed_stretch(low: float = DEFAULT_REFLECTANCE_RANGE[0], high: float = DEFAULT_REFLECTANCE_RANGE[1]) -> Stretch:
    return Stretch((low,) * 3, (high,) * 3)


def percentile_stretch(sample: np.ndarray, valid: np.ndarray, low_pct: float = 2.0, high_pct: float = 98.0) -> Stretch:
    """Per-band percentiles of the valid pixels of ``sample`` (3, H, W) reflectance."""
    values = sample[:, valid]
    if values.shape[1] == 0:
        return fixed_stretch()
    lows = np.percentile(values, low_pct, axis=1)
    highs = np.percentile(values, high_pct, axis=1)
    highs = np.where(highs > lows, highs, lows + 1e-6)
    return Stretch(tuple(float(v) for v in lows), tuple(float(v) for v in highs))
