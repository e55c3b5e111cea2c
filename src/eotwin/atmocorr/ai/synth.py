"""Training and test data for the AI correction: real surfaces pushed through the 6S table.

Surfaces (the truth the model must recover):

- the real BigEarthNet v2 patches (Sentinel-2 L2A made by sen2cor, 12 bands, 120 x 120 px at 10 m;
  20 m and 60 m bands upsampled bilinearly): BOA = DN / 10000 (2017 products, no offset). The
  official splits decide the use: ``train`` + ``validation`` patches train, ``test`` patches are
  only ever used for evaluation;
- 6S's four built-in spectra (green vegetation, clear water, lake water, sand), band-averaged with
  each band's spectral response by 6S itself (:func:`make_builtin_spectra`, stored in
  ``data/sixs_spectra.json``) and painted into the patches as smooth blobs (brightness x 0.6-1.4)
  so water, bare sand and very bright targets appear that the Austrian June patches lack;
- any other source of :mod:`eotwin.atmocorr.ai.surfaces` (Major-TOM, EnMAP, Sahara, water, PROSAIL),
  chosen with ``eotwin atmocorr train --sources``; :func:`mosaic` then draws each tile's source with
  equal odds.

Atmospheres and geometries, drawn independently for every scene (:data:`SAMPLING`):

==============  =========================================================================
AOT at 550 nm   scene mean log-uniform in [0.02, 0.6]; per pixel ``mean * exp(s * g)``, ``g``
                a unit Gaussian random field smoothed over 60-300 px, ``s`` uniform in [0, 0.3],
                clipped to the table's [0, 0.8]
water vapour    uniform in [0.3, 4.5] g/cm2 (scene-wide)
ozone           uniform in [0.26, 0.44] cm-atm (scene-wide)
aerosol model   continental (70 %) or maritime (30 %)
sun zenith      uniform in [15, 70] degrees
view zenith     uniform in [0, 11.5] degrees (Sentinel-2's swath)
rel. azimuth    uniform in [0, 180] degrees
spacecraft      S2A, S2B or S2C with equal odds
==============  =========================================================================

TOA = 6S Lambertian forward model with the table's terms for that atmosphere per pixel, then
sensor noise: Gaussian with standard deviation ``0.0003 + 0.002 x TOA`` (signal-to-noise ratios of
100-300 at typical land reflectances, near the MSI specification) and rounding to L1C digital
numbers (1e-4). The table is linear in AOT between its nodes (its transmittances log-linear), so the
terms are computed at the AOT nodes for the scene's gas and geometry and interpolated per pixel: exactly what
:meth:`~eotwin.atmocorr.lut.SixSLut.terms_for` gives pixel by pixel, many times faster.

Everything here is pure numpy except :func:`ben_surfaces` (reads the LMDB) and
:func:`make_builtin_spectra` (runs 6S).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eotwin.atmocorr.lut import AtmosphereTerms, SixSLut
from eotwin.atmocorr.physics import Geometry, forward_gain, invert_gain, relative_azimuth
from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import L2A_BANDS

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SPECTRA_PATH = DATA_DIR / "sixs_spectra.json"
DEFAULT_BEN_DIR = Path(__file__).resolve().parents[4] / ".eotwin-data" / "BENv2"
TRAIN_SPLITS = ("train", "validation")
TEST_SPLITS = ("test",)
BUILTIN_SPECTRA = ("GreenVegetation", "ClearWater", "LakeWater", "Sand")

SAMPLING: dict[str, object] = {
    "aot_mean_loguniform": (0.02, 0.6),
    "aot_field_log_std": (0.0, 0.3),
    # correlation length of the AOT field: 0.6-3 km at 10 m (aerosol varies over kilometres, not pixels)
    "aot_field_scale_px": (60.0, 300.0),
    "aot_clip": (0.0, 0.8),
    "wv": (0.3, 4.5),
    "o3": (0.26, 0.44),
    "aerosol": {"continental": 0.7, "maritime": 0.3},
    "sza": (15.0, 70.0),
    "vza": (0.0, 11.5),
    "raa": (0.0, 180.0),
    "sensors": ("S2A", "S2B", "S2C"),
    "noise": {"absolute": 0.0003, "relative": 0.002, "quantisation": 1e-4},
    "spectra_blobs": {"probability": 0.6, "max_blobs": 3, "brightness": (0.6, 1.4)},
    # training only: the whole surface x U(0.75, 1.25), each band x (1 + 0.04 N(0, 1)), so the context
    # branch cannot tie the atmosphere to the few training surfaces' exact brightness and colour; and
    # per patch a spectral tilt: the visible bands (B01-B04, half of it on B05) and the SWIR bands
    # (B11, B12) each x exp(U(-0.2, 0.2)), the NIR plateau x exp(U(-0.1, 0.1)). The 12 training patches
    # (one tile, one date) hold red/SWIR ratios of dense vegetation of 0.34-0.40 only, where vegetation
    # spans about 0.25-0.55 (Kaufman's DDV assumes 0.5; the held-out patches have 0.29-0.33): without the
    # tilt the network learned the training ratios and underestimated the AOT elsewhere
    "surface_jitter": {"scale": (0.75, 1.25), "band_std": 0.04, "tilt": {"visible": 0.2, "nir": 0.1, "swir": 0.2}},
}


@dataclass(frozen=True)
class Atmosphere:
    """One scene's atmosphere and geometry (the AOT is the scene mean; the field varies around it)."""

    sensor: str
    aerosol: str
    aot: float
    wv: float
    o3: float
    sza: float
    vza: float
    raa: float
    aot_log_std: float = 0.0
    aot_scale_px: float = 30.0

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @property
    def geometry(self) -> Geometry:
        """The scene's sun/view geometry as the 6S table takes it."""
        return Geometry(self.sza, self.vza, self.raa)


