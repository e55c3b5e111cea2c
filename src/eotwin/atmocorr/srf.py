"""Sentinel-2 MSI spectral response functions (SRFs) for S2A, S2B and S2C.

Source: the ESA Sentinel-2 spectral response tables as shipped in Py6S
(``Py6S.Params.wavelength.PredefinedWavelengths.S2A_MSI_01`` ... ``S2B_MSI_12``), sampled every
2.5 nm as 6S needs them. Py6S ships no S2C table, so S2C is approximated by the S2B responses:
the three MSI units are built to one specification and the S2A/S2B centre wavelengths differ by
a few nanometres at most (B12: about 15 nm), so S2B is the nearest available stand-in. The
approximation is recorded in the LUT metadata (``SRF_SOURCE``) so it is never silent.

Py6S is imported inside the functions: it is only needed to build the LUT, not to use it. The band
names and nominal centre wavelengths are in :mod:`eotwin.sentinel2.bands`.
"""

from __future__ import annotations

import numpy as np

from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import normalise_band, normalise_sensor

# which Py6S table stands for each sensor (S2C: not in Py6S, approximated by S2B, see above)
SRF_SOURCE: dict[str, str] = {"S2A": "S2A", "S2B": "S2B", "S2C": "S2B"}
STEP_UM = 0.0025


def _py6s_name(sensor: str, band: str) -> str:
    source = SRF_SOURCE[normalise_sensor(sensor)]
    return f"{source}_MSI_{normalise_band(band)[1:]}"


def py6s_wavelength(sensor: str, band: str) -> tuple:
    """The Py6S predefined-wavelength tuple (id, start um, end um, response) for this band."""
    from Py6S import PredefinedWavelengths

    return getattr(PredefinedWavelengths, _py6s_name(sensor, band))


def spectral_response(sensor: str, band: str) -> tuple[np.ndarray, np.ndarray]:
    """Wavelengths (micrometres, 2.5 nm steps) and the relative response of one band."""
    _, start, end, response = py6s_wavelength(sensor, band)
    response = np.asarray(response, dtype=np.float64)
    wavelengths = start + STEP_UM * np.arange(response.size)
    if not np.isclose(wavelengths[-1], end, atol=1e-6):
        raise EotwinError(f"SRF table for {sensor} {band} does not span {start}-{end} um in 2.5 nm steps")
    return wavelengths, response


def centre_wavelength(sensor: str, band: str) -> float:
    """Response-weighted mean wavelength of a band in micrometres."""
    wavelengths, response = spectral_response(sensor, band)
    return float(np.sum(wavelengths * response) / np.sum(response))
