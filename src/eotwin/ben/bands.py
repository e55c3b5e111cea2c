"""Sentinel-1 and Sentinel-2 band sets, resampling to 120 x 120 and normalisation with the published statistics.

BigEarthNet v2 pairs every Sentinel-2 patch with a Sentinel-1 patch (``s1_name`` in the metadata): VV and VH
backscatter in dB, float32, 120 x 120 at 10 m. Band sets follow ConfigILM: ``s2`` (the 12 L2A bands),
``s1`` (VV, VH) and ``all`` (S1 then S2, 14 channels, ConfigILM's ``ALL`` order).

BigEarthNet stores each S2 band at its native resolution (10 m: 120 px, 20 m: 60 px, 60 m: 20 px).
Models need one 120 x 120 stack, so the 20 m and 60 m bands are upsampled here, either by nearest
neighbour (pixel replication) or bilinearly with ``align_corners=True`` (the convention ConfigILM used
when the published band statistics were computed; corner pixels keep their values). The statistics
used for normalisation must match the resampling, so both come from the same ``mode``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import L2A_BANDS, NATIVE_RESOLUTION, TCI_BANDS, bands_at

Resampling = Literal["nearest", "bilinear"]
PATCH_SIZE = 120
PATCH_RESOLUTION = 10  # metres per pixel of a 120 px patch (1.2 km)

#: BigEarthNet's S2 bands: the 12 L2A bands in ESA order (no B10).
S2_BANDS: tuple[str, ...] = L2A_BANDS
#: Sentinel-1 polarisations in ConfigILM's order (``BENv2_utils._s1_bandnames``).
S1_BANDS: tuple[str, ...] = ("VV", "VH")
#: Every BigEarthNet v2 band: S1 then S2, as ConfigILM's ``STANDARD_BANDS['ALL']`` (14 channels).
ALL_BANDS: tuple[str, ...] = S1_BANDS + S2_BANDS
BANDS_10M = bands_at(10)
BANDS_20M = bands_at(20)
BANDS_60M = bands_at(60)
#: The 10 m and 20 m bands in ESA order (the 60 m atmospheric bands B01, B09 left out).
BANDS_10M_20M: tuple[str, ...] = tuple(b for b in S2_BANDS if NATIVE_RESOLUTION[b] <= 20)

#: Named band sets; the lists keep ESA order except RGB (red, green, blue for display and RGB backbones).
BAND_SETS: dict[str, tuple[str, ...]] = {
    "all": ALL_BANDS,
    "s2": S2_BANDS,
    "s1": S1_BANDS,
    # reBEN's S1 + S2 input of its released models: VV, VH and the 10 m + 20 m bands (ConfigILM's 12)
    "s1-s2-10": (*S1_BANDS, *BANDS_10M_20M),
    # reBEN's "S2 only" input: 10 m and 20 m bands, 60 m atmospheric bands left out
    "s2-10": BANDS_10M_20M,
    "rgb": TCI_BANDS,
    "10m": BANDS_10M,
}

#: Pixels per side of each band's patch as BigEarthNet stores it (its native resolution over 1.2 km).
NATIVE_SIZE: dict[str, int] = {**{b: PATCH_SIZE * PATCH_RESOLUTION // NATIVE_RESOLUTION[b]
                                  for b in (*BANDS_10M, *BANDS_20M, *BANDS_60M)},
                               **dict.fromkeys(S1_BANDS, PATCH_SIZE)}


def is_s1(band: str) -> bool:
    """Whether ``band`` is a Sentinel-1 polarisation (read from the S1 partner patch, not the S2 one)."""
    return band in S1_BANDS


# Per-band mean and standard deviation of the official v2 train split (S2 in DN, S1 in dB), after resampling
# to 120 px. Source: the configilm 0.7.1 wheel on PyPI (code MIT, Copyright (c) 2023 Leonard Wayne Hackel;
# its BigEarthNet mock data CDLA-Permissive-1.0), file ``configilm/extra/BENv2_utils.py``, dicts ``means``
# and ``stds``, keys ``'120_nearest'`` and ``'120_bilinear'``; its comment says the S1 values come from
# BigEarthNet v1. S1 bands are already 120 px, so both resampling modes share their VV / VH values.
_MEAN = {
    "nearest": {"B01": 361.0767822265625, "B02": 438.3720703125, "B03": 614.0556640625, "B04": 588.4096069335938,
                "B05": 942.8433227539062, "B06": 1769.931640625, "B07": 2049.551513671875, "B08": 2193.2919921875,
                "B8A": 2235.556640625, "B09": 2241.455322265625, "B11": 1568.226806640625, "B12": 997.7324829101562,
                "VH": -19.352558135986328, "VV": -12.643863677978516},
    "bilinear": {"B01": 360.64678955078125, "B02": 438.3720703125, "B03": 614.0556640625, "B04": 588.4096069335938,
                 "B05": 942.7476806640625, "B06": 1769.8486328125, "B07": 2049.475830078125, "B08": 2193.2919921875,
                 "B8A": 2235.48681640625, "B09": 2241.10595703125, "B11": 1568.2115478515625, "B12": 997.715087890625,
                 "VH": -19.352558135986328, "VV": -12.643863677978516},
}
_STD = {
    "nearest": {"B01": 575.0687255859375, "B02": 607.02685546875, "B03": 603.2968139648438, "B04": 684.56884765625,
                "B05": 738.4326782226562, "B06": 1100.4560546875, "B07": 1275.805419921875, "B08": 1369.3717041015625,
                "B8A": 1356.5440673828125, "B09": 1316.393310546875, "B11": 1070.1612548828125, "B12": 813.5276489257812,
                "VH": 5.590505599975586, "VV": 5.133493900299072},
    "bilinear": {"B01": 563.1734008789062, "B02": 607.02685546875, "B03": 603.2968139648438, "B04": 684.56884765625,
                 "B05": 727.5784301757812, "B06": 1087.4288330078125, "B07": 1261.4302978515625, "B08": 1369.3717041015625,
                 "B8A": 1342.490478515625, "B09": 1294.35546875, "B11": 1063.9197998046875, "B12": 806.8846435546875,
                 "VH": 5.590505599975586, "VV": 5.133493900299072},
}


def resolve_bands(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A band set name (``all``, ``s1``, ``s2``, ``s2-10``, ``s1-s2-10``, ``rgb``, ``10m``) or a list / comma list of band names."""
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in BAND_SETS:
            return BAND_SETS[key]
        names = [part.strip() for part in spec.split(",") if part.strip()]
    else:
        names = [str(part).strip() for part in spec]
    out: list[str] = []
    for name in names:
        upper = name.upper()
        if len(upper) == 2 and upper[0] == "B":  # B2 -> B02
            upper = f"B0{upper[1]}"
        if upper not in ALL_BANDS:  # S2 names and VV / VH
            raise EotwinError(f"unknown band '{name}': use band sets {sorted(BAND_SETS)} or names from {', '.join(ALL_BANDS)}")
        if upper in out:
            raise EotwinError(f"band '{name}' is listed twice")
        out.append(upper)
    if not out:
        raise EotwinError("no bands selected")
    return tuple(out)


