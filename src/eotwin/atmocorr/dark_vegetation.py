"""sen2cor's aerosol retrieval from dark dense vegetation (DDV), and the 6S-table correction it drives (pure).

:func:`ddv_correction`: water vapour from the B09/B8A band ratio (:mod:`.water_vapour`), aerosol optical
thickness from dark dense vegetation (DDV: B12 surface reflectance 0.01-0.05 and NDVI > 0.4, widened to
0.10 then 0.12 as sen2cor's L2A_CAL_AC_GIPP does when too few pixels are found; cloud, water and shadow
set aside) with Kaufman's ratios rho_red = 0.5 rho_2.2 and rho_blue = 0.25 rho_2.2 solved per pixel and
trusted only where red and blue agree; the aerosol model is the table's one under which they agree
best; when dark pixels are too few or disagree, the clearest open water's NIR/SWIR (:mod:`.dark_water`),
else a default AOT; then the 6S-table inversion of every band.
"""

from __future__ import annotations

import math

import numpy as np

from eotwin.atmocorr import physics
from eotwin.atmocorr.dark_object import DOS_PERCENTILE, dark_object_aot, percentile_toa
from eotwin.atmocorr.dark_water import WATER_BANDS, estimate_aot_dark_water, offshore
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
    rc = dict(zip(names, physics.toa_to_boa(flat, *(t[:, None] for t in terms_parts(rayleigh))), strict=True))
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