@dataclass
class SceneBatch:
    """Simulated scenes: network inputs and the truth (all float32, bands first per scene)."""

    toa: np.ndarray  # (n, 12, h, w) TOA reflectance of L2A_BANDS, noisy, quantised
    angles: np.ndarray  # (n, 3, h, w) sun zenith, view zenith, relative azimuth in degrees
    boa: np.ndarray  # (n, 12, h, w) true surface reflectance
    aot: np.ndarray  # (n, 1, h, w) true AOT at 550 nm
    atmospheres: list[Atmosphere]  # (the per-pixel 6S terms are not kept: training and its statistics never read
    # them, and three more float arrays per scene were a third of a simulating worker's memory)


# ----------------------------------------------------------------------------- surfaces
def ben_surfaces(path: str | Path | None = None, splits: Sequence[str] = TRAIN_SPLITS) -> dict[str, np.ndarray]:
    """Surface reflectance (12, 120, 120) float32 of the BigEarthNet patches in ``splits``, by patch id."""
    from eotwin.ben.bands import resample
    from eotwin.ben.sources import open_source
    from eotwin.sentinel2.radiometry import dn_to_boa

    path = Path(path) if path is not None else DEFAULT_BEN_DIR
    if not path.exists():
        raise EotwinError(f"BigEarthNet data not found at {path} (run `make setup`)")
    out: dict[str, np.ndarray] = {}
    with open_source(path) as source:
        for split in splits:
            for pid in source.patch_ids(split=split):
                arrays = source.read(pid, L2A_BANDS)
                dn = np.stack([resample(arrays[b], 120, "bilinear") for b in L2A_BANDS])
                out[pid] = dn_to_boa(dn, 0, nodata=False)  # BigEarthNet v2: 2017 products, no offset
    if not out:
        raise EotwinError(f"no BigEarthNet patch in split(s) {', '.join(splits)} under {path}")
    return out


