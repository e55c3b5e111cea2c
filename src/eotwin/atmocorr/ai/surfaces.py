"""Surface library of the AI correction: real all-band surface reflectance from several places on Earth.

A *source* is one family of real surfaces; training and evaluation are split by source, not by patch
(leave-one-source-out, :func:`loso_split`), so a model is always judged on surfaces it never saw.
Every source yields patches of :data:`PATCH` x :data:`PATCH` pixels, 12 bands in L2A order
(B01-B09, B8A, B11, B12, no B10) as float32 reflectance in [0, 1], deterministically (no randomness):

=========  =========================================================================================
``ben``    the BigEarthNet v2 patches (:func:`eotwin.atmocorr.ai.synth.ben_surfaces`): Austria, June,
           sen2cor L2A. Training uses the ``train`` + ``validation`` splits, evaluation ``test``
``majortom`` Major-TOM Core L2A, two grid cells: equatorial Africa (T33NZA, July 2022, baseline 04.00:
           BOA = (DN - 1000) / 10000) and South-East Asia in the dry season (T48QUE, February 2020,
           reprocessed N9999 without offset: its darkest DN are 2-200, impossible with an offset);
           20 m and 60 m bands upsampled bilinearly to 10 m; 8 x 8 patches per cell. T33NZA is haze and
           cloud throughout (its cloud mask is empty): :func:`hazy` rejects every one of its patches,
           so only T48QUE's 64 patches remain
``enmap``  two EnMAP L2A patches of HySpecNet-11k (224 bands, int16 x 10000, 30 m; both water):
           convolved with the Sentinel-2 spectral responses the 6S table uses (:func:`enmap_to_s2`)
``sahara`` a whole Sahara tile at L2A (T29RKH, 2020-02-19, baseline 02.14, DN / 10000), decimated to
           100 m (200 m and 600 m bands upsampled bilinearly); patches with any SCL cloud, cirrus,
           shadow, snow, defect or no-data pixel are left out
``water``  Hydro L2A water patches (256 px at 10 m, four 120 px patches each): the open-water ones
           whose offset the fixture README settles (patch_0, patch_100, patch_1000 with the -1000
           offset, patch_10 without); the cloud patches (patch_1, patch_100000) and the sea ice of
           ambiguous offset (patch_10000) are left out
``prosail`` physically generated canopies (PyPI ``prosail``: PROSPECT-5 leaves in 4SAIL canopies over its
           dry/wet soil mixture of drawn brightness and moisture), :data:`PROSAIL_PATCHES` patches, each
           with its own drawn leaves, soil and sun/view geometry, at LAI 0-6, convolved like EnMAP and
           placed with the spatial structure of a real patch: the NDVI of a Major-TOM T48QUE patch
           stretched to a vegetation fraction, LAI = 6 x fraction^1.5, spectra interpolated in LAI
=========  =========================================================================================

Small negative reflectances of dark water (L2A noise, EnMAP's over-corrected NIR) are clipped to 0:
a surface below zero cannot be simulated. Reading files happens in the ``_read_*`` functions only;
:func:`enmap_to_s2`, :func:`tile`, :func:`lai_map`, :func:`canopy_patch` and :func:`loso_split` are pure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import L2A_BANDS
from eotwin.sentinel2.radiometry import dn_to_boa

PATCH = 120
SOURCES: tuple[str, ...] = ("ben", "majortom", "enmap", "sahara", "water", "prosail")
DEFAULT_FIXTURES = Path(__file__).resolve().parents[5] / "shared" / "fixtures"
ENMAP_CENTRES_PATH = Path(__file__).resolve().parent.parent / "data" / "enmap_band_centres.json"
MAJORTOM_DIR = "s2img/rico-hdl/Major-TOM-Core/S2L2A"
ENMAP_DIR = "s2img/rico-hdl/HySpecNet-11k"
SAHARA_DIR = "ac/l2a_desert_T29RKH_20200219_riotilerpds"
WATER_DIR = "ac/l2a_hydro_water"
# Hydro patches used and their BOA_ADD_OFFSET in DN (fixture README: B01 minimum ~1000+ means an offset)
WATER_PATCHES: dict[str, int] = {"patch_0": -1000, "patch_10": 0, "patch_100": -1000, "patch_1000": -1000}
# SCL classes that are no surface: 0 no data, 1 defective, 3 cloud shadow, 8/9 cloud, 10 cirrus, 11 snow
SCL_REJECT = (0, 1, 3, 8, 9, 10, 11)
ENMAP_NODATA = -32768
HAZE_B09_B8A = 1.3
PROSAIL_PATCHES = 16
PROSAIL_LAI = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.5, 6.0)
# drawn per patch, uniform: the ranges of common PROSAIL look-up tables for crops and forests
PROSAIL_RANGES: dict[str, tuple[float, float]] = {
    "n": (1.2, 2.2), "cab": (10.0, 70.0), "car": (4.0, 15.0), "cbrown": (0.0, 0.6), "cw": (0.004, 0.03),
    "cm": (0.003, 0.012), "lidfa": (35.0, 70.0), "rsoil": (0.3, 1.8), "psoil": (0.0, 1.0),
    "tts": (20.0, 60.0), "tto": (0.0, 10.0), "psi": (0.0, 180.0),
}


# ----------------------------------------------------------------------------- pure cores
def tile(image: np.ndarray, size: int = PATCH) -> list[np.ndarray]:
    """Non-overlapping ``size`` x ``size`` patches of a (bands, h, w) image, row by row (the remainder
    at the bottom and right is dropped; an image smaller than ``size`` gives none)."""
    _, h, w = image.shape
    return [np.ascontiguousarray(image[:, r : r + size, c : c + size])
            for r in range(0, h - size + 1, size) for c in range(0, w - size + 1, size)]


def centre_crop(image: np.ndarray, size: int = PATCH) -> np.ndarray:
    """The central ``size`` x ``size`` window of a (bands, h, w) image."""
    _, h, w = image.shape
    if min(h, w) < size:
        raise EotwinError(f"image of {h} x {w} px is smaller than a {size} px patch")
    r, c = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[:, r : r + size, c : c + size])


@lru_cache(maxsize=8)
def s2_weights(centres: tuple[float, ...], sensor: str = "S2A") -> np.ndarray:
    """(12, n) weights giving each L2A band from a spectrum sampled at ``centres`` (micrometres, increasing).

    The spectrum between samples is linear (constant beyond the first and last); each band is its
    spectral response (the Py6S table the 6S LUT uses, :func:`eotwin.atmocorr.srf.spectral_response`)
    averaged over that spectrum. Rows sum to 1, so a flat spectrum gives the same flat value.
    """
    from eotwin.atmocorr.srf import spectral_response

    x = np.asarray(centres, dtype=np.float64)
    if x.ndim != 1 or x.size < 2 or np.any(np.diff(x) <= 0):
        raise EotwinError("spectral sample wavelengths must be strictly increasing")
    out = np.zeros((len(L2A_BANDS), x.size))
    eye = np.eye(x.size)
    for i, band in enumerate(L2A_BANDS):
        wl, resp = spectral_response(sensor, band)
        # hat-function basis of linear interpolation, evaluated on the response's 2.5 nm grid
        basis = np.stack([np.interp(wl, x, eye[k]) for k in range(x.size)])
        out[i] = basis @ resp / resp.sum()
    return out


def enmap_to_s2(cube: np.ndarray, centres: np.ndarray, valid: np.ndarray, sensor: str = "S2A") -> np.ndarray:
    """(12, h, w) Sentinel-2 band reflectance from a hyperspectral cube (n, h, w) in reflectance.

    ``valid`` (n,) marks the bands to use (no no-data, no water-vapour absorption); those must have
    increasing ``centres``. A flat spectrum gives the same value in every band; a linear one the value
    at each band's response-weighted centre wavelength.
    """
    cube = np.asarray(cube, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool)
    if cube.shape[0] != valid.size or valid.size != np.asarray(centres).size:
        raise EotwinError(f"cube of {cube.shape[0]} bands, {np.asarray(centres).size} centres, {valid.size} flags")
    weights = s2_weights(tuple(float(c) for c in np.asarray(centres)[valid]), sensor).astype(np.float32)
    used = cube[valid]
    n, h, w = used.shape
    return (weights @ used.reshape(n, -1)).reshape(len(L2A_BANDS), h, w)


def enmap_band_selection(centres: np.ndarray, vnir_bands: int, usable: np.ndarray) -> np.ndarray:
    """Bands to convolve: the VNIR detector up to its last band, then the SWIR detector beyond it (the
    two overlap near 0.9-1.0 um), among the ``usable`` ones (no no-data in the patch)."""
    centres = np.asarray(centres)
    keep = np.zeros(centres.size, bool)
    keep[:vnir_bands] = True
    keep[vnir_bands:] = centres[vnir_bands:] > centres[vnir_bands - 1]
    return keep & np.asarray(usable, bool)


def lai_map(patch: np.ndarray) -> np.ndarray:
    """(h, w) leaf area index 0-6 following a real (12, h, w) patch's NDVI: its 5th-95th percentile range
    stretched to a vegetation fraction f, LAI = 6 f^1.5 (dense canopies are rarer than bare or sparse)."""
    red, nir = patch[L2A_BANDS.index("B04")], patch[L2A_BANDS.index("B08")]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-4)
    lo, hi = np.percentile(ndvi, [5, 95])
    frac = np.clip((ndvi - lo) / max(hi - lo, 1e-3), 0.0, 1.0)
    return (PROSAIL_LAI[-1] * frac**1.5).astype(np.float32)


def canopy_patch(spectra: np.ndarray, lai: np.ndarray) -> np.ndarray:
    """(12, h, w) surface: per pixel the band spectra (len(PROSAIL_LAI), 12) interpolated linearly in LAI."""
    nodes = np.asarray(PROSAIL_LAI)
    idx = np.clip(np.searchsorted(nodes, lai, side="right") - 1, 0, nodes.size - 2)
    w = ((lai - nodes[idx]) / (nodes[idx + 1] - nodes[idx])).astype(np.float32)
    out = spectra[idx] * (1 - w)[..., None] + spectra[idx + 1] * w[..., None]
    return np.ascontiguousarray(np.moveaxis(out, -1, 0), dtype=np.float32)


def hazy(patch: np.ndarray, limit: float = HAZE_B09_B8A) -> bool:
    """Whether a (12, h, w) L2A patch is cloud or haze that sen2cor left in: its median B09 (945 nm)
    exceeds B8A (865 nm) by more than ``limit`` times, which no land or water surface does (T33NZA
    of Major-TOM: B09 0.62 over B8A 0.29 everywhere, though its cloud mask is empty)."""
    b09, b8a = L2A_BANDS.index("B09"), L2A_BANDS.index("B8A")
    return float(np.median(patch[b09])) > limit * max(float(np.median(patch[b8a])), 1e-3)


def loso_split(sources: Sequence[str], held_out: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training sources, evaluation sources) of one leave-one-source-out fold: ``held_out`` is evaluated,
    every other source trains; none is in both."""
    sources = tuple(dict.fromkeys(sources))
    unknown = [s for s in (*sources, held_out) if s not in SOURCES]
    if unknown:
        raise EotwinError(f"unknown surface source {unknown[0]!r}: expected one of {', '.join(SOURCES)}")
    if held_out not in sources:
        raise EotwinError(f"held-out source {held_out!r} is not among {', '.join(sources)}")
    train = tuple(s for s in sources if s != held_out)
    if not train:
        raise EotwinError("leave-one-source-out needs at least two sources")
    return train, (held_out,)


