"""Aerosol over dark water: clear water is black in the NIR and SWIR, so what it shows there is path (pure).

Ocean-colour processors find the aerosol over water from bands where the water leaves no light (the
"black pixel" assumption; Gordon & Wang 1994; in the SWIR, Wang & Shi 2007, because turbid water is
not black in the NIR). Here the clearest water of the scene (a low percentile of the water pixels per
band, so glint and foam stay above it) is taken as black in B11 and B12: under each of the table's
aerosol models the AOT is the one whose inversion brings them closest to zero (least squares on the
AOT grid). Water is never darker than black in the NIR either, and the models differ most there:
continental extinction falls off steeply from the NIR to 2.2 um, maritime hardly, so the SWIR path
read under the wrong model leaves a B08 surface far from black: negative (too much NIR path) or
bright (too little). The model kept is the one leaving the clearest water's B08 surface closest to
zero (the first model, as in the DDV, unless another is clearly closer). A SWIR residual too large for black water (thin cloud, ice, foam), a B08 surface far below zero
under every model, or a fit on the table's last AOT, and water says nothing.

Only open water counts: within about a kilometre of land, light scattered from the brighter shore
(the adjacency effect) and mixed shore pixels brighten the water's SWIR, which would read as aerosol
(a small alpine lake among bright slopes reads as AOT 0.3). :func:`offshore` keeps the water pixels at
least ``WATER_SHORE_M`` from any land pixel.

This is what the DDV falls back to before its default AOT when a scene has too little dark vegetation
but enough open water (coasts, large lakes, the sea).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eotwin.atmocorr import physics
from eotwin.atmocorr.lut import SixSLut
from eotwin.atmocorr.retrieval import aot_candidates, terms_parts

WATER_BANDS = ("B08", "B11", "B12")  # B08 for the model choice; B11 (optional) and B12 are taken as black
WATER_PERCENTILE = 5.0  # percent of the water pixels taken as the clearest water, per band
WATER_MIN_PIXELS = 50
WATER_MIN_AREA = 0.02  # share of the valid pixels that must be water
WATER_MODEL_MARGIN = 0.001  # another model than the first only when its B08 surface is closer to zero by this
WATER_NIR_FLOOR = -0.005  # a model leaving the clearest water's B08 surface below this has far too much NIR path
WATER_MAX_RESIDUAL = 0.001  # RMS surface left in the black SWIR bands by the best fit: beyond it, not black
# a fit above what the scene's darkest blue and red pixels allow (their surface would turn negative) by more
# than this contradicts them: the "water" was not black (shore pixels, shadow, a small lake among bright slopes)
WATER_CAP_TOLERANCE = 0.05
WATER_SHORE_M = 1000.0  # open water: at least this far from land (the adjacency effect's reach)


@dataclass(frozen=True)
class DarkWaterAot:
    """AOT and aerosol model from dark water, with what they rest on."""

    aot: float
    aerosol: str
    n_water: int
    per_band: dict[str, float]  # the clearest water's surface at the chosen model and AOT
    nir_surface: dict[str, float]  # the clearest water's B08 surface at each model's best AOT


def offshore(water: np.ndarray, valid: np.ndarray, pixel_size: float) -> np.ndarray:
    """Water pixels (``water``, ``valid``: (h, w) bool) at least :data:`WATER_SHORE_M` from any valid land pixel.

    A scene without land keeps all its water (what lies beyond the scene is not known).
    """
    from scipy.ndimage import distance_transform_edt

    land = valid & ~water
    if not land.any():
        return water & valid
    distance = distance_transform_edt(~land) * float(pixel_size)
    return water & valid & (distance >= WATER_SHORE_M)


def black_fit(
    dark_toa: np.ndarray, bands: tuple[str, ...], lut: SixSLut, *, sensor: str, aerosol: str, sza: float,
    vza: float, raa: float, wv: float, o3: float,
) -> tuple[float, float, np.ndarray]:
    """(AOT, RMS residual of the SWIR, surface per band) with ``dark_toa``'s SWIR bands closest to black.

    ``bands`` starts with B08 (kept out of the fit), then the SWIR bands; one TOA value per band.
    """
    candidates = aot_candidates(lut)
    terms = lut.terms_for(sensor, bands, aerosol, candidates, sza, vza, raa, wv, o3)
    surface = physics.toa_to_boa(dark_toa[:, None], *terms_parts(terms))  # (bands, candidates)
    rms = np.sqrt(np.mean(surface[1:] ** 2, axis=0))
    best = int(np.argmin(rms))
    return float(candidates[best]), float(rms[best]), surface[:, best]


def estimate_aot_dark_water(
    water_toa: np.ndarray, bands: tuple[str, ...], lut: SixSLut, *, sensor: str, models: tuple[str, ...],
    n_valid: int, sza: float, vza: float, raa: float, wv: float, o3: float, caps: dict[str, float] | None = None,
) -> DarkWaterAot | None:
    """AOT and model from the water pixels ``water_toa`` (``bands`` = B08 then SWIR, x n, TOA); None when
    water says nothing. ``caps``: per model, the highest AOT the scene's darkest pixels allow.

    None when the water is too little (under ``WATER_MIN_PIXELS`` or ``WATER_MIN_AREA`` of ``n_valid``),
    or when no model fits: SWIR residual over ``WATER_MAX_RESIDUAL``, B08 surface under
    ``WATER_NIR_FLOOR``, the fit on the table's last AOT (more haze than the table knows) or above the
    model's cap by more than ``WATER_CAP_TOLERANCE``.
    """
    n_water = water_toa.shape[1]
    if n_water < max(WATER_MIN_PIXELS, WATER_MIN_AREA * n_valid) or bands[0] != "B08" or len(bands) < 2:
        return None
    dark = np.percentile(water_toa, WATER_PERCENTILE, axis=1)
    geometry = dict(sza=sza, vza=vza, raa=raa, wv=wv, o3=o3)
    last = float(aot_candidates(lut)[-1])
    fits = {m: black_fit(dark, bands, lut, sensor=sensor, aerosol=m, **geometry) for m in models}
    fitting = [m for m, (aot, rms, surface) in fits.items()
               if rms <= WATER_MAX_RESIDUAL and aot < last and surface[0] >= WATER_NIR_FLOOR
               and (caps is None or aot <= caps[m] + WATER_CAP_TOLERANCE)]
    if not fitting:
        return None
    best = min(fitting, key=lambda m: (abs(fits[m][2][0]), models.index(m)))
    chosen = models[0] if models[0] in fitting else best
    if abs(fits[best][2][0]) + WATER_MODEL_MARGIN < abs(fits[chosen][2][0]):
        chosen = best
    aot, _, surface = fits[chosen]
    return DarkWaterAot(
        aot=aot, aerosol=chosen, n_water=n_water,
        per_band={b: round(float(v), 5) for b, v in zip(bands, surface, strict=True)},
        nir_surface={m: round(float(f[2][0]), 5) for m, f in fits.items()},
    )
