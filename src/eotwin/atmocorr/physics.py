"""Lambertian 6S physics: surface <-> top-of-atmosphere reflectance (pure, vectorised).

6S models the reflectance seen at the top of the atmosphere over a uniform Lambertian surface of
reflectance ``rho`` as::

    rho_toa = path + tg * t_down * t_up * rho / (1 - s_alb * rho)

with ``path`` the atmospheric path reflectance at TOA as 6S reports it over a black surface (it
already includes gas absorption), ``tg`` the total gaseous transmittance, ``t_down``/``t_up`` the
total (direct + diffuse) scattering transmittances and ``s_alb`` the spherical albedo. The
inversion is exact algebra::

    y = (rho_toa - path) / (tg * t_down * t_up)        # = (rho_toa / tg - path / tg) / (t_down * t_up)
    rho = y / (1 + s_alb * y)

which is the formula ``y = (rho_toa / Tg - rho_path) / (T_down * T_up)`` with ``rho_path = path / tg``.
Arrays of any shape broadcast together; no file or network access here.
"""

from __future__ import annotations

import numpy as np

from eotwin.atmocorr.lut import AtmosphereTerms


def boa_to_toa(
    rho_surface: np.ndarray,
    path: np.ndarray,
    tg: np.ndarray,
    t_down: np.ndarray,
    t_up: np.ndarray,
    s_alb: np.ndarray,
) -> np.ndarray:
    """Forward model: TOA reflectance of a Lambertian surface under the given atmosphere."""
    rho = np.asarray(rho_surface, dtype=np.float64)
    return path + tg * t_down * t_up * rho / (1.0 - s_alb * rho)


def toa_to_boa(
    rho_toa: np.ndarray,
    path: np.ndarray,
    tg: np.ndarray,
    t_down: np.ndarray,
    t_up: np.ndarray,
    s_alb: np.ndarray,
) -> np.ndarray:
    """Inverse model: Lambertian surface reflectance from TOA reflectance (exact inverse of the forward)."""
    y = (np.asarray(rho_toa, dtype=np.float64) - path) / (tg * t_down * t_up)
    return y / (1.0 + s_alb * y)


def _aligned(terms: AtmosphereTerms, ndim: int) -> list[np.ndarray]:
    """Terms shaped to broadcast against a (bands, ...) stack of ``ndim`` dimensions.

    A scene-wide atmosphere gives terms of shape (bands,); per-pixel ones (bands, H, W). Singleton
    axes go after the band axis so the band axes line up.
    """
    out = []
    for name in ("path", "tg", "t_down", "t_up", "s_alb"):
        term = np.asarray(getattr(terms, name))
        missing = ndim - term.ndim
        if missing < 0:
            raise ValueError(
                f"atmosphere terms have more dimensions ({term.ndim}) than the reflectance ({ndim})"
            )
        out.append(term.reshape(term.shape[:1] + (1,) * missing + term.shape[1:]))
    return out


def forward(rho_surface: np.ndarray, terms: AtmosphereTerms) -> np.ndarray:
    """:func:`boa_to_toa` with terms from the LUT; ``rho_surface`` has the bands first, like the terms."""
    rho_surface = np.asarray(rho_surface)
    return boa_to_toa(rho_surface, *_aligned(terms, rho_surface.ndim))


def invert(rho_toa: np.ndarray, terms: AtmosphereTerms) -> np.ndarray:
    """:func:`toa_to_boa` with terms from the LUT; ``rho_toa`` has the bands first, like the terms."""
    rho_toa = np.asarray(rho_toa)
    return toa_to_boa(rho_toa, *_aligned(terms, rho_toa.ndim))


def relative_azimuth(sun_azimuth: np.ndarray, view_azimuth: np.ndarray) -> np.ndarray:
    """Relative azimuth in [0, 180] degrees as 6S uses it (0: the sensor looks from the sun's side).

    Sentinel-2 metadata give both azimuths as directions from the pixel towards the sun and
    towards the satellite, which is 6S's convention (its phi = sun azimuth - view azimuth).
    """
    diff = np.abs(
        np.mod(np.asarray(sun_azimuth, dtype=np.float64) - np.asarray(view_azimuth, dtype=np.float64), 360.0)
    )
    return np.where(diff > 180.0, 360.0 - diff, diff)