def open_water_mask(
    toa: np.ndarray, bands: tuple[str, ...] | list[str], lut: SixSLut, *, pixel_size: float, sensor: str,
    sza: float, vza: float, raa: float, wv: float | None = None, o3: float = physics.DEFAULT_OZONE,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """(h, w) bool: the water pixels of the scene ``toa`` (bands, h, w) far enough from land for the dark-water
    retrieval (:func:`.dark_water.offshore`); ``pixel_size`` in metres."""
    toa = physics.check_stack(toa, bands)
    if toa.ndim != 3:
        raise EotwinError(f"open water needs a (bands, h, w) scene, got {toa.shape}")
    names = ddv_input_bands(bands)
    flat = toa.reshape(toa.shape[0], -1)[[list(bands).index(b) for b in names]].astype(np.float64)
    ok = np.isfinite(flat).all(axis=0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool).reshape(-1)
    water = np.zeros(ok.size, dtype=bool)
    if ok.any():
        _, _, _, is_water, _ = aerosol_free_classes(flat[:, ok], names, lut, sensor=sensor, sza=sza, vza=vza, raa=raa,
                                                    wv=lut.wv_ref if wv is None else wv, o3=o3)
        water[ok] = is_water
    return offshore(water.reshape(toa.shape[1:]), ok.reshape(toa.shape[1:]), pixel_size)


def ddv_pixel_aots(
    sample: np.ndarray, lut: SixSLut, *, sensor: str, aerosol: str, sza: float, vza: float, raa: float, wv: float,
    o3: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per dark pixel (``sample``: TOA of B02, B04, B12 x n) the AOTs at which its red and blue Kaufman ratios hold."""
    candidates = aot_candidates(lut)
    terms = lut.terms_for(sensor, ("B02", "B04", "B12"), aerosol, candidates, sza, vza, raa, wv, o3)
    blue, red, swir = physics.toa_to_boa(sample[:, None, :], *(t[:, :, None] for t in terms_parts(terms)))
    return crossings(candidates, red - DDV_RED_RATIO * swir), crossings(candidates, blue - DDV_BLUE_RATIO * swir)


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
    o3: float = physics.DEFAULT_OZONE,
    valid: np.ndarray | None = None,
    default_aot: float = DEFAULT_AOT,
    open_water: np.ndarray | None = None,
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
       over ``DDV_MAX_SPREAD``), the dark pixels disagree. Otherwise the scene AOT is the median of the
       kept pixels' mean of the two.
    4b. Dark pixels too few or disagreeing: when the scene holds enough water, the AOT and model come
       from its clearest water, black in B08, B11 and B12 (:func:`.dark_water.estimate_aot_dark_water`);
       else the default AOT.
    5. The AOT never exceeds what the scene's darkest blue and red pixels allow (their surface would
       turn negative): the default and the retrieval are capped there.

    ``open_water`` (bool over ``toa``'s pixels, from :func:`open_water_mask`): the pixels far enough from
    land for the dark-water retrieval of 4b; without it there is none (a flat sample knows no shores).
    """
    toa = physics.check_stack(toa, bands)
    names = ddv_input_bands(bands)
    need = names[:4]
    flat = toa.reshape(toa.shape[0], -1)[[list(bands).index(b) for b in names]].astype(np.float64)
    mask = np.isfinite(flat).all(axis=0)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool).reshape(-1)
    flat = flat[:, mask]
    if flat.shape[1] == 0:
        raise EotwinError("the DDV method needs at least one valid pixel")
    offshore = None if open_water is None else np.asarray(open_water, dtype=bool).reshape(-1)[mask]
    models = tuple(lut.aerosols) if aerosol is None else (str(aerosol).lower(),)
    default_model = models[0]
    geometry = dict(sza=sza, vza=vza, raa=raa, wv=wv, o3=o3)
    rc, ndvi, cloud, water, shadow = aerosol_free_classes(flat, names, lut, sensor=sensor, **geometry)
    clear = ~(cloud | water | shadow)
    excluded = {"cloud": int(cloud.sum()), "water": int(water.sum()), "shadow": int(shadow.sum())}
    # the darkest blue and red pixels (not cloud) bound the AOT from above, for every model
    dark_toa = percentile_toa(flat[:2, ~cloud], DOS_PERCENTILE)
    caps = {
        m: dark_object_aot(dark_toa, need[:2], lut, DDV_CAP_SURFACE, sensor=sensor, aerosol=m, **geometry)
        if np.isfinite(dark_toa).all()
        else float(lut.axes["aot"][-1])
        for m in models
    }

    def default(reason: str, n_found: int, swir_range, **extra) -> AotRetrieval:
        water_bands = tuple(b for b in WATER_BANDS if b in names)
        found = None if offshore is None else estimate_aot_dark_water(
            flat[[names.index(b) for b in water_bands]][:, water & offshore], water_bands, lut, sensor=sensor,
            models=models, n_valid=flat.shape[1], caps=caps, **geometry,
        )
        if found is not None:  # too little dark vegetation, but water enough: its NIR/SWIR is path
            cap = caps[found.aerosol]
            capped = ", capped by the darkest pixels" if found.aot > cap else ""
            return AotRetrieval(
                min(found.aot, cap), found.aerosol, f"dark water{capped} (no DDV: {reason})", found.n_water,
                found.n_water, None, cap=cap, excluded=excluded, water_surface=found.per_band,
                water_nir=found.nir_surface,
            )
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
    candidates = aot_candidates(lut)
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
    o3: float = physics.DEFAULT_OZONE,
    valid: np.ndarray | None = None,
    open_water: np.ndarray | None = None,
) -> DdvResult:
    """The sen2cor-like baseline: estimate water vapour (unless given), AOT and aerosol model (unless
    given) from the scene, invert all bands. ``open_water``: see :func:`estimate_aot_ddv`.

    The atmosphere is estimated with the scene-mean angles; the inversion uses the angles as given
    (scalars or per-pixel arrays).
    """
    toa = physics.check_stack(toa, bands)
    mean = mean_geometry(sza, vza, raa)
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
            toa, bands, lut, sensor=sensor, aerosol=aerosol, wv=wv, o3=o3, valid=valid, open_water=open_water, **mean
        )
        aot, model = retrieval.aot, retrieval.aerosol
    boa = physics.lut_correction(toa, bands, lut, sensor=sensor, atmosphere=physics.Atmosphere(aot, wv, o3, model),
                                 geometry=physics.Geometry(sza, vza, raa))
    return DdvResult(
        boa=boa, aot=aot, wv=float(wv), n_dark=retrieval.n_used, swir_range=retrieval.swir_range,
        fallback=retrieval.fallback, aerosol=model, retrieval=retrieval, water=water,
    )
