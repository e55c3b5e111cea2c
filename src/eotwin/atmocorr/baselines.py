"""Baseline atmospheric corrections the AI model must beat (pure: arrays and a loaded LUT in, arrays out).

- :func:`dark_object_subtraction`: Chavez's DOS. The darkest pixels are assumed to have 1 %
  reflectance; everything above is haze, subtracted everywhere. No transmittance, no gas. Per band
  (DOS1), or (default when band names are given) with Chavez's relative scattering model: the haze
  measured in the visible bands, where dark objects exist, is fitted as ``a * wavelength^-k`` and
  extrapolated to the red-edge, NIR and SWIR bands, where a scene rarely holds a 1 % dark object.
- :func:`ddv_correction`: the sen2cor approach. Water vapour from the B09/B8A band ratio, aerosol
  optical thickness from dark dense vegetation (DDV: SWIR B12 surface reflectance 0.01-0.05 and
  NDVI > 0.4, widened like sen2cor when too few pixels are found) assuming Kaufman's ratios
  rho_red = 0.5 rho_2.2 and rho_blue = 0.25 rho_2.2, then the 6S-table inversion of every band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eotwin.atmocorr import physics
from eotwin.atmocorr.lut import SixSLut
from eotwin.atmocorr.srf import CENTRE_NM, normalise_band
from eotwin.errors import EotwinError

DOS_DARK_REFLECTANCE = 0.01
DOS_PERCENTILE = 0.1  # percent of valid pixels taken as "dark": robust against a few dead pixels
DOS_REFERENCE_BANDS = ("B01", "B02", "B03", "B04")  # visible: dark objects (water, shadow, forest) exist
DDV_SWIR_RANGES = ((0.01, 0.05), (0.01, 0.10), (0.01, 0.15))  # widened in turn, as sen2cor does
DDV_MIN_NDVI = 0.4
DDV_MIN_PIXELS = 50
DDV_MAX_SAMPLE = 20_000
WV_MAX_SAMPLE = 50_000  # pixels for the water-vapour medians: evenly spread, so a full tile costs no more
WV_CANDIDATES = 49
WV_CHUNK = 7  # candidates per step: working arrays of (WV_CHUNK, pixels), whatever the candidate count
DDV_RED_RATIO = 0.5
DDV_BLUE_RATIO = 0.25
DEFAULT_AOT = 0.2  # used when no dark vegetation is found (sen2cor falls back to a default visibility)
DEFAULT_OZONE = 0.33  # cm-atm, a mid-latitude climatological value


def _check_stack(toa: np.ndarray, bands: tuple[str, ...] | list[str]) -> np.ndarray:
    toa = np.asarray(toa)
    if toa.ndim < 2 or toa.shape[0] != len(bands):
        raise EotwinError(f"TOA stack has shape {toa.shape} but {len(bands)} band names were given")
    if not np.issubdtype(toa.dtype, np.floating):
        raise EotwinError(f"TOA reflectance must be floating point, got {toa.dtype}")
    return toa


def dark_object_subtraction(
    toa: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    bands: tuple[str, ...] | list[str] | None = None,
    percentile: float = DOS_PERCENTILE,
    dark_reflectance: float = DOS_DARK_REFLECTANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """DOS: returns (boa, haze per band) with ``haze = max(dark - 0.01, 0)``, ``dark`` a low percentile.

    ``toa`` is (bands, ...) reflectance, ``valid`` an optional boolean mask over the pixels. With
    ``bands`` (names), the haze of bands beyond the visible comes from the scattering model fitted
    to the visible bands' haze (see the module docstring); without, each band stands alone (DOS1).
    """
    toa = np.asarray(toa, dtype=np.float32)
    if bands is not None:
        _check_stack(toa, bands)
    flat = toa.reshape(toa.shape[0], -1)
    mask = np.isfinite(flat).all(axis=0)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool).reshape(-1)
    if not mask.any():
        raise EotwinError("dark object subtraction needs at least one valid pixel")
    dark = np.percentile(flat[:, mask], percentile, axis=1)
    haze = np.maximum(dark - dark_reflectance, 0.0)
    if bands is not None:
        haze = _scattering_model_haze(haze, [normalise_band(b) for b in bands])
    haze = haze.astype(np.float32)
    return toa - haze.reshape((-1,) + (1,) * (toa.ndim - 1)), haze


def _scattering_model_haze(haze: np.ndarray, bands: list[str]) -> np.ndarray:
    """Haze of every band from a power law ``a * wavelength^-k`` fitted to the visible bands' haze."""
    visible = [i for i, b in enumerate(bands) if b in DOS_REFERENCE_BANDS and haze[i] > 0]
    if len(visible) < 2:
        return haze
    log_wl = np.log([CENTRE_NM[bands[i]] for i in visible])
    slope, intercept = np.polyfit(log_wl, np.log(haze[visible]), 1)
    k = float(np.clip(-slope, 0.5, 4.0))  # Chavez's range: very hazy (0.5) to very clear (Rayleigh, 4)
    anchor = int(np.argmax(haze[visible]))  # the haziest visible band fixes the scale
    wl_anchor = CENTRE_NM[bands[visible[anchor]]]
    model = np.array([haze[visible[anchor]] * (CENTRE_NM[b] / wl_anchor) ** (-k) for b in bands])
    out = haze.copy()
    beyond = [i for i, b in enumerate(bands) if b not in DOS_REFERENCE_BANDS]
    out[beyond] = np.minimum(
        model[beyond], haze[beyond]
    )  # never more haze than the band's own dark pixels allow
    return out


