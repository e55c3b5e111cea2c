"""The Sentinel-2 MSI band table: names and their spelling, native resolution, centre wavelength, levels.

This is the one place that lists the bands; every other module (atmospheric correction, BigEarthNet,
the sample scene, the live point clouds) takes its band names and their facts from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from eotwin.errors import EotwinError


@dataclass(frozen=True)
class Band:
    """One MSI band: its canonical name, native resolution (m) and S2A centre wavelength (nm, ESA)."""

    name: str
    resolution: int
    centre_nm: float


#: The 13 MSI bands in ESA order: the position is ESA's ``bandId`` (0 .. 12) in the product metadata.
BAND_TABLE: tuple[Band, ...] = (
    Band("B01", 60, 443.0),
    Band("B02", 10, 492.0),
    Band("B03", 10, 560.0),
    Band("B04", 10, 665.0),
    Band("B05", 20, 704.0),
    Band("B06", 20, 740.0),
    Band("B07", 20, 783.0),
    Band("B08", 10, 833.0),
    Band("B8A", 20, 865.0),
    Band("B09", 60, 945.0),
    Band("B10", 60, 1374.0),
    Band("B11", 20, 1614.0),
    Band("B12", 20, 2202.0),
)

#: Level-1C: all 13 bands (TOA reflectance).
S2_BANDS: tuple[str, ...] = tuple(b.name for b in BAND_TABLE)
#: Level-2A: the 12 surface-reflectance bands (B10, cirrus, is not corrected and not delivered).
L2A_BANDS: tuple[str, ...] = tuple(b for b in S2_BANDS if b != "B10")
#: Level-2A layers that are not reflectance bands: scene classification, aerosol optical thickness, water vapour.
L2A_LAYERS: tuple[str, ...] = ("SCL", "AOT", "WVP")
BAND_ID: dict[str, int] = {b: i for i, b in enumerate(S2_BANDS)}  # ESA's bandId 0..12
NATIVE_RESOLUTION: dict[str, int] = {b.name: b.resolution for b in BAND_TABLE}
#: S2A centre wavelengths in nm (ESA), for methods that need only a nominal wavelength (e.g. DOS).
CENTRE_NM: dict[str, float] = {b.name: b.centre_nm for b in BAND_TABLE}
#: The true-colour image's bands: red, green, blue.
TCI_BANDS: tuple[str, ...] = ("B04", "B03", "B02")
#: Scene classification (SCL) classes that count as clear: vegetation, not vegetated, water, unclassified.
SCL_CLEAR: tuple[int, ...] = (4, 5, 6, 7)

SENSORS: tuple[str, ...] = ("S2A", "S2B", "S2C")
#: STAC ``platform`` of each spacecraft.
PLATFORM: dict[str, str] = {"S2A": "sentinel-2a", "S2B": "sentinel-2b", "S2C": "sentinel-2c"}
_SPACECRAFT = {**{p: s for s, p in PLATFORM.items()}, **{s.lower(): s for s in SENSORS}}


def bands_at(resolution: int, bands: tuple[str, ...] = L2A_BANDS) -> tuple[str, ...]:
    """The ``bands`` (default: the L2A ones) whose native resolution is ``resolution`` metres, in ESA order."""
    return tuple(b for b in bands if NATIVE_RESOLUTION[b] == resolution)


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
