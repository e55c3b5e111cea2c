"""High and tilted ground in the 6S inversion: less air above a mountain, and slopes lit at an angle (pure).

The 6S table is computed for a target at sea level on flat ground. Two facts of mountain scenes
break that, and sen2cor corrects both with a DEM:

* **Altitude.** Above a surface at height ``z`` there is only the fraction ``p = P(z) / P0`` of the
  air. The molecular (Rayleigh) scattering scales with it, while the aerosol optical depth is, as in
  6S, the aerosol above the target. 6S run at target altitudes 1-3 km confirms (see the tests)
  that each term splits into a molecular part, which is the table's term at AOT 0, and the rest:

  ``path(p) = path - (1 - p) * path0``       (single scattering: Rayleigh path proportional to its depth)
  ``t(p) = t * t0 ** -(1 - p)``              (Beer-Lambert: the log-transmittance is additive in depth)
  ``s_alb(p) = s_alb - (1 - p) * s_alb0``

  with ``path0``, ``t0``, ``s_alb0`` the terms at AOT 0 (molecules alone) at sea level. ``p`` follows
  6S's exponential atmosphere, ``exp(-z / 8.434 km)``. Against 6S at 2.5 km (AOT 0.3, off the table's
  nodes) the path is within 0.0005 and the transmittances within 0.1 % beyond the table's own
  interpolation error; the spherical albedo's split is rougher (0.012 low in B02, which moves a
  surface of reflectance 0.3 by 0.001). The gas terms stay: the water vapour is retrieved (or given)
  as the column above the ground, and the well-mixed gases (CO2, CH4 in B11/B12) keep their
  sea-level column, which leaves 0.002 in B11/B12 at 1.8 km (tests/atmocorr/test_terrain.py).

* **Slope.** A pixel whose ground faces the sun receives more direct light than flat ground, one that
  faces away less. The downward transmittance splits into the direct beam
  ``t_dir = exp(-tau / cos(sza))`` (``tau``: the band's Rayleigh and aerosol optical depths, stored
  from 6S in ``data/optical_depths.json``) and the diffuse rest, of which a tilted pixel sees the
  sky-view share ``(1 + cos(slope)) / 2``. The flat Lambertian model ``rho_toa = path + tg * t_down *
  t_up * rho / (1 - s_alb * rho)`` becomes ``... tg * t_down * t_up * rho * F / (1 - s_alb * rho)``
  with the illumination factor ``F = (t_dir * cos(i) / cos(sza) + (t_down - t_dir) * V_sky) / t_down``
  (``i``: the angle between the sun and the slope's normal). Its exact inverse is
  ``rho = y / (F + s_alb * y)``, ``y = (rho_toa - path) / (tg * t_down * t_up)``. F is floored at
  ``MIN_ILLUMINATION``: in self-shadow the signal is only skylight and dividing by a tiny F would
  amplify noise (sen2cor bounds its correction likewise). Both directions are
  :func:`eotwin.atmocorr.physics.invert_gain` / ``forward_gain`` with ``illumination=F``.

No file or network access here; the optical depths are loaded by :func:`load_optical_depths`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from eotwin.errors import EotwinError

SCALE_HEIGHT_M = 8434.0  # 6S's pressure scale height (its target-altitude runs match exp(-z / 8.434 km))
MIN_ELEVATION_M, MAX_ELEVATION_M = -500.0, 9000.0  # the Dead Sea shore to above Everest
MIN_ILLUMINATION = 0.25  # illumination factor floor (self-shadowed slopes see mostly skylight)
OPTICAL_DEPTHS_PATH = Path(__file__).with_name("data") / "optical_depths.json"


def pressure_ratio(elevation_m: np.ndarray | float) -> np.ndarray:
    """Surface pressure over sea-level pressure for ground at ``elevation_m`` metres."""
    z = np.asarray(elevation_m, dtype=np.float64)
    finite = z[np.isfinite(z)]
    if finite.size and (finite.min() < MIN_ELEVATION_M or finite.max() > MAX_ELEVATION_M):
        raise EotwinError(
            f"elevation {finite.min():.0f}..{finite.max():.0f} m is outside {MIN_ELEVATION_M:.0f}..{MAX_ELEVATION_M:.0f} m"
            " (is the DEM in metres?)"
        )
    return np.exp(-z / SCALE_HEIGHT_M)


def molecular_scaled(
    term: np.ndarray, molecular: np.ndarray, p: np.ndarray | float, *, transmittance: bool = False
) -> np.ndarray:
    """One 6S term at pressure ratio ``p`` from its sea-level value and its molecules-only (AOT 0) value."""
    q = 1.0 - np.asarray(p, dtype=np.float64)
    if transmittance:
        return term * np.power(molecular, -q)
    return term - q * molecular


@dataclass(frozen=True)
class OpticalDepths:
    """Per sensor and band: 6S's sea-level Rayleigh optical depth and aerosol optical depth per unit AOT(550 nm)."""

    rayleigh: dict[str, dict[str, float]]  # sensor -> band -> depth
    aerosol_per_aot: dict[str, dict[str, dict[str, float]]]  # sensor -> aerosol model -> band -> depth
    source: str = ""

    def tau(
        self, sensor: str, band: str, aerosol: str, aot: np.ndarray | float, p: np.ndarray | float = 1.0
    ) -> np.ndarray:
        """Total scattering optical depth of ``band`` above ground at pressure ratio ``p``."""
        try:
            ray, aer = self.rayleigh[sensor][band], self.aerosol_per_aot[sensor][aerosol][band]
        except KeyError:
            raise EotwinError(f"no optical depth for {sensor} {band} / aerosol {aerosol}") from None
        return ray * np.asarray(p, dtype=np.float64) + aer * np.asarray(aot, dtype=np.float64)