def check_mode(mode: str) -> Resampling:
    if mode not in ("nearest", "bilinear"):
        raise EotwinError(f"unknown resampling '{mode}': use 'nearest' or 'bilinear'")
    return mode  # type: ignore[return-value]


@lru_cache(maxsize=32)
def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index, upper index and upper weight of 1-D linear interpolation with aligned corners."""
    if size_in == 1:
        zeros = np.zeros(size_out, dtype=np.intp)
        return zeros, zeros, np.zeros(size_out, dtype=np.float64)
    position = np.arange(size_out, dtype=np.float64) * (size_in - 1) / (size_out - 1)
    low = np.minimum(np.floor(position).astype(np.intp), size_in - 2)
    return low, low + 1, position - low


def resample(array: np.ndarray, size: int = PATCH_SIZE, mode: Resampling = "nearest") -> np.ndarray:
    """Upsample a square band to ``size`` x ``size`` float32; a band already that size is only cast."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise EotwinError(f"expected a 2-D band, got shape {array.shape}")
    height, width = array.shape
    if (height, width) == (size, size):
        return array.astype(np.float32, copy=False)
    if check_mode(mode) == "nearest":
        if size % height or size % width:
            # general nearest: source index floor(i * in / out), as torch's 'nearest'
            rows = (np.arange(size) * height) // size
            cols = (np.arange(size) * width) // size
            return array[rows][:, cols].astype(np.float32)
        return np.repeat(np.repeat(array, size // height, axis=0), size // width, axis=1).astype(np.float32)
    # separable gathers and lerps, no BLAS: tiny matrix products stall on a loaded multi-threaded BLAS
    low, high, frac = _bilinear_taps(height, size)
    data = array.astype(np.float64)
    rows = data[low] * (1.0 - frac)[:, None] + data[high] * frac[:, None]
    low, high, frac = _bilinear_taps(width, size)
    return (rows[:, low] * (1.0 - frac) + rows[:, high] * frac).astype(np.float32)


def stack_bands(arrays: Mapping[str, np.ndarray], bands: Sequence[str], size: int = PATCH_SIZE,
                mode: Resampling = "nearest") -> np.ndarray:
    """(C, size, size) float32 stack of ``bands`` in the given order, resampled with ``mode``."""
    missing = [band for band in bands if band not in arrays]
    if missing:
        raise EotwinError(f"patch lacks band(s) {', '.join(missing)} (has {', '.join(sorted(arrays))})")
    stack = np.empty((len(bands), size, size), dtype=np.float32)
    for i, band in enumerate(bands):
        array = np.asarray(arrays[band])
        height, width = array.shape[-2:]
        if mode == "nearest" and array.ndim == 2 and size % height == 0 and size % width == 0:
            # replicate straight into the output (no intermediate arrays): the hot path of training
            stack[i].reshape(height, size // height, width, size // width)[...] = array[:, None, :, None]
        else:
            stack[i] = resample(array, size, mode)
    return stack


def band_stats(bands: Sequence[str], mode: Resampling = "nearest") -> tuple[np.ndarray, np.ndarray]:
    """Published train-split mean and std (S2: DN, S1: dB) for ``bands`` after resampling with ``mode``."""
    mode = check_mode(mode)
    try:
        mean = np.array([_MEAN[mode][band] for band in bands], dtype=np.float32)
        std = np.array([_STD[mode][band] for band in bands], dtype=np.float32)
    except KeyError as exc:
        raise EotwinError(f"no published statistics for band {exc.args[0]}") from None
    return mean, std


def normalise(stack: np.ndarray, bands: Sequence[str], mode: Resampling = "nearest") -> np.ndarray:
    """(x - mean) / std per band, with the statistics that match the resampling ``mode``."""
    stack = np.asarray(stack, dtype=np.float32)
    if stack.shape[-3] != len(bands):
        raise EotwinError(f"stack has {stack.shape[-3]} bands, {len(bands)} band names given")
    mean, std = band_stats(bands, mode)
    return (stack - mean[:, None, None]) / std[:, None, None]
