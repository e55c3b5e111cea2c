"""Sun position from time and place (pure): for inputs that carry no sun angles (stacks cut from
L1C products without their tile metadata).

The NOAA solar calculator's algorithm (after Meeus, *Astronomical Algorithms*): mean longitude and
anomaly of the sun, equation of centre, apparent longitude, obliquity, declination and the equation
of time, then the hour angle at the place. About 0.01 degrees from the full SPA of Reda & Andreas
(2004) between 1900 and 2100, far below what matters for the 6S terms (1 minute of time moves the
sun by 0.25 degrees at most). Atmospheric refraction is left out by default: 6S wants the geometric
sun zenith; ``refraction=True`` adds NOAA's correction for comparison with published apparent
positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from eotwin.errors import EotwinError

J2000 = 2451545.0


@dataclass(frozen=True)
class SunPosition:
    zenith: float  # degrees
    azimuth: float  # degrees clockwise from north (Sentinel-2's convention)
    declination: float  # degrees
    equation_of_time_min: float  # apparent minus mean solar time, minutes


def julian_day(when: datetime) -> float:
    """Julian day (UT) of an aware datetime; a naive one is refused (the time zone matters here)."""
    if when.tzinfo is None:
        raise EotwinError(f"{when.isoformat()}: a time without a time zone (give UTC, e.g. 2017-07-03T10:10:21Z)")
    utc = when.astimezone(UTC)
    unix = utc.timestamp()
    return unix / 86400.0 + 2440587.5


def _refraction_deg(elevation: float) -> float:
    """NOAA's approximation of atmospheric refraction (degrees) at an apparent elevation."""
    if elevation > 85.0:
        return 0.0
    t = np.tan(np.radians(elevation))
    if elevation > 5.0:
        arcsec = 58.1 / t - 0.07 / t**3 + 0.000086 / t**5
    elif elevation > -0.575:
        arcsec = 1735.0 + elevation * (-518.2 + elevation * (103.4 + elevation * (-12.79 + elevation * 0.711)))
    else:
        arcsec = -20.772 / t
    return float(arcsec) / 3600.0


def sun_position(when: datetime, lat: float, lon: float, *, refraction: bool = False) -> SunPosition:
    """Sun zenith and azimuth (degrees) seen from ``lat``/``lon`` (degrees, east positive) at ``when``."""
    if not -90.0 <= lat <= 90.0 or not -180.0 <= lon <= 360.0:
        raise EotwinError(f"latitude {lat} / longitude {lon} out of range")
    jc = (julian_day(when) - J2000) / 36525.0
    l0 = (280.46646 + jc * (36000.76983 + jc * 0.0003032)) % 360.0
    m = 357.52911 + jc * (35999.05029 - 0.0001537 * jc)
    e = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)
    mr = np.radians(m)
    centre = (
        np.sin(mr) * (1.914602 - jc * (0.004817 + 0.000014 * jc))
        + np.sin(2 * mr) * (0.019993 - 0.000101 * jc)
        + np.sin(3 * mr) * 0.000289
    )
    omega = np.radians(125.04 - 1934.136 * jc)
    apparent_long = l0 + centre - 0.00569 - 0.00478 * np.sin(omega)
    mean_obliquity = 23.0 + (26.0 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60.0) / 60.0
    obliquity = np.radians(mean_obliquity + 0.00256 * np.cos(omega))
    declination = np.arcsin(np.sin(obliquity) * np.sin(np.radians(apparent_long)))
    y = np.tan(obliquity / 2) ** 2
    l0r = np.radians(l0)
    eot = 4.0 * np.degrees(
        y * np.sin(2 * l0r)
        - 2 * e * np.sin(mr)
        + 4 * e * y * np.sin(mr) * np.cos(2 * l0r)
        - 0.5 * y * y * np.sin(4 * l0r)
        - 1.25 * e * e * np.sin(2 * mr)
    )
    utc = when.astimezone(UTC)
    minutes = utc.hour * 60 + utc.minute + (utc.second + utc.microsecond / 1e6) / 60.0
    true_solar = (minutes + eot + 4.0 * lon) % 1440.0
    hour_angle = np.radians(true_solar / 4.0 - 180.0)
    phi = np.radians(lat)
    cos_z = np.sin(phi) * np.sin(declination) + np.cos(phi) * np.cos(declination) * np.cos(hour_angle)
    zenith = float(np.degrees(np.arccos(np.clip(cos_z, -1.0, 1.0))))
    # azimuth clockwise from north, from the east and north components of the sun's direction
    east = -np.sin(hour_angle) * np.cos(declination)
    north = np.cos(phi) * np.sin(declination) - np.sin(phi) * np.cos(declination) * np.cos(hour_angle)
    azimuth = float(np.degrees(np.arctan2(east, north)) % 360.0)
    if refraction:
        zenith -= _refraction_deg(90.0 - zenith)
    return SunPosition(zenith, azimuth, float(np.degrees(declination)), float(eot))


# Sentinel-2's sun-synchronous orbit: mean local solar time 10:30 at the descending node, inclination 98.62 deg
S2_LTDN_HOURS = 10.5
S2_INCLINATION_DEG = 98.62


def sentinel2_overpass(day: date, lat: float, lon: float) -> datetime:
    """Estimated UTC time at which Sentinel-2 sees ``lat``/``lon`` on the UTC date ``day`` (descending pass).

    Why: stacks cut from L1C products often drop the tile metadata and its sensing time; the product
    name's time is the datatake start, up to 15 minutes earlier. On a sun-synchronous orbit the local
    mean solar time at the sub-satellite point depends only on latitude: the satellite is ``u`` degrees
    of orbit before the node, and its right ascension leads the node's by atan(|cos i| tan u). A place
    off the ground track is seen at the same moment as the track point beside it, so across the
    290 km swath the estimate is off by up to about 7 minutes (checked against real tile metadata).
    """
    if not -81.0 <= lat <= 81.0:
        raise EotwinError(f"latitude {lat}: Sentinel-2's ground track reaches 81.4 degrees; no overpass model beyond 81")
    inclination = np.radians(S2_INCLINATION_DEG)
    u = np.arcsin(min(1.0, abs(np.sin(np.radians(lat))) / np.sin(inclination)))
    lead_deg = float(np.degrees(np.arctan(abs(np.cos(inclination)) * np.tan(u))))
    local_mean_hours = S2_LTDN_HOURS + np.sign(lat) * lead_deg / 15.0
    utc_hours = (local_mean_hours - lon / 15.0) % 24.0  # ``day`` is the UTC date, as in product names
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=float(utc_hours))
