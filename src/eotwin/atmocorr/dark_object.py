"""Dark objects: Chavez's dark object subtraction, and the dark object read as an AOT through the 6S table (pure).

- :func:`dark_object_subtraction`: Chavez's DOS. The darkest pixels are assumed to have 1 %
  reflectance; everything above is haze, subtracted everywhere. No transmittance, no gas. Per band
  (DOS1), or (default when band names are given) with Chavez's relative scattering model: the haze
  measured in the visible bands, where dark objects exist, is fitted as ``a * wavelength^-k`` and
  extrapolated to the red-edge, NIR and SWIR bands, where a scene rarely holds a 1 % dark object.
- :func:`dos_correction`: the pipeline's ``dos``. The same dark object read as an AOT through the 6S
  table, which then corrects every band with transmittances and gas (plain DOS is worse than no
  correction in the NIR and SWIR of bright vegetation: it subtracts haze and ignores the attenuation).
- :func:`dark_object_aot`: the AOT at which the darkest pixels reach a given surface reflectance (also
  the DDV's upper bound).
"""

from __future__ import annotations

import numpy as np

from eotwin.atmocorr import physics
from eotwin.atmocorr.lut import SixSLut
from eotwin.atmocorr.retrieval import (
    DEFAULT_AOT,
    AotRetrieval,
    DdvResult,
    aot_candidates,
    crossings,
    mean_geometry,
    terms_parts,
)
from eotwin.atmocorr.water_vapour import retrieve_water_vapour
from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import CENTRE_NM, normalise_band

DOS_DARK_REFLECTANCE = 0.01
DOS_PERCENTILE = 0.1  # percent of valid pixels taken as "dark": robust against a few dead pixels
DOS_NO_DARK_MARGIN = 0.02  # no dark object: the darkest pixels above 1 % + this under the table's thickest haze
DOS_REFERENCE_BANDS = ("B01", "B02", "B03", "B04")  # visible: dark objects (water, shadow, forest) exist


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
        physics.check_stack(toa, bands)
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


def dark_object_aot(
    dark_toa: np.ndarray,
    bands: tuple[str, ...],
    lut: SixSLut,
    target: float,
    *,
    sensor: str,
    aerosol: str,
    sza: float,
    vza: float,
    raa: float,
    wv: float,
    o3: float,
) -> float:
    """The AOT at which the darkest pixels' surface reflectance falls to ``target`` in the first band to get there.

    ``dark_toa`` holds one TOA value per band (a low percentile of the scene). Beyond this AOT the
    path alone would be brighter than what those pixels show: with ``target`` a little below zero it is
    the upper bound any retrieval must respect; with 1 % it is Chavez's dark object, carried by 6S.
    """
    candidates = aot_candidates(lut)
    terms = lut.terms_for(sensor, bands, aerosol, candidates, sza, vza, raa, wv, o3)
    surface = physics.toa_to_boa(dark_toa[:, None], *terms_parts(terms))  # (bands, candidates)
    return float(crossings(candidates, (surface - target).T).min())


def percentile_toa(flat: np.ndarray, percentile: float) -> np.ndarray:
    return np.percentile(flat, percentile, axis=1) if flat.shape[1] else np.full(flat.shape[0], np.nan)


def estimate_aot_dark_object(
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
    o3: float = physics.DEFAULT_OZONE,
    valid: np.ndarray | None = None,
    percentile: float = DOS_PERCENTILE,
    dark_reflectance: float = DOS_DARK_REFLECTANCE,
) -> AotRetrieval:
    """Chavez's dark object read through 6S: the AOT at which the darkest pixels of a visible band have
    1 % reflectance (the lowest over B02-B04: no band is over-corrected). A scene with no dark object
    (a desert: the darkest pixels stay above 1 % even under the table's thickest haze) gets the default
    AOT, and ``source`` says so.

    Plain DOS subtracts each band's haze and nothing else; its scattering model must guess the haze of
    the red-edge, NIR and SWIR bands, and no transmittance or gas is corrected, so on bright vegetation
    it ends up worse than no correction there (issue 13: NIR bias -0.18 on a real scene). Here the haze
    is read as an AOT and the table carries it to every band, with transmittances and spherical albedo.
    """
    toa = physics.check_stack(toa, bands)
    refs = tuple(b for b in ("B02", "B03", "B04") if b in bands)
    if not refs:
        raise EotwinError("dark object subtraction with 6S needs at least one of bands B02, B03, B04")
    flat = toa.reshape(toa.shape[0], -1)[[list(bands).index(b) for b in refs]].astype(np.float64)
    mask = np.isfinite(flat).all(axis=0)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool).reshape(-1)
    if not mask.any():
        raise EotwinError("dark object subtraction needs at least one valid pixel")
    dark = percentile_toa(flat[:, mask], percentile)
    aot = dark_object_aot(
        dark, refs, lut, dark_reflectance, sensor=sensor, aerosol=aerosol, sza=sza, vza=vza, raa=raa, wv=wv, o3=o3
    )
    top = lut.terms_for(sensor, refs, aerosol, lut.axes["aot"][-1], sza, vza, raa, wv, o3)
    darkest_at_top = float(np.min(physics.toa_to_boa(dark, *terms_parts(top))))
    if darkest_at_top > dark_reflectance + DOS_NO_DARK_MARGIN:  # a desert: the haze would exceed the table
        reason = (f"no dark object: under the table's thickest haze the darkest pixels still read "
                  f"{darkest_at_top:.3f}")
        return AotRetrieval(DEFAULT_AOT, str(aerosol).lower(), f"default ({reason})", 0, 0, None)
    return AotRetrieval(aot, str(aerosol).lower(), "dark object", 0, 0, None)


def dos_correction(
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
    o3: float = physics.DEFAULT_OZONE,
    valid: np.ndarray | None = None,
) -> DdvResult:
    """DOS for the pipeline: AOT from the dark object (:func:`estimate_aot_dark_object`), water vapour
    from B09/B8A (unless given), then the 6S-table inversion of every band."""
    toa = physics.check_stack(toa, bands)
    mean = mean_geometry(sza, vza, raa)
    water = None
    if wv is None:
        if "B8A" not in bands or "B09" not in bands:
            raise EotwinError("water vapour estimation needs bands B8A and B09 (or pass wv)")
        water = retrieve_water_vapour(
            toa[list(bands).index("B8A")], toa[list(bands).index("B09")], lut, sensor=sensor, aerosol=aerosol,
            o3=o3, valid=valid, default=lut.wv_ref, **mean,
        )
        wv = water.wv
    retrieval = estimate_aot_dark_object(
        toa, bands, lut, sensor=sensor, aerosol=aerosol, wv=wv, o3=o3, valid=valid, **mean
    )
    boa = physics.lut_correction(toa, bands, lut, sensor=sensor,
                                 atmosphere=physics.Atmosphere(retrieval.aot, wv, o3, aerosol),
                                 geometry=physics.Geometry(sza, vza, raa))
    return DdvResult(boa, retrieval.aot, float(wv), 0, None, False, retrieval.aerosol, retrieval, water)