def lut_correction(
    toa: np.ndarray,
    bands: tuple[str, ...] | list[str],
    lut: SixSLut,
    *,
    sensor: str,
    aerosol: str,
    aot: np.ndarray | float,
    sza: np.ndarray | float,
    vza: np.ndarray | float,
    raa: np.ndarray | float,
    wv: np.ndarray | float,
    o3: np.ndarray | float = DEFAULT_OZONE,
) -> np.ndarray:
    """Invert every band with the 6S table for a known atmosphere (the physical oracle)."""
    toa = _check_stack(toa, bands)
    terms = lut.terms_for(sensor, tuple(bands), aerosol, aot, sza, vza, raa, wv, o3)
    return physics.invert(toa, terms).astype(np.float32)


@dataclass(frozen=True)
class DdvResult:
    """Output of the DDV baseline: surface reflectance and the atmosphere it estimated."""

    boa: np.ndarray  # (bands, ...) float32
    aot: float
    wv: float
    n_dark: int  # DDV pixels used (0 when the default AOT was used)
    swir_range: tuple[float, float] | None
    fallback: bool


def estimate_water_vapour(
    toa_b8a: np.ndarray,
    toa_b09: np.ndarray,
    lut: SixSLut,
    *,
    sensor: str,
    aerosol: str,
    sza: float,
    vza: float,
    raa: float,
    aot: float = DEFAULT_AOT,
    o3: float = DEFAULT_OZONE,
    valid: np.ndarray | None = None,
) -> float:
    """Scene water vapour (g/cm2) from the B09/B8A ratio, assuming a flat surface between 865 and 945 nm.

    For each candidate water vapour the B8A surface is inverted and pushed through B09; the candidate
    whose predicted B09 matches the observed one (median over valid pixels) wins. At most
    ``WV_MAX_SAMPLE`` valid pixels, evenly spread over the input, enter the medians, and candidates are
    taken a few at a time, so memory stays bounded on a full tile.
    """
    b8a = np.asarray(toa_b8a, dtype=np.float64).reshape(-1)
    b09 = np.asarray(toa_b09, dtype=np.float64).reshape(-1)
    mask = np.isfinite(b8a) & np.isfinite(b09) & (b8a > 0.02)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool).reshape(-1)
    if mask.sum() < 10:
        raise EotwinError(
            "water vapour estimation needs at least 10 valid pixels with B8A reflectance above 0.02"
        )
    index = np.flatnonzero(mask)
    if index.size > WV_MAX_SAMPLE:
        index = index[np.linspace(0, index.size - 1, WV_MAX_SAMPLE).astype(np.int64)]
    b8a, b09 = b8a[index], b09[index]
    wv_nodes = lut.axes["wv"]
    candidates = np.linspace(wv_nodes[0], wv_nodes[-1], WV_CANDIDATES)
    terms = lut.terms_for(sensor, ("B8A", "B09"), aerosol, aot, sza, vza, raa, candidates, o3)
    parts = (terms.path, terms.tg, terms.t_down, terms.t_up, terms.s_alb)
    mismatch = np.empty(candidates.size)
    for start in range(0, candidates.size, WV_CHUNK):
        sl = slice(start, start + WV_CHUNK)
        rho = physics.toa_to_boa(b8a[None, :], *(t[0][sl, None] for t in parts))
        predicted = physics.boa_to_toa(rho, *(t[1][sl, None] for t in parts))
        mismatch[sl] = np.median(predicted - b09[None, :], axis=1)  # decreases as water vapour grows
    return float(_root(candidates, mismatch))


def _root(x: np.ndarray, f: np.ndarray) -> float:
    """Where a sampled, monotonic ``f`` crosses zero (clamped to the ends of ``x``)."""
    if f[0] * f[-1] > 0:
        return float(x[0] if abs(f[0]) < abs(f[-1]) else x[-1])
    order = np.argsort(f)
    return float(np.interp(0.0, f[order], x[order]))