def make_builtin_spectra(path: Path = SPECTRA_PATH, sensor: str = "S2A") -> dict[str, list[float]]:
    """Band-averaged reflectance of 6S's built-in spectra for the 12 L2A bands, computed by 6S itself.

    For each band 6S is run aerosol-free over a black surface (path reflectance) and over each
    spectrum; the surface reflectance is the Lambertian inversion of the apparent reflectance,
    which keeps 6S's 7 printed decimals (its ``pixel_reflectance`` has only 3).
    """
    from Py6S import AeroProfile, GroundReflectance, SixS, Wavelength

    from eotwin.atmocorr.sixs import sixs_executable
    from eotwin.atmocorr.srf import py6s_wavelength
    from eotwin.io.files import write_json_atomic

    def run(band: str, ground: object) -> object:
        s = SixS(sixs_executable())
        s.aero_profile = AeroProfile.PredefinedType(AeroProfile.NoAerosols)
        s.wavelength = Wavelength(py6s_wavelength(sensor, band))
        s.ground_reflectance = GroundReflectance.HomogeneousLambertian(ground)
        s.run()
        return s.outputs

    result: dict[str, list[float]] = {name: [] for name in BUILTIN_SPECTRA}
    for band in L2A_BANDS:
        black = run(band, 0.0)
        path_refl = float(black.apparent_reflectance)
        for name in BUILTIN_SPECTRA:
            o = run(band, getattr(GroundReflectance, name))
            gain = o.transmittance_global_gas.total * o.transmittance_total_scattering.total
            rho = invert_gain(float(o.apparent_reflectance), path_refl, gain, o.spherical_albedo.total)
            result[name].append(round(float(rho), 6))
    write_json_atomic(path, {"sensor": sensor, "bands": list(L2A_BANDS), "spectra": result})
    return result


def builtin_spectra(path: Path = SPECTRA_PATH) -> np.ndarray:
    """(4, 12) band reflectances of 6S's built-in spectra (see :func:`make_builtin_spectra`)."""
    if not path.is_file():
        raise EotwinError(f"{path} is missing: regenerate it with eotwin.atmocorr.ai.synth.make_builtin_spectra()")
    data = json.loads(path.read_text())
    return np.array([data["spectra"][n] for n in BUILTIN_SPECTRA], dtype=np.float32)