@lru_cache(maxsize=4)
def load_optical_depths(path: str | Path = OPTICAL_DEPTHS_PATH) -> OpticalDepths:
    """The optical depths written by ``scripts/make_optical_depths.py`` (6S's own, per S2 band)."""
    try:
        data = json.loads(Path(path).read_text())
        return OpticalDepths(
            rayleigh={s: {b: float(v) for b, v in d.items()} for s, d in data["rayleigh"].items()},
            aerosol_per_aot={
                s: {m: {b: float(v) for b, v in bands.items()} for m, bands in d.items()}
                for s, d in data["aerosol_per_aot"].items()
            },
            source=str(data.get("source", "")),
        )
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise EotwinError(f"cannot read optical depths {path}: {type(exc).__name__}: {exc}") from None


def slope_aspect(elevation: np.ndarray, pixel_x: float, pixel_y: float) -> tuple[np.ndarray, np.ndarray]:
    """Slope and aspect (radians) of a north-up elevation grid; aspect is the downhill direction clockwise from north.

    Central differences inside, one-sided at the edges (``np.gradient``); NaN where a neighbour is NaN.
    """
    z = np.asarray(elevation, dtype=np.float64)
    if z.ndim != 2 or min(z.shape) < 2:
        raise EotwinError(f"slope needs an elevation grid of at least 2 x 2 pixels, got {z.shape}")
    dz_drow, dz_dcol = np.gradient(z)
    dz_dx = dz_dcol / pixel_x  # east
    dz_dy = -dz_drow / pixel_y  # north (rows go south)
    slope = np.arctan(np.hypot(dz_dx, dz_dy))
    aspect = np.mod(np.arctan2(-dz_dx, -dz_dy), 2 * np.pi)  # the direction the ground falls towards
    return slope, aspect


def cos_incidence(
    sun_zenith_deg: np.ndarray, sun_azimuth_deg: np.ndarray, slope: np.ndarray, aspect: np.ndarray
) -> np.ndarray:
    """Cosine of the angle between the sun and the ground's normal (negative: the slope faces away)."""
    sza, saa = np.radians(sun_zenith_deg), np.radians(sun_azimuth_deg)
    return np.cos(sza) * np.cos(slope) + np.sin(sza) * np.sin(slope) * np.cos(saa - aspect)


def illumination_factor(
    cos_i: np.ndarray, sun_zenith_deg: np.ndarray, tau: np.ndarray, t_down: np.ndarray, slope: np.ndarray
) -> np.ndarray:
    """Irradiance of a tilted pixel over that of flat ground (see the module docstring), floored."""
    mu_s = np.cos(np.radians(sun_zenith_deg))
    t_dir = np.exp(-tau / mu_s)
    sky_view = 0.5 * (1.0 + np.cos(slope))
    factor = (t_dir * np.maximum(cos_i, 0.0) / mu_s + (t_down - t_dir) * sky_view) / t_down
    return np.maximum(factor, MIN_ILLUMINATION)

