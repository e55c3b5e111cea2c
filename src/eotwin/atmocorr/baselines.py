"""Baseline atmospheric corrections the AI model must beat (pure: arrays and a loaded LUT in, arrays out).

- :func:`dark_object_subtraction`: Chavez's DOS. The darkest pixels are assumed to have 1 %
  reflectance; everything above is haze, subtracted everywhere. No transmittance, no gas. Per band
  (DOS1), or (default when band names are given) with Chavez's relative scattering model: the haze
  measured in the visible bands, where dark objects exist, is fitted as ``a * wavelength^-k`` and
  extrapolated to the red-edge, NIR and SWIR bands, where a scene rarely holds a 1 % dark object.
- :func:`dos_correction`: the pipeline's ``dos``. The same dark object read as an AOT through the 6S
  table, which then corrects every band with transmittances and gas (plain DOS is worse than no
  correction in the NIR and SWIR of bright vegetation: it subtracts haze and ignores the attenuation).
- :func:`ddv_correction`: the sen2cor approach. Water vapour from the B09/B8A band ratio (flagged when
  the scene lies beyond the table's range), aerosol optical thickness from dark dense vegetation (DDV:
  B12 surface reflectance 0.01-0.05 and NDVI > 0.4, widened to 0.10 then 0.12 as sen2cor's
  L2A_CAL_AC_GIPP does when too few pixels are found; cloud, water and shadow set aside) with
  Kaufman's ratios rho_red = 0.5 rho_2.2 and rho_blue = 0.25 rho_2.2 solved per pixel and trusted only
  where red and blue agree; the aerosol model is the table's one under which they agree best; a
  default AOT when dark pixels are too few or disagree; then the 6S-table inversion of every band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from eotwin.atmocorr import physics
from eotwin.atmocorr.lut import SixSLut
from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import CENTRE_NM, normalise_band

DOS_DARK_REFLECTANCE = 0.01
DOS_PERCENTILE = 0.1  # percent of valid pixels taken as "dark": robust against a few dead pixels
DOS_NO_DARK_MARGIN = 0.02  # no dark object: the darkest pixels above 1 % + this under the table's thickest haze
DOS_REFERENCE_BANDS = ("B01", "B02", "B03", "B04")  # visible: dark objects (water, shadow, forest) exist
# sen2cor's DDV configuration (L2A_CAL_AC_GIPP.xml): AC_Swir_Refl_Lower_Th, AC_Ddv_Swir_Refl_Th1..3
DDV_SWIR_RANGES = ((0.01, 0.05), (0.01, 0.10), (0.01, 0.12))  # B12 surface range, widened in turn
DDV_MIN_AREA = 0.02  # AC_Min_Ddv_Area: 2 % of the valid pixels, else the range widens (then the default)
DDV_MIN_NDVI = 0.4
DDV_MIN_PIXELS = 50
DDV_MAX_SAMPLE = 20_000
DDV_RED_RATIO = 0.5  # AC_Swir_22um_Red_Refl_Ratio
DDV_BLUE_RATIO = 0.25  # AC_Red_Blue_Refl_Ratio 0.5 times the red ratio
DDV_CLOUD_BLUE = 0.25  # sen2cor's blue cloud threshold (25 %) on the aerosol-free surface
DDV_WATER_NIR = 0.05  # sen2cor's water thresholds: NIR below 5 % and SWIR-1 below 3 % (or NDWI > 0)
DDV_WATER_SWIR1 = 0.03
DDV_SHADOW_NIR = 0.10  # dense vegetation is brighter than this in the NIR; shadowed pixels are not
# Real dense vegetation departs from Kaufman's ratios: on the BigEarthNet surfaces (sen2cor L2A) its
# median B04/B12 is 0.43 and B02/B12 0.38, so the red AOT comes out low and the blue AOT high by about
# 0.05 each (their mean is close to the truth). The agreement tests leave room for that.
DDV_PIXEL_AGREEMENT = 0.25  # a pixel's red- and blue-derived AOTs must agree within this
DDV_SCENE_AGREEMENT = 0.25  # ... and the scene medians of the pixels kept within this
DDV_MAX_SPREAD = 0.25  # interquartile range of the pixels' AOT beyond which they disagree
# another aerosol model than the first (continental) only on clear evidence: its blue/red mismatch lower
# by this much, at an AOT where the models differ more than the surface ratios' own scatter, and with
# most dark pixels inside the table's AOT range under every model
DDV_MODEL_MARGIN = 0.02
DDV_MODEL_MIN_AOT = 0.15
DDV_CAP_SURFACE = -0.005  # the darkest pixels' blue and red surface may not fall below this
WV_MAX_SAMPLE = 50_000  # pixels for the water-vapour medians: evenly spread, so a full tile costs no more
WV_CANDIDATES = 49
WV_CHUNK = 7  # candidates per step: working arrays of (WV_CHUNK, pixels), whatever the candidate count
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
class WaterVapour:
    """Scene water vapour from B09/B8A, and how much of the scene lies beyond the 6S table's range."""

    wv: float  # g/cm2, within the table's axis
    pixels: int  # pixels that entered the estimate
    below: int  # pixels whose own B09 asks for less water vapour than the table's lowest node
    above: int  # ... for more than its highest node
    edge: str | None  # "lower" or "upper" when the scene estimate is clamped to that end of the table
    source: str = "B09/B8A"  # or "default (...)" when the scene has too few pixels to measure it

    def warning(self, nodes: np.ndarray) -> str | None:
        """One line for the run info when the estimate sits on a table edge (it is then a bound, not a
        value) or is a default."""
        if self.source != "B09/B8A":
            return f"water vapour {self.wv:g} g/cm2 is a {self.source}"
        if self.edge is None:
            return None
        value, count = (nodes[0], self.below) if self.edge == "lower" else (nodes[-1], self.above)
        return (
            f"water vapour clamped to the 6S table's {self.edge} edge ({value:g} g/cm2): "
            f"{count} of {self.pixels} sampled pixels lie beyond it"
        )


