"""Sentinel-2 MSI spectral response functions (SRFs) for S2A, S2B and S2C.

Source: the ESA Sentinel-2 spectral response tables as shipped in Py6S
(``Py6S.Params.wavelength.PredefinedWavelengths.S2A_MSI_01`` ... ``S2B_MSI_12``), sampled every
2.5 nm as 6S needs them. Py6S ships no S2C table, so S2C is approximated by the S2B responses:
the three MSI units are built to one specification and the S2A/S2B centre wavelengths differ by
a few nanometres at most (B12: about 15 nm), so S2B is the nearest available stand-in. The
approximation is recorded in the LUT metadata (``SRF_SOURCE``) so it is never silent.

Py6S is imported inside the functions: it is only needed to build the LUT, not to use it.
"""

from __future__ import annotations

import numpy as np

from eotwin.errors import EotwinError

SENSORS: tuple[str, ...] = ("S2A", "S2B", "S2C")
S2_BANDS: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)
# which Py6S table stands for each sensor (S2C: not in Py6S, approximated by S2B, see above)
SRF_SOURCE: dict[str, str] = {"S2A": "S2A", "S2B": "S2B", "S2C": "S2B"}
_SPACECRAFT = {
    "sentinel-2a": "S2A",
    "sentinel-2b": "S2B",
    "sentinel-2c": "S2C",
    "s2a": "S2A",
    "s2b": "S2B",
    "s2c": "S2C",
}
STEP_UM = 0.0025
# S2A centre wavelengths in nm (ESA), for methods that need only a nominal wavelength (e.g. DOS)
CENTRE_NM: dict[str, float] = {
    "B01": 443.0,
    "B02": 492.0,
    "B03": 560.0,
    "B04": 665.0,
    "B05": 704.0,
    "B06": 740.0,
    "B07": 783.0,
    "B08": 833.0,
    "B8A": 865.0,
    "B09": 945.0,
    "B10": 1374.0,
    "B11": 1614.0,
    "B12": 2202.0,
}


def normalise_sensor(name: str) -> str:
    """Map ``Sentinel-2A``/``S2A``/``s2a`` (any case) to ``S2A``; anything else is a user error."""
    key = str(name).strip().lower()
    if key not in _SPACECRAFT:
        raise EotwinError(
            f"unknown Sentinel-2 spacecraft {name!r}: expected Sentinel-2A, Sentinel-2B or Sentinel-2C"
        )
    return _SPACECRAFT[key]


def normalise_band(name: str) -> str:
    """Map ``B1``/``b01``/``B8a`` to the canonical ``B01``/``B8A``."""
    key = str(name).strip().upper()
    if key.startswith("B") and key[1:].isdigit() and len(key) == 2:
        key = f"B0{key[1:]}"
    if key not in S2_BANDS:
        raise EotwinError(f"unknown Sentinel-2 band {name!r}: expected one of {', '.join(S2_BANDS)}")
    return key


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