def parse_sources(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"ben,majortom"`` (or a sequence) to a checked tuple of source names, in the given order."""
    names = [s.strip().lower() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not names:
        raise EotwinError(f"no surface source given: expected some of {', '.join(SOURCES)}")
    for name in names:
        if name not in SOURCES:
            raise EotwinError(f"unknown surface source {name!r}: expected some of {', '.join(SOURCES)}")
    return tuple(dict.fromkeys(names))


# ----------------------------------------------------------------------------- I/O edge
def fixtures_root(root: str | Path | None = None) -> Path:
    """The shared fixtures folder (default: ``shared/fixtures`` beside the repository)."""
    path = Path(root) if root is not None else DEFAULT_FIXTURES
    if not path.is_dir():
        raise EotwinError(f"surface fixtures not found at {path} (the shared fixtures folder)")
    return path


def _read_band(path: Path) -> np.ndarray:
    from eotwin.io.raster import open_raster

    with open_raster(path, require_crs=False) as ds:
        return ds.read(1)


def _upsample(band: np.ndarray, size: int) -> np.ndarray:
    from eotwin.ben.bands import resample

    return resample(band.astype(np.float32), size, "bilinear")


def read_majortom_cell(cell: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """One Major-TOM L2A cell: surface reflectance (12, H, W) float32 on the 10 m grid, and its cloud mask."""
    raw = {b: _read_band(cell / f"{b}.tif") for b in L2A_BANDS}
    size = raw["B02"].shape[0]
    baseline = cell.name.split("_")[3]  # N0400, N9999, ...
    darkest = min(int(a.min()) for a in raw.values())
    # baseline 04.00+ adds 1000 DN, but a reprocessed N9999 product may not: its values decide
    offset = -1000 if baseline >= "N0400" and darkest >= 1000 else 0
    cloud = _read_band(cell / "cloud_mask.tif") if (cell / "cloud_mask.tif").is_file() else None
    image = np.stack([_upsample(raw[b], size) for b in L2A_BANDS])
    return np.clip(dn_to_boa(image, offset, nodata=False), 0.0, 1.0), cloud


def _read_majortom(root: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    cells = sorted(p for p in (root / MAJORTOM_DIR).glob("*/*/*") if p.is_dir())
    if not cells:
        raise EotwinError(f"no Major-TOM cell under {root / MAJORTOM_DIR}")
    for cell in cells:
        image, cloud = read_majortom_cell(cell)
        clear = tile((cloud == 0)[None]) if cloud is not None else None
        for k, patch in enumerate(tile(image)):
            if (clear is None or clear[k].all()) and not hazy(patch):
                out[f"{cell.name.split('_')[5]}_{k:02d}"] = patch
    return out


def _read_enmap(root: Path) -> dict[str, np.ndarray]:
    from eotwin.io.raster import open_raster

    meta = json.loads(ENMAP_CENTRES_PATH.read_text())
    centres = np.asarray(meta["centres"], dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    files = sorted((root / ENMAP_DIR).glob("*/*SPECTRAL_IMAGE.TIF"))
    if not files:
        raise EotwinError(f"no EnMAP SPECTRAL_IMAGE under {root / ENMAP_DIR}")
    for path in files:
        with open_raster(path, require_crs=False) as ds:
            cube = ds.read()
        if cube.shape[0] != centres.size:
            raise EotwinError(f"{path.name}: {cube.shape[0]} bands, expected {centres.size} (EnMAP L2A)")
        nodata = cube == ENMAP_NODATA
        mask_path = Path(str(path).replace("SPECTRAL_IMAGE", "QL_PIXELMASK"))
        if mask_path.is_file():
            with open_raster(mask_path, require_crs=False) as ds:
                nodata |= ds.read() != 0
        usable = ~nodata.all(axis=(1, 2))  # water-vapour absorption bands are no-data throughout
        keep = enmap_band_selection(centres, int(meta["vnir_bands"]), usable)
        refl = dn_to_boa(cube, 0, nodata=False)  # HySpecNet-11k: reflectance x 10000, no offset
        # a pixel's defective samples in a kept band: linear between its neighbouring good samples
        for r, c in zip(*np.nonzero((nodata & keep[:, None, None]).any(axis=0)), strict=True):
            good = keep & ~nodata[:, r, c]
            bad = keep & nodata[:, r, c]
            refl[bad, r, c] = np.interp(centres[bad], centres[good], refl[good, r, c])
        s2 = np.clip(enmap_to_s2(refl, centres, keep), 0.0, 1.0)
        name = path.name.split("-")[-2]  # ..._Y01460273_X03110438
        out[name] = centre_crop(s2)
    return out


def _read_sahara(root: Path) -> dict[str, np.ndarray]:
    folder = root / SAHARA_DIR
    raw = {b: _read_band(folder / f"{b}.tif") for b in L2A_BANDS}
    size = raw["B02"].shape[0]
    dn = np.stack([_upsample(raw[b], size) for b in L2A_BANDS])
    image = dn_to_boa(dn, 0, nodata=False)  # baseline 02.14: no offset; DN 0 handled below
    scl = _read_band(folder / "SCL.tif")
    scl = np.repeat(np.repeat(scl, size // scl.shape[0], axis=0), size // scl.shape[1], axis=1)
    bad = np.isin(scl, SCL_REJECT) | np.any(dn == 0, axis=0)  # DN 0 is no data
    out: dict[str, np.ndarray] = {}
    for k, (patch, reject) in enumerate(zip(tile(np.clip(image, 0, 1).astype(np.float32)), tile(bad[None]), strict=True)):
        if not reject.any():
            out[f"T29RKH_{k:03d}"] = patch
    return out


def _read_water(root: Path) -> dict[str, np.ndarray]:
    from eotwin.io.raster import open_raster

    out: dict[str, np.ndarray] = {}
    for name, offset in WATER_PATCHES.items():
        with open_raster(root / WATER_DIR / f"{name}.tif", require_crs=False) as ds:
            image = ds.read().astype(np.float32)
        if image.shape[0] != len(L2A_BANDS):
            raise EotwinError(f"{name}: {image.shape[0]} bands, expected {len(L2A_BANDS)}")
        image = np.clip(dn_to_boa(image, offset, nodata=False), 0.0, 1.0)
        for k, patch in enumerate(tile(image)):
            out[f"{name}_{k}"] = patch
    return out


def prosail_spectra(rng: np.random.Generator) -> np.ndarray:
    """(len(PROSAIL_LAI), 12) band reflectances of one drawn leaf, soil and geometry at each LAI node."""
    import prosail

    p = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in PROSAIL_RANGES.items()}
    wavelengths = tuple(np.round(np.arange(400, 2501) / 1000.0, 4))  # prosail's 1 nm grid, micrometres
    weights = s2_weights(wavelengths)
    out = []
    for lai in PROSAIL_LAI:
        rho = prosail.run_prosail(p["n"], p["cab"], p["car"], p["cbrown"], p["cw"], p["cm"], lai, p["lidfa"],
                                  0.05, p["tts"], p["tto"], p["psi"], typelidf=2, rsoil=p["rsoil"],
                                  psoil=p["psoil"], factor="SDR")
        out.append(weights @ np.asarray(rho, dtype=np.float64))
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def _make_prosail(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    structure = list(_read_majortom(root).values())
    if not structure:
        raise EotwinError("PROSAIL patches need Major-TOM patches for their spatial structure")
    out: dict[str, np.ndarray] = {}
    for k in range(PROSAIL_PATCHES):
        spectra = prosail_spectra(np.random.default_rng([seed, k]))
        lai = lai_map(structure[(k * len(structure)) // PROSAIL_PATCHES])
        out[f"prosail_{k:02d}"] = canopy_patch(spectra, lai)
    return out


def load_source(name: str, *, split: str = "train", root: str | Path | None = None,
                ben_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Patches (12, PATCH, PATCH) float32 of one source by patch id. ``split`` only matters for ``ben``
    (``train``: train + validation patches; ``test``: test patches); the other sources are used whole,
    on one side of a leave-one-source-out split."""
    from eotwin.atmocorr.ai import synth

    name = parse_sources(name)[0]
    if split not in ("train", "test"):
        raise EotwinError(f"split must be train or test, got {split!r}")
    if name == "ben":
        return synth.ben_surfaces(ben_dir, synth.TRAIN_SPLITS if split == "train" else synth.TEST_SPLITS)
    readers = {"majortom": _read_majortom, "enmap": _read_enmap, "sahara": _read_sahara, "water": _read_water,
               "prosail": _make_prosail}
    patches = readers[name](fixtures_root(root))
    if not patches:
        raise EotwinError(f"surface source {name!r} gave no usable patch")
    return patches


def load_sources(names: Sequence[str] | str, *, split: str = "train", root: str | Path | None = None,
                 ben_dir: str | Path | None = None) -> dict[str, list[np.ndarray]]:
    """Patches of several sources, source by source (in the given order)."""
    return {n: list(load_source(n, split=split, root=root, ben_dir=ben_dir).values()) for n in parse_sources(names)}