def estimate_aot_ddv(
    toa: np.ndarray,
    bands: tuple[str, ...] | list[str],
    lut: SixSLut,
    *,
    sensor: str,
    aerosol: str,
    sza: float,
    vza: float,
    raa: float,
    wv: float,
    o3: float = DEFAULT_OZONE,
    valid: np.ndarray | None = None,
) -> tuple[float, int, tuple[float, float] | None]:
    """Scene AOT at 550 nm from dark dense vegetation; returns (aot, n_dark_pixels, swir_range used).

    For each candidate AOT the red, blue and SWIR bands are inverted; DDV pixels are those whose
    SWIR surface reflectance falls in the range and whose NDVI is high. The AOT where the DDV pixels'
    red and blue reflectances best match Kaufman's ratios to the SWIR reflectance is returned.
    """
    toa = _check_stack(toa, bands)
    idx = {b: list(bands).index(b) for b in ("B02", "B04", "B08", "B12") if b in bands}
    if len(idx) < 4:
        raise EotwinError("the DDV method needs bands B02, B04, B08 and B12")
    flat = toa.reshape(toa.shape[0], -1)[[idx["B02"], idx["B04"], idx["B08"], idx["B12"]]].astype(np.float64)
    mask = np.isfinite(flat).all(axis=0)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool).reshape(-1)
    flat = flat[:, mask]
    aot_nodes = lut.axes["aot"]
    candidates = np.linspace(aot_nodes[0], aot_nodes[-1], round((aot_nodes[-1] - aot_nodes[0]) / 0.01) + 1)
    terms = lut.terms_for(sensor, ("B02", "B04", "B08", "B12"), aerosol, candidates, sza, vza, raa, wv, o3)
    parts = (terms.path, terms.tg, terms.t_down, terms.t_up, terms.s_alb)
    # select DDV on the aerosol-insensitive SWIR and on NDVI at the lowest candidate, as sen2cor does
    _, red0, nir0, swir0 = physics.toa_to_boa(flat, *(t[:, :1] for t in parts))
    ndvi = (nir0 - red0) / np.maximum(nir0 + red0, 1e-6)
    for low, high in DDV_SWIR_RANGES:
        dark = (swir0 >= low) & (swir0 <= high) & (ndvi > DDV_MIN_NDVI)
        if dark.sum() >= DDV_MIN_PIXELS:
            break
    else:
        return DEFAULT_AOT, 0, None
    n_dark = int(dark.sum())
    sample = flat[:, dark]
    if sample.shape[1] > DDV_MAX_SAMPLE:  # the medians below need no more: keep memory flat on full tiles
        sample = sample[:, np.linspace(0, sample.shape[1] - 1, DDV_MAX_SAMPLE).astype(np.int64)]
    # surface per candidate: (4 bands, n_candidates, n_pixels)
    blue, red, _, swir = physics.toa_to_boa(sample[:, None, :], *(t[:, :, None] for t in parts))
    resid_red = np.median(red - DDV_RED_RATIO * swir, axis=1)
    resid_blue = np.median(blue - DDV_BLUE_RATIO * swir, axis=1)
    cost = resid_red**2 + resid_blue**2
    best = int(np.argmin(cost))
    # refine between neighbouring candidates with a parabola through the cost minimum
    if 0 < best < candidates.size - 1:
        c0, c1, c2 = cost[best - 1 : best + 2]
        denom = c0 - 2 * c1 + c2
        shift = 0.5 * (c0 - c2) / denom if denom > 0 else 0.0
        aot = float(candidates[best] + np.clip(shift, -1, 1) * (candidates[1] - candidates[0]))
    else:
        aot = float(candidates[best])
    return aot, n_dark, (low, high)


def ddv_correction(
    toa: np.ndarray,
    bands: tuple[str, ...] | list[str],
    lut: SixSLut,
    *,
    sensor: str,
    sza: np.ndarray | float,
    vza: np.ndarray | float,
    raa: np.ndarray | float,
    aerosol: str = "continental",
    wv: float | None = None,
    o3: float = DEFAULT_OZONE,
    valid: np.ndarray | None = None,
) -> DdvResult:
    """The sen2cor-like baseline: estimate water vapour (unless given) and AOT from the scene, invert all bands.

    The atmosphere is estimated with the scene-mean angles; the inversion uses the angles as given
    (scalars or per-pixel arrays).
    """
    toa = _check_stack(toa, bands)
    folded_raa = physics.relative_azimuth(raa, 0.0)  # so 179 and -179 average to 179, not 0
    mean = {k: float(np.nanmean(v)) for k, v in (("sza", sza), ("vza", vza), ("raa", folded_raa))}
    estimate_wv = wv is None
    if estimate_wv and ("B8A" not in bands or "B09" not in bands):
        raise EotwinError("water vapour estimation needs bands B8A and B09 (or pass wv)")
    aot = DEFAULT_AOT
    # water vapour and AOT each depend a little on the other: two rounds settle them
    for _ in range(2 if estimate_wv else 1):
        if estimate_wv:
            wv = estimate_water_vapour(
                toa[list(bands).index("B8A")],
                toa[list(bands).index("B09")],
                lut,
                sensor=sensor,
                aerosol=aerosol,
                aot=aot,
                o3=o3,
                valid=valid,
                **mean,
            )
        aot, n_dark, swir_range = estimate_aot_ddv(
            toa, bands, lut, sensor=sensor, aerosol=aerosol, wv=wv, o3=o3, valid=valid, **mean
        )
    boa = lut_correction(
        toa, bands, lut, sensor=sensor, aerosol=aerosol, aot=aot, sza=sza, vza=vza, raa=raa, wv=wv, o3=o3
    )
    return DdvResult(
        boa=boa, aot=aot, wv=float(wv), n_dark=n_dark, swir_range=swir_range, fallback=n_dark == 0
    )