@dataclass(frozen=True)
class AotRetrieval:
    """The scene's aerosol (AOT at 550 nm and 6S model) and how it was found, for the run info."""

    aot: float
    aerosol: str
    source: str  # "ddv", "ddv, capped by the darkest pixels", "default (<why>)", "dark object"
    n_found: int  # dark dense vegetation pixels selected
    n_used: int  # of those, the pixels whose red- and blue-derived AOTs agree (0 when the default is used)
    swir_range: tuple[float, float] | None
    aot_red: float | None = None  # median AOT of the pixels used, from the B04/B12 ratio
    aot_blue: float | None = None  # ... from the B02/B12 ratio
    spread: float | None = None  # interquartile range of the pixels' AOT
    cap: float | None = None  # the highest AOT the scene's darkest blue and red pixels allow
    mismatch: dict[str, float] = field(default_factory=dict)  # |median blue - median red| AOT per model
    excluded: dict[str, int] = field(default_factory=dict)  # pixels left out as cloud, water, shadow

    @property
    def fallback(self) -> bool:
        return self.source.startswith("default")


@dataclass(frozen=True)
class DdvResult:
    """Output of the DDV baseline: surface reflectance and the atmosphere it estimated."""

    boa: np.ndarray  # (bands, ...) float32
    aot: float
    wv: float
    n_dark: int  # DDV pixels used (0 when the default AOT was used)
    swir_range: tuple[float, float] | None
    fallback: bool
    aerosol: str = "continental"
    retrieval: AotRetrieval | None = None
    water: WaterVapour | None = None  # None when the water vapour was given