# ----------------------------------------------------------------------------- random fields
def smooth_field(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """A unit-variance Gaussian random field with correlation length ``scale`` pixels (FFT filter)."""
    h, w = shape
    noise = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    kernel = np.exp(-2.0 * (math.pi * scale) ** 2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(h, w))
    # expected standard deviation of filtered white noise (a sample's own std blows up small, smooth fields)
    full = np.exp(-2.0 * (math.pi * scale) ** 2 * (np.fft.fftfreq(w)[None, :] ** 2 + fy**2))
    return (field / np.sqrt(np.mean(full**2))).astype(np.float32)


def paint_spectra(surface: np.ndarray, spectra: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blend up to three smooth blobs of built-in spectra into a (12, h, w) surface."""
    cfg = SAMPLING["spectra_blobs"]
    out = surface.copy()
    if rng.random() > cfg["probability"]:  # type: ignore[index]
        return out
    h, w = surface.shape[1:]
    for _ in range(int(rng.integers(1, cfg["max_blobs"] + 1))):  # type: ignore[index,operator]
        field = smooth_field((h, w), float(rng.uniform(8, 25)), rng)
        level = float(rng.uniform(0.5, 1.5))
        alpha = np.clip((field - level) * 4.0, 0.0, 1.0)[None]  # soft-edged blob
        spectrum = spectra[int(rng.integers(len(spectra)))] * float(rng.uniform(*cfg["brightness"]))  # type: ignore[index]
        out = out * (1 - alpha) + spectrum[:, None, None] * alpha
    return out.astype(np.float32)


def augment(surface: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """Random crop, flip and quarter turn of a (bands, h, w) surface."""
    h, w = surface.shape[1:]
    if crop > min(h, w):
        raise EotwinError(f"crop {crop} is larger than the surface ({h} x {w})")
    r, c = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    out = surface[:, r : r + crop, c : c + crop]
    if rng.random() < 0.5:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(out, int(rng.integers(4)), axes=(1, 2)))


# band groups of the spectral tilt (L2A order B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12)
_TILT_GROUPS = {"visible": (0, 1, 2, 3), "nir": (5, 6, 7, 8, 9), "swir": (10, 11)}
_RED_EDGE = 4


def spectral_tilt(surface: np.ndarray, rng: np.random.Generator, half_ranges: dict[str, float]) -> np.ndarray:
    """The surface with its visible, NIR and SWIR bands each scaled by exp(U(-h, h)) (B05 by the square
    root of the visible factor): other vegetation colours than the training patches' own."""
    factor = np.ones(surface.shape[0], np.float32)
    for group, bands in _TILT_GROUPS.items():
        h = float(half_ranges.get(group, 0.0))
        factor[list(bands)] = np.exp(rng.uniform(-h, h)) if h else 1.0
    factor[_RED_EDGE] = np.sqrt(factor[_TILT_GROUPS["visible"][0]])
    return surface * factor[:, None, None]


def mosaic(surfaces: Sequence[np.ndarray] | Mapping[str, Sequence[np.ndarray]], rng: np.random.Generator,
           layout: tuple[int, int], tilt: dict[str, float] | None = None) -> np.ndarray:
    """Surfaces in random order, flips and turns (and each its own :func:`spectral_tilt` when ``tilt``
    is given), tiled into one (12, rows*120, cols*120) scene.

    ``surfaces`` by source (:mod:`eotwin.atmocorr.ai.surfaces`): each tile from a source drawn with equal
    odds, then one of its patches, so a source of two patches weighs as much as one of a hundred.
    """
    rows, cols = layout
    if isinstance(surfaces, Mapping):
        groups = [g for g in surfaces.values() if len(g)]
        if not groups:
            raise EotwinError("no surface patch to build scenes from")
        picks = [groups[int(rng.integers(len(groups)))] for _ in range(rows * cols)]
        chosen = [g[int(rng.integers(len(g)))] for g in picks]
    else:
        order = rng.permutation(len(surfaces))
        chosen = [surfaces[order[i % len(surfaces)]] for i in range(rows * cols)]
    size = chosen[0].shape[1]
    tiles = [augment(surface, size, rng) for surface in chosen]
    if tilt:
        tiles = [spectral_tilt(t, rng, tilt) for t in tiles]
    return np.concatenate([np.concatenate(tiles[r * cols : (r + 1) * cols], axis=2) for r in range(rows)], axis=1)


# ----------------------------------------------------------------------------- atmospheres
def sample_atmosphere(rng: np.random.Generator, lut: SixSLut | None = None) -> Atmosphere:
    """One atmosphere and geometry drawn from :data:`SAMPLING` (kept inside the table's axes)."""
    s = SAMPLING
    lo, hi = s["aot_mean_loguniform"]  # type: ignore[misc]
    names = list(s["aerosol"])  # type: ignore[arg-type]
    probs = np.array([s["aerosol"][n] for n in names])  # type: ignore[index]
    aerosol = names[int(rng.choice(len(names), p=probs / probs.sum()))]
    atm = Atmosphere(
        sensor=str(rng.choice(s["sensors"])),  # type: ignore[arg-type]
        aerosol=aerosol,
        aot=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
        wv=float(rng.uniform(*s["wv"])),  # type: ignore[misc]
        o3=float(rng.uniform(*s["o3"])),  # type: ignore[misc]
        sza=float(rng.uniform(*s["sza"])),  # type: ignore[misc]
        vza=float(rng.uniform(*s["vza"])),  # type: ignore[misc]
        raa=float(rng.uniform(*s["raa"])),  # type: ignore[misc]
        aot_log_std=float(rng.uniform(*s["aot_field_log_std"])),  # type: ignore[misc]
        aot_scale_px=float(rng.uniform(*s["aot_field_scale_px"])),  # type: ignore[misc]
    )
    if lut is not None:
        atm = clamp_to_lut(atm, lut)
    return atm


def clamp_to_lut(atm: Atmosphere, lut: SixSLut) -> Atmosphere:
    """The same atmosphere with every value inside the table's axes (a small development table is narrow)."""
    vals = atm.as_dict()
    for key in ("aot", "wv", "o3", "sza", "vza", "raa"):
        nodes = lut.axes[key]
        margin = 1e-6 * (nodes[-1] - nodes[0])
        vals[key] = float(np.clip(vals[key], nodes[0] + margin, nodes[-1] - margin))
    am = 1 / math.cos(math.radians(vals["sza"])) + 1 / math.cos(math.radians(vals["vza"]))
    if am > lut.axes["am"][-1]:  # the gas table's air mass bounds the sun zenith
        vals["sza"] = math.degrees(
            math.acos(1.0 / (lut.axes["am"][-1] - 1 / math.cos(math.radians(vals["vza"])) - 1e-6))
        )
    if atm.aerosol not in lut.aerosols:
        vals["aerosol"] = lut.aerosols[0]
    if atm.sensor not in lut.sensors:
        vals["sensor"] = lut.sensors[0]
    return Atmosphere(**vals)


def aot_field(atm: Atmosphere, shape: tuple[int, int], rng: np.random.Generator, lut: SixSLut) -> np.ndarray:
    """Per-pixel AOT: the scene mean times a smooth log-normal field, inside the table."""
    field = atm.aot * np.exp(atm.aot_log_std * smooth_field(shape, atm.aot_scale_px, rng))
    lo, hi = SAMPLING["aot_clip"]  # type: ignore[misc]
    nodes = lut.axes["aot"]
    return np.clip(field, max(lo, nodes[0]), min(hi, nodes[-1])).astype(np.float32)


def node_terms(atms: Sequence[Atmosphere], lut: SixSLut) -> list[AtmosphereTerms]:
    """The table's terms at its AOT nodes for each atmosphere (one lookup per sensor and aerosol model)."""
    nodes = lut.axes["aot"]
    out: list[AtmosphereTerms | None] = [None] * len(atms)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, a in enumerate(atms):
        groups.setdefault((a.sensor, a.aerosol), []).append(i)
    for (sensor, aerosol), idx in groups.items():
        col = lambda key: np.array([getattr(atms[i], key) for i in idx])[:, None]  # noqa: B023,E731
        t = lut.terms_for(sensor, L2A_BANDS, aerosol, nodes[None, :], col("sza"), col("vza"), col("raa"),
                          col("wv"), col("o3"))
        for k, i in enumerate(idx):
            out[i] = AtmosphereTerms(t.bands, *(getattr(t, f)[:, k] for f in ("path", "tg", "t_down", "t_up", "s_alb")))
    return out  # type: ignore[return-value]


def terms_per_pixel(
    atm: Atmosphere, aot: np.ndarray, lut: SixSLut, nodes_terms: AtmosphereTerms | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(path, gain = tg t_down t_up, spherical albedo), each (12, h, w), for a per-pixel AOT map.

    The table is piecewise linear in AOT (path, spherical albedo) or in log(AOT-term) (the
    transmittances, see :mod:`eotwin.atmocorr.lut`), so the terms at its AOT nodes, interpolated per
    pixel by the same rule, equal a per-pixel lookup exactly.
    """
    nodes = lut.axes["aot"]
    t = nodes_terms if nodes_terms is not None else node_terms([atm], lut)[0]
    idx = np.clip(np.searchsorted(nodes, aot, side="right") - 1, 0, nodes.size - 2)
    w = ((aot - nodes[idx]) / (nodes[idx + 1] - nodes[idx])).astype(np.float32)

    def lerp(values: np.ndarray) -> np.ndarray:
        values = values.astype(np.float32)
        return values[:, idx] * (1 - w) + values[:, idx + 1] * w

    log_t = np.log(t.t_down.astype(np.float64)) + np.log(t.t_up.astype(np.float64))
    gain = t.tg[:, :1, None].astype(np.float32) * np.exp(lerp(log_t))
    return lerp(t.path), gain.astype(np.float32), lerp(t.s_alb)


def add_noise(toa: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise and L1C quantisation (see the module docstring)."""
    n = SAMPLING["noise"]
    sigma = n["absolute"] + n["relative"] * np.abs(toa)  # type: ignore[index]
    noisy = toa + rng.standard_normal(toa.shape, dtype=np.float32) * sigma
    q = n["quantisation"]  # type: ignore[index]
    return (np.round(noisy / q) * q).astype(np.float32)


def simulate(
    surface: np.ndarray,
    atm: Atmosphere,
    lut: SixSLut,
    rng: np.random.Generator,
    *,
    noise: bool = True,
    aot_map: np.ndarray | None = None,
    nodes_terms: AtmosphereTerms | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """TOA (12, h, w) of a surface under ``atm``; returns (toa, aot map, (path, gain, s_alb))."""
    shape = surface.shape[1:]
    aot = aot_map if aot_map is not None else aot_field(atm, shape, rng, lut)
    path, gain, s_alb = terms_per_pixel(atm, aot, lut, nodes_terms)
    rho = surface.astype(np.float64)
    toa = forward_gain(rho, path, gain, s_alb).astype(np.float32)
    if noise:
        toa = add_noise(toa, rng)
    return toa, aot, (path, gain, s_alb)


def make_batch(
    surfaces: Sequence[np.ndarray] | Mapping[str, Sequence[np.ndarray]],
    lut: SixSLut,
    rng: np.random.Generator,
    n: int,
    crop: int,
    *,
    spectra: np.ndarray | None = None,
    noise: bool = True,
    jitter: bool = False,
    layout: tuple[int, int] | None = None,
) -> SceneBatch:
    """``n`` scenes: a random surface crop, or a mosaic of ``layout`` patches (with built-in spectra
    painted in), a random atmosphere each."""
    toas, boas, aots, angles = [], [], [], []
    atms = [sample_atmosphere(rng, lut) for _ in range(n)]
    for atm, terms in zip(atms, node_terms(atms, lut), strict=True):
        if layout is not None:
            surface = mosaic(surfaces, rng, layout, SAMPLING["surface_jitter"]["tilt"] if jitter else None)  # type: ignore[index]
        else:
            pool = [p for g in surfaces.values() for p in g] if isinstance(surfaces, Mapping) else surfaces
            surface = augment(pool[int(rng.integers(len(pool)))], crop, rng)
        if spectra is not None:
            surface = paint_spectra(surface, spectra, rng)
        if jitter:
            j = SAMPLING["surface_jitter"]
            factor = rng.uniform(*j["scale"]) * (1 + j["band_std"] * rng.standard_normal(surface.shape[0]))  # type: ignore[index]
            surface = np.clip(surface * factor[:, None, None].astype(np.float32), 0.0, 0.95)
        toa, aot, _ = simulate(surface, atm, lut, rng, noise=noise, nodes_terms=terms)
        toas.append(toa)
        boas.append(surface)
        aots.append(aot[None])
        angles.append(np.broadcast_to(np.array([atm.sza, atm.vza, atm.raa], np.float32)[:, None, None],
                                      (3, *surface.shape[1:])))
    stack = lambda xs: np.ascontiguousarray(np.stack(xs), dtype=np.float32)  # noqa: E731
    return SceneBatch(stack(toas), stack(angles), stack(boas), stack(aots), atms)


def angle_stack(sza: np.ndarray | float, vza: np.ndarray | float, saa: np.ndarray | float, vaa: np.ndarray | float,
                shape: tuple[int, int]) -> np.ndarray:
    """(3, h, w) model angle input (sun zenith, view zenith, relative azimuth) from per-pixel or mean angles."""
    raa = relative_azimuth(saa, vaa)
    return np.stack([np.broadcast_to(np.asarray(v, np.float32), shape) for v in (sza, vza, raa)]).astype(np.float32)
