"""Lambertian 6S physics: surface <-> top-of-atmosphere reflectance, the one formula every caller uses.

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
On a slope the surface receives ``F`` times the irradiance of flat ground (``F`` from
:mod:`eotwin.atmocorr.terrain`): ``rho_toa = path + gain * rho * F / (1 - s_alb * rho)`` and
``rho = y / (F + s_alb * y)``.

:func:`invert_gain` and :func:`forward_gain` are that formula, written once: the pipeline, the AI's
cells and ONNX inference, the synthesis of training scenes, the evaluation, the retrievals (DDV, DOS,
water vapour) and the terrain correction call them, each with its own dtype and, where it wants one,
a floor on the denominator (:data:`AI_DENOMINATOR_FLOOR`). The torch version for training is
:func:`eotwin.atmocorr.ai.model.invert` (the same formula and floor). :class:`Atmosphere` and
:class:`Geometry` are the atmosphere and the sun/view geometry a 6S look-up takes.
Arrays of any shape broadcast together; no file or network access here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from eotwin.errors import EotwinError

if TYPE_CHECKING:
    from eotwin.atmocorr.lut import AtmosphereTerms, SixSLut

# the floor on the inversion's denominator ``1 + s_alb * y`` the AI's inversions use (cells, ONNX
# inference, the torch training layer): it only bites on nonsense (TOA far below the path), where the
# exact algebra would divide by almost zero or flip sign. The 6S-table paths (pipeline, retrievals,
# terrain) keep the exact algebra: ``floor=None``.
AI_DENOMINATOR_FLOOR = 0.2
NO_FLOOR: float | None = None
DEFAULT_OZONE = 0.33  # cm-atm, a mid-latitude climatological value


@dataclass(frozen=True)
class Atmosphere:
    """What the 6S table needs to know of the air: AOT at 550 nm, water vapour (g/cm2), ozone
    (cm-atm) and the aerosol model. Values may be scalars or per-pixel arrays that broadcast."""

    aot: float | np.ndarray
    wv: float | np.ndarray
    o3: float | np.ndarray = DEFAULT_OZONE
    aerosol: str = "continental"


@dataclass(frozen=True)
class Geometry:
    """Sun and view angles (degrees) as 6S takes them: zeniths and the relative azimuth, and the
    ground's elevation (metres above sea level; the table itself is for sea level)."""

    sza: float | np.ndarray
    vza: float | np.ndarray
    raa: float | np.ndarray
    elevation: float = 0.0

    @classmethod
    def from_azimuths(
        cls,
        sun_zenith: float | np.ndarray,
        sun_azimuth: float | np.ndarray,
        view_zenith: float | np.ndarray,
        view_azimuth: float | np.ndarray,
        elevation: float = 0.0,
    ) -> Geometry:
        """From Sentinel-2's four angles (the relative azimuth by :func:`relative_azimuth`)."""
        return cls(sun_zenith, view_zenith, relative_azimuth(sun_azimuth, view_azimuth), elevation)

    def angles(self) -> dict[str, float | np.ndarray]:
        """``sza``, ``vza``, ``raa`` as keyword arguments of the retrievals and the table."""
        return {"sza": self.sza, "vza": self.vza, "raa": self.raa}


def _in_place(target: np.ndarray, other: np.ndarray | float) -> bool:
    """Whether ``target op= other`` gives the same numbers as ``target op other`` (same dtype and shape)."""
    return (
        isinstance(target, np.ndarray)
        and target.dtype == np.result_type(target, other)
        and np.broadcast_shapes(target.shape, np.shape(other)) == target.shape
    )