def retrieve_water_vapour(
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
    default: float | None = None,
) -> WaterVapour:
    """Scene water vapour (g/cm2) from the B09/B8A ratio, assuming a flat surface between 865 and 945 nm.

    For each candidate water vapour the B8A surface is inverted and pushed through B09; the candidate
    whose predicted B09 matches the observed one (median over valid pixels) wins. At most
    ``WV_MAX_SAMPLE`` valid pixels, evenly spread over the input, enter the medians, and candidates are
    taken a few at a time, so memory stays bounded on a full tile. A scene beyond the table's range is
    clamped to its edge, never silently: ``edge`` says so and ``below``/``above`` count the pixels
    whose own B09 lies beyond the lowest or highest node. With fewer than 10 pixels bright enough in
    B8A (open water) it is an error, or ``default`` when given, and ``source`` then says so.
    """
    b8a = np.asarray(toa_b8a, dtype=np.float64).reshape(-1)
    b09 = np.asarray(toa_b09, dtype=np.float64).reshape(-1)
    mask = np.isfinite(b8a) & np.isfinite(b09) & (b8a > 0.02)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool).reshape(-1)
    if mask.sum() < 10:
        if default is not None:
            reason = f"default (only {int(mask.sum())} pixels with B8A reflectance above 0.02: too dark to measure)"
            return WaterVapour(float(default), int(mask.sum()), 0, 0, None, reason)
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
    below = above = 0
    for start in range(0, candidates.size, WV_CHUNK):
        sl = slice(start, start + WV_CHUNK)
        rho = physics.toa_to_boa(b8a[None, :], *(t[0][sl, None] for t in parts))
        diff = physics.boa_to_toa(rho, *(t[1][sl, None] for t in parts)) - b09[None, :]
        mismatch[sl] = np.median(diff, axis=1)  # decreases as water vapour grows
        if start == 0:  # too little B09 predicted even at the driest node: the pixel is drier than it
            below = int((diff[0] < 0).sum())
        if sl.stop >= candidates.size:  # still too much B09 predicted at the wettest node
            above = int((diff[-1] > 0).sum())
    edge = None
    if mismatch[0] < 0 and mismatch[-1] < 0:
        edge = "lower"
    elif mismatch[0] > 0 and mismatch[-1] > 0:
        edge = "upper"
    return WaterVapour(float(_root(candidates, mismatch)), int(index.size), below, above, edge)


def _root(x: np.ndarray, f: np.ndarray) -> float:
    """Where a sampled, monotonic ``f`` crosses zero (clamped to the ends of ``x``)."""
    if f[0] * f[-1] > 0:
        return float(x[0] if abs(f[0]) < abs(f[-1]) else x[-1])
    order = np.argsort(f)
    return float(np.interp(0.0, f[order], x[order]))


