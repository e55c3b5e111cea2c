"""Sentinel-2 radiometry: quantification, offsets by processing baseline, DN <-> reflectance both ways.

L1C: TOA = (DN + RADIO_ADD_OFFSET) / QUANTIFICATION_VALUE; L2A: BOA = (DN + BOA_ADD_OFFSET) / 10000.
Both offsets are -1000 from processing baseline 04.00 (January 2022) and absent (0) before. DN 0 is no
data at both levels. The 8-bit true-colour image (TCI) maps reflectance 0 .. 0.2 to 1 .. 255.
"""

from __future__ import annotations

import numpy as np

QUANTIFICATION = 10000.0
BOA_ADD_OFFSET = -1000  # the L2A offset from processing baseline 04.00 (and what eotwin writes)
RADIO_ADD_OFFSET = -1000  # the L1C offset from processing baseline 04.00
OFFSET_BASELINE = 4.0  # the first processing baseline with offsets
TCI_SATURATION = 0.2  # reflectance mapped to 255 in the true-colour image


def baseline_offset(baseline: float) -> int:
    """The DN offset of a product of processing baseline ``baseline`` (e.g. 5.09): -1000 from 04.00, else 0."""
    return RADIO_ADD_OFFSET if baseline >= OFFSET_BASELINE else 0


def baseline_scale_offset(baseline: float) -> tuple[float, float]:
    """(scale, offset) with reflectance = DN x scale + offset (the STAC ``raster:scale`` / ``raster:offset``
    convention) for a product of processing baseline ``baseline`` without its own metadata."""
    return 1.0 / QUANTIFICATION, baseline_offset(baseline) / QUANTIFICATION


def dn_to_reflectance(dn: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """Digital numbers to reflectance: ``dn * scale + offset`` (CDSE raster:scale / raster:offset convention)."""
    return dn.astype(np.float32) * np.float32(scale) + np.float32(offset)


def toa_to_dn(toa: np.ndarray) -> np.ndarray:
    """TOA reflectance -> L1C DN (baseline >= 04.00: RADIO_ADD_OFFSET -1000), clipped to 1..65535."""
    return np.clip(np.rint(toa * QUANTIFICATION - RADIO_ADD_OFFSET), 1, 65535).astype(np.uint16)


def boa_to_dn(boa: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """BOA reflectance -> L2A DN: round(BOA x 10000 + 1000), clipped to 1..65535; 0 for no data."""
    scaled = np.multiply(boa, np.float32(QUANTIFICATION), dtype=np.float32)
    scaled -= np.float32(BOA_ADD_OFFSET)
    finite = np.isfinite(scaled)
    np.clip(scaled, 1, 65535, out=scaled)
    np.rint(scaled, out=scaled)
    np.copyto(scaled, np.float32(0), where=~finite)  # masks broadcast over the bands: no gather
    if valid is not None:
        np.copyto(scaled, np.float32(0), where=~np.asarray(valid, dtype=bool))
    return scaled.astype(np.uint16)


def dn_to_boa(
    dn: np.ndarray, offset: float = BOA_ADD_OFFSET, quantification: float = QUANTIFICATION, *, nodata: bool = True
) -> np.ndarray:
    """L2A DN -> BOA reflectance (float32; NaN for DN 0 unless ``nodata`` is False: datasets that use DN 0 as a
    value or mark no data otherwise)."""
    out = (np.asarray(dn, dtype=np.float32) + np.float32(offset)) / np.float32(quantification)
    if nodata:
        out[np.asarray(dn) == 0] = np.nan
    return out


def dn_to_toa(dn: np.ndarray, offset: float = RADIO_ADD_OFFSET, quantification: float = QUANTIFICATION) -> np.ndarray:
    """L1C DN -> TOA reflectance (float32, NaN for DN 0): the inverse of :func:`toa_to_dn`."""
    return dn_to_boa(dn, offset, quantification)


def reflectance_to_tci(rgb: np.ndarray) -> np.ndarray:
    """Reflectance (3, h, w) -> uint8 true colour 1..255 (0 = no data), 0.2 reflectance saturates."""
    tci = np.clip(np.rint(np.nan_to_num(rgb, nan=0.0) / TCI_SATURATION * 254.0) + 1, 1, 255).astype(np.uint8)
    tci[:, ~np.isfinite(rgb).all(axis=0)] = 0
    return tci