def invert_gain(
    rho_toa: np.ndarray | float,
    path: np.ndarray | float,
    gain: np.ndarray | float | None,
    s_alb: np.ndarray | float,
    *,
    illumination: np.ndarray | float | None = None,
    floor: float | None = NO_FLOOR,
    inverse_gain: np.ndarray | float | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Surface reflectance ``y / (F + s_alb * y)``, ``y = (rho_toa - path) / gain`` (``gain = tg t_down t_up``).

    The arithmetic runs in the inputs' own dtype (a float32 block stays float32; cast before calling
    for float64), in place on the temporaries where that gives the same numbers. ``illumination``
    (F): None is flat ground (F = 1, not multiplied). ``floor``: the denominator is raised to at least
    this (:data:`AI_DENOMINATOR_FLOOR`) or left exact (None). ``inverse_gain``: ``1 / gain`` given
    instead of ``gain``, multiplied rather than divided (the ONNX path's per-cell reciprocal; not the
    same last bit as a division). ``out``: where the result goes (e.g. one band of a block).
    """
    y = np.subtract(rho_toa, path)
    if inverse_gain is not None:
        y = np.multiply(y, inverse_gain, out=y) if _in_place(y, inverse_gain) else y * inverse_gain
    else:
        y = np.divide(y, gain, out=y) if _in_place(y, gain) else y / gain
    denominator = s_alb * y
    if illumination is None:
        one = np.asarray(1.0, dtype=denominator.dtype) if isinstance(denominator, np.ndarray) else 1.0
        denominator = np.add(denominator, one, out=denominator) if _in_place(denominator, one) else denominator + one
    else:
        denominator = (
            np.add(denominator, illumination, out=denominator)
            if _in_place(denominator, illumination) else denominator + illumination
        )
    if floor is not None:
        denominator = np.maximum(denominator, np.asarray(floor, dtype=np.result_type(denominator)),
                                 out=denominator if _in_place(denominator, 0.0) else None)
    if out is not None:
        return np.divide(y, denominator, out=out)
    return np.divide(y, denominator, out=y) if _in_place(y, denominator) else y / denominator


def forward_gain(
    rho: np.ndarray | float,
    path: np.ndarray | float,
    gain: np.ndarray | float,
    s_alb: np.ndarray | float,
    *,
    illumination: np.ndarray | float | None = None,
) -> np.ndarray:
    """TOA reflectance ``path + gain * rho [* F] / (1 - s_alb * rho)`` in the inputs' own dtype."""
    numerator = gain * rho
    if illumination is not None:
        numerator = numerator * illumination
    return path + numerator / (1.0 - s_alb * rho)


def boa_to_toa(
    rho_surface: np.ndarray,
    path: np.ndarray,
    tg: np.ndarray,
    t_down: np.ndarray,
    t_up: np.ndarray,
    s_alb: np.ndarray,
) -> np.ndarray:
    """Forward model in float64: TOA reflectance of a Lambertian surface under the given atmosphere."""
    return forward_gain(np.asarray(rho_surface, dtype=np.float64), path, tg * t_down * t_up, s_alb)


def toa_to_boa(
    rho_toa: np.ndarray,
    path: np.ndarray,
    tg: np.ndarray,
    t_down: np.ndarray,
    t_up: np.ndarray,
    s_alb: np.ndarray,
) -> np.ndarray:
    """Inverse model in float64: Lambertian surface reflectance from TOA reflectance (exact inverse)."""
    return invert_gain(np.asarray(rho_toa, dtype=np.float64), path, tg * t_down * t_up, s_alb)


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


def check_stack(toa: np.ndarray, bands: tuple[str, ...] | list[str]) -> np.ndarray:
    """``toa`` as a floating (bands, ...) array with one layer per band name, else a one-line error."""
    toa = np.asarray(toa)
    if toa.ndim < 2 or toa.shape[0] != len(bands):
        raise EotwinError(f"TOA stack has shape {toa.shape} but {len(bands)} band names were given")
    if not np.issubdtype(toa.dtype, np.floating):
        raise EotwinError(f"TOA reflectance must be floating point, got {toa.dtype}")
    return toa


def lut_correction(
    toa: np.ndarray,
    bands: tuple[str, ...] | list[str],
    lut: SixSLut,
    *,
    sensor: str,
    atmosphere: Atmosphere,
    geometry: Geometry,
) -> np.ndarray:
    """Invert every band of a (bands, ...) float stack with the 6S table for a known atmosphere (the
    physical oracle); float32 out."""
    toa = check_stack(toa, bands)
    terms = lut.terms_at(sensor, tuple(bands), atmosphere, geometry)
    return invert(toa, terms).astype(np.float32)


def relative_azimuth(sun_azimuth: np.ndarray, view_azimuth: np.ndarray) -> np.ndarray:
    """Relative azimuth in [0, 180] degrees as 6S uses it (0: the sensor looks from the sun's side).

    Sentinel-2 metadata give both azimuths as directions from the pixel towards the sun and
    towards the satellite, which is 6S's convention (its phi = sun azimuth - view azimuth).
    """
    diff = np.abs(
        np.mod(np.asarray(sun_azimuth, dtype=np.float64) - np.asarray(view_azimuth, dtype=np.float64), 360.0)
    )
    return np.where(diff > 180.0, 360.0 - diff, diff)