def _crossings(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Per column of ``f`` (candidates x pixels, decreasing along ``x``): where it crosses zero.

    Linear between the two candidates around the first negative value; clamped to ``x[0]`` where the
    column starts negative and to ``x[-1]`` where it never gets there. One vectorised pass, no loop.
    """
    negative = f < 0
    first = np.argmax(negative, axis=0)
    k = np.clip(first, 1, x.size - 1)
    cols = np.arange(f.shape[1])
    f0, f1 = f[k - 1, cols], f[k, cols]
    step = f0 - f1
    frac = np.clip(np.divide(f0, step, out=np.zeros_like(f0), where=step != 0), 0.0, 1.0)
    out = x[k - 1] + frac * (x[k] - x[k - 1])
    out[negative[0]] = x[0]
    out[~negative.any(axis=0)] = x[-1]
    return out


def _aot_candidates(lut: SixSLut) -> np.ndarray:
    nodes = lut.axes["aot"]
    return np.linspace(nodes[0], nodes[-1], round((nodes[-1] - nodes[0]) / 0.01) + 1)


def _terms_parts(terms) -> tuple[np.ndarray, ...]:
    return (terms.path, terms.tg, terms.t_down, terms.t_up, terms.s_alb)


def _dark_object_aot(
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
    candidates = _aot_candidates(lut)
    terms = lut.terms_for(sensor, bands, aerosol, candidates, sza, vza, raa, wv, o3)
    surface = physics.toa_to_boa(dark_toa[:, None], *_terms_parts(terms))  # (bands, candidates)
    return float(_crossings(candidates, (surface - target).T).min())


def _percentile_toa(flat: np.ndarray, percentile: float) -> np.ndarray:
    return np.percentile(flat, percentile, axis=1) if flat.shape[1] else np.full(flat.shape[0], np.nan)


def ddv_input_bands(bands: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The bands the DDV reads, in its order: B02, B04, B08, B12, then B03 and B11 when present."""
    need = ("B02", "B04", "B08", "B12")
    if any(b not in bands for b in need):
        raise EotwinError("the DDV method needs bands B02, B04, B08 and B12")
    return need + tuple(b for b in ("B03", "B11") if b in bands)


def aerosol_free_classes(
    flat: np.ndarray, names: tuple[str, ...], lut: SixSLut, *, sensor: str, sza: float, vza: float, raa: float,
    wv: float, o3: float,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The aerosol-free (Rayleigh-corrected) surface of pixels ``flat`` (bands ``names`` x n), its NDVI and
    sen2cor's cloud, water and shadow classes on it (AOT 0 is the same atmosphere for every model)."""
    rayleigh = lut.terms_for(sensor, names, lut.aerosols[0], lut.axes["aot"][0], sza, vza, raa, wv, o3)
    rc = dict(zip(names, physics.toa_to_boa(flat, *(t[:, None] for t in _terms_parts(rayleigh))), strict=True))
    ndvi = (rc["B08"] - rc["B04"]) / np.maximum(rc["B08"] + rc["B04"], 1e-6)
    cloud = rc["B02"] > DDV_CLOUD_BLUE
    water = rc["B08"] < DDV_WATER_NIR
    if "B11" in rc:
        water &= rc["B11"] < DDV_WATER_SWIR1
    if "B03" in rc:
        water |= (rc["B03"] - rc["B08"]) > 0  # NDWI > 0
    water &= ~cloud
    shadow = (rc["B08"] < DDV_SHADOW_NIR) & ~water & ~cloud
    return rc, ndvi, cloud, water, shadow


def ddv_pixel_aots(
    sample: np.ndarray, lut: SixSLut, *, sensor: str, aerosol: str, sza: float, vza: float, raa: float, wv: float,
    o3: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per dark pixel (``sample``: TOA of B02, B04, B12 x n) the AOTs at which its red and blue Kaufman ratios hold."""
    candidates = _aot_candidates(lut)
    terms = lut.terms_for(sensor, ("B02", "B04", "B12"), aerosol, candidates, sza, vza, raa, wv, o3)
    blue, red, swir = physics.toa_to_boa(sample[:, None, :], *(t[:, :, None] for t in _terms_parts(terms)))
    return _crossings(candidates, red - DDV_RED_RATIO * swir), _crossings(candidates, blue - DDV_BLUE_RATIO * swir)


def estimate_aot_ddv(
    toa: np.ndarray,
    bands: tuple[str, ...] | list[str],
    lut: SixSLut,
    *,
    sensor: str,
    aerosol: str | None,
    sza: float,
    vza: float,
    raa: float,
    wv: float,
    o3: float = DEFAULT_OZONE,
    valid: np.ndarray | None = None,
    default_aot: float = DEFAULT_AOT,
) -> AotRetrieval:
    """Scene AOT at 550 nm and aerosol model from dark dense vegetation, with sen2cor's fallbacks.

    1. Cloud (blue > 0.25), water (NDWI > 0, or NIR < 0.05 with SWIR-1 < 0.03) and shadow (NIR < 0.10)
       pixels are set aside on the aerosol-free (Rayleigh-corrected) surface.
    2. DDV pixels: B12 surface 0.01 to 0.05 and NDVI > 0.4; too few (under 2 % of the valid pixels,
       or under 50) and the upper bound widens to 0.10, then 0.12; still too few: the default AOT.
    3. For every DDV pixel and aerosol model, the AOT at which its red (B04 = 0.5 B12) and its blue
       (B02 = 0.25 B12) Kaufman ratio hold. ``aerosol=None`` keeps the table's first (continental)
       model unless another's blue and red AOTs agree clearly better (``DDV_MODEL_*``): the spectral
       slope of its extinction then matches the scene's.
    4. Pixels whose red and blue AOTs differ by more than ``DDV_PIXEL_AGREEMENT`` are dropped (the
       ratios fail there); when fewer than half remain, when the remaining pixels' red and blue medians
       differ by more than ``DDV_SCENE_AGREEMENT`` or when their AOTs spread widely (interquartile range
       over ``DDV_MAX_SPREAD``), the dark pixels disagree and the default AOT is used. Otherwise the
       scene AOT is the median of the kept pixels' mean of the two.
    5. The AOT never exceeds what the scene's darkest blue and red pixels allow (their surface would
       turn negative): the default and the retrieval are capped there.
    """
    toa = _check_stack(toa, bands)
    names = ddv_input_bands(bands)
    need = names[:4]
    flat = toa.reshape(toa.shape[0], -1)[[list(bands).index(b) for b in names]].astype(np.float64)
    mask = np.isfinite(flat).all(axis=0)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool).reshape(-1)
    flat = flat[:, mask]
    if flat.shape[1] == 0:
        raise EotwinError("the DDV method needs at least one valid pixel")
    models = tuple(lut.aerosols) if aerosol is None else (str(aerosol).lower(),)
    default_model = models[0]
    geometry = dict(sza=sza, vza=vza, raa=raa, wv=wv, o3=o3)
    rc, ndvi, cloud, water, shadow = aerosol_free_classes(flat, names, lut, sensor=sensor, **geometry)
    clear = ~(cloud | water | shadow)
    excluded = {"cloud": int(cloud.sum()), "water": int(water.sum()), "shadow": int(shadow.sum())}
    # the darkest blue and red pixels (not cloud) bound the AOT from above, for every model
    dark_toa = _percentile_toa(flat[:2, ~cloud], DOS_PERCENTILE)
    caps = {
        m: _dark_object_aot(dark_toa, need[:2], lut, DDV_CAP_SURFACE, sensor=sensor, aerosol=m, **geometry)
        if np.isfinite(dark_toa).all()
        else float(lut.axes["aot"][-1])
        for m in models
    }

    def default(reason: str, n_found: int, swir_range, **extra) -> AotRetrieval:
        cap = caps[default_model]
        return AotRetrieval(
            min(default_aot, cap), default_model, f"default ({reason})", n_found, 0, swir_range,
            cap=cap, excluded=excluded, **extra,
        )

    needed = max(DDV_MIN_PIXELS, math.ceil(DDV_MIN_AREA * flat.shape[1]))
    swir = rc["B12"]
    for low, high in DDV_SWIR_RANGES:
        dark = clear & (swir >= low) & (swir <= high) & (ndvi > DDV_MIN_NDVI)
        if dark.sum() >= needed:
            break
    else:
        return default(f"too few dark pixels: {int(dark.sum())} < {needed}", int(dark.sum()), None)
    n_found = int(dark.sum())
    sample = flat[[0, 1, 3]][:, dark]  # B02, B04, B12
    if sample.shape[1] > DDV_MAX_SAMPLE:  # the medians below need no more: memory stays flat on full tiles
        sample = sample[:, np.linspace(0, sample.shape[1] - 1, DDV_MAX_SAMPLE).astype(np.int64)]
    candidates = _aot_candidates(lut)
    per_model: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    mismatch: dict[str, float] = {}
    for m in models:
        per_model[m] = ddv_pixel_aots(sample, lut, sensor=sensor, aerosol=m, **geometry)
    # a pixel whose AOT sits on an end of the table under some model says nothing about the model
    inside = np.logical_and.reduce(
        [(a > candidates[0]) & (a < candidates[-1]) for pair in per_model.values() for a in pair]
    )
    for m, (aot_red, aot_blue) in per_model.items():
        keep = inside if inside.sum() >= 0.5 * inside.size else slice(None)
        mismatch[m] = round(float(abs(np.median(aot_blue[keep]) - np.median(aot_red[keep]))), 4)
    chosen = default_model
    if (
        len(models) > 1
        and inside.sum() >= 0.5 * inside.size
        and np.median(0.5 * sum(per_model[default_model])) >= DDV_MODEL_MIN_AOT
    ):
        best = min(models, key=lambda m: (mismatch[m], models.index(m)))
        if mismatch[best] + DDV_MODEL_MARGIN < mismatch[default_model]:
            chosen = best
    aot_red, aot_blue = per_model[chosen]
    agree = np.abs(aot_red - aot_blue) <= DDV_PIXEL_AGREEMENT
    n_used = int(agree.sum())
    if n_used < max(DDV_MIN_PIXELS, 0.5 * aot_red.size):
        return default(
            f"dark pixels disagree: {n_used} of {aot_red.size} with red and blue AOT within "
            f"{DDV_PIXEL_AGREEMENT:g}", n_found, (low, high), mismatch=mismatch,
        )
    med_red, med_blue = float(np.median(aot_red[agree])), float(np.median(aot_blue[agree]))
    per_pixel = 0.5 * (aot_red[agree] + aot_blue[agree])
    q25, aot, q75 = (float(v) for v in np.percentile(per_pixel, (25, 50, 75)))
    stats = dict(aot_red=round(med_red, 4), aot_blue=round(med_blue, 4), spread=round(q75 - q25, 4),
                 mismatch=mismatch)
    if abs(med_red - med_blue) > DDV_SCENE_AGREEMENT:
        return default(f"red AOT {med_red:.2f} and blue AOT {med_blue:.2f} disagree", n_found, (low, high),
                       **stats)
    if q75 - q25 > DDV_MAX_SPREAD:
        return default(f"dark pixels' AOT spread {q75 - q25:.2f}", n_found, (low, high), **stats)
    cap = caps[chosen]
    source = "ddv" if aot <= cap else "ddv, capped by the darkest pixels"
    return AotRetrieval(min(aot, cap), chosen, source, n_found, n_used, (low, high), cap=cap, excluded=excluded,
                        **stats)


def ddv_correction(
    toa: np.ndarray,
    bands: tuple[str, ...] | list[str],
    lut: SixSLut,
    *,
    sensor: str,
    sza: np.ndarray | float,
    vza: np.ndarray | float,
    raa: np.ndarray | float,
    aerosol: str | None = None,
    wv: float | None = None,
    o3: float = DEFAULT_OZONE,
    valid: np.ndarray | None = None,
) -> DdvResult:
    """The sen2cor-like baseline: estimate water vapour (unless given), AOT and aerosol model (unless
    given) from the scene, invert all bands.

    The atmosphere is estimated with the scene-mean angles; the inversion uses the angles as given
    (scalars or per-pixel arrays).
    """
    toa = _check_stack(toa, bands)
    mean = _mean_geometry(sza, vza, raa)
    estimate_wv = wv is None
    if estimate_wv and ("B8A" not in bands or "B09" not in bands):
        raise EotwinError("water vapour estimation needs bands B8A and B09 (or pass wv)")
    aot, model = DEFAULT_AOT, aerosol or lut.aerosols[0]
    water = None
    # water vapour and AOT each depend a little on the other: two rounds settle them
    for _ in range(2 if estimate_wv else 1):
        if estimate_wv:
            water = retrieve_water_vapour(
                toa[list(bands).index("B8A")], toa[list(bands).index("B09")], lut, sensor=sensor,
                aerosol=model, aot=aot, o3=o3, valid=valid, default=lut.wv_ref, **mean,
            )
            wv = water.wv
        retrieval = estimate_aot_ddv(
            toa, bands, lut, sensor=sensor, aerosol=aerosol, wv=wv, o3=o3, valid=valid, **mean
        )
        aot, model = retrieval.aot, retrieval.aerosol
    boa = lut_correction(
        toa, bands, lut, sensor=sensor, aerosol=model, aot=aot, sza=sza, vza=vza, raa=raa, wv=wv, o3=o3
    )
    return DdvResult(
        boa=boa, aot=aot, wv=float(wv), n_dark=retrieval.n_used, swir_range=retrieval.swir_range,
        fallback=retrieval.fallback, aerosol=model, retrieval=retrieval, water=water,
    )


def _mean_geometry(sza, vza, raa) -> dict[str, float]:
    folded_raa = physics.relative_azimuth(raa, 0.0)  # so 179 and -179 average to 179, not 0
    return {k: float(np.nanmean(v)) for k, v in (("sza", sza), ("vza", vza), ("raa", folded_raa))}


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
    o3: float = DEFAULT_OZONE,
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
    toa = _check_stack(toa, bands)
    refs = tuple(b for b in ("B02", "B03", "B04") if b in bands)
    if not refs:
        raise EotwinError("dark object subtraction with 6S needs at least one of bands B02, B03, B04")
    flat = toa.reshape(toa.shape[0], -1)[[list(bands).index(b) for b in refs]].astype(np.float64)
    mask = np.isfinite(flat).all(axis=0)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool).reshape(-1)
    if not mask.any():
        raise EotwinError("dark object subtraction needs at least one valid pixel")
    dark = _percentile_toa(flat[:, mask], percentile)
    aot = _dark_object_aot(
        dark, refs, lut, dark_reflectance, sensor=sensor, aerosol=aerosol, sza=sza, vza=vza, raa=raa, wv=wv, o3=o3
    )
    top = lut.terms_for(sensor, refs, aerosol, lut.axes["aot"][-1], sza, vza, raa, wv, o3)
    darkest_at_top = float(np.min(physics.toa_to_boa(dark, *_terms_parts(top))))
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
    o3: float = DEFAULT_OZONE,
    valid: np.ndarray | None = None,
) -> DdvResult:
    """DOS for the pipeline: AOT from the dark object (:func:`estimate_aot_dark_object`), water vapour
    from B09/B8A (unless given), then the 6S-table inversion of every band."""
    toa = _check_stack(toa, bands)
    mean = _mean_geometry(sza, vza, raa)
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
    boa = lut_correction(
        toa, bands, lut, sensor=sensor, aerosol=aerosol, aot=retrieval.aot, sza=sza, vza=vza, raa=raa, wv=wv, o3=o3
    )
    return DdvResult(boa, retrieval.aot, float(wv), 0, None, False, retrieval.aerosol, retrieval, water)
