"""TOA <-> BOA algebra: forward then inverse recovers the surface; analytic special cases."""

from __future__ import annotations

import numpy as np
import pytest

from eotwin.atmocorr import physics
from eotwin.atmocorr.lut import load_lut
from eotwin.errors import EotwinError


def test_black_surface_sees_only_the_path_and_no_atmosphere_is_identity():
    assert physics.boa_to_toa(0.0, 0.07, 0.9, 0.8, 0.85, 0.15) == pytest.approx(0.07)
    rho = np.array([0.0, 0.1, 0.5, 0.9])
    np.testing.assert_allclose(physics.boa_to_toa(rho, 0.0, 1.0, 1.0, 1.0, 0.0), rho)
    np.testing.assert_allclose(physics.toa_to_boa(rho, 0.0, 1.0, 1.0, 1.0, 0.0), rho)


def test_hand_computed_value():
    # toa = 0.05 + 0.95 * 0.8 * 0.9 * 0.3 / (1 - 0.1 * 0.3)
    expected = 0.05 + 0.95 * 0.8 * 0.9 * 0.3 / 0.97
    assert physics.boa_to_toa(0.3, 0.05, 0.95, 0.8, 0.9, 0.1) == pytest.approx(expected, rel=1e-12)
    assert physics.toa_to_boa(expected, 0.05, 0.95, 0.8, 0.9, 0.1) == pytest.approx(0.3, rel=1e-12)


def test_brief_formula_is_the_same_inversion():
    """y = (rho_toa / Tg - rho_path) / (T_down T_up) with rho_path = path / Tg, then rho = y / (1 + S y)."""
    rng = np.random.default_rng(0)
    path, tg, td, tu, s = (
        rng.uniform(0.01, 0.2),
        rng.uniform(0.2, 1),
        rng.uniform(0.6, 1),
        rng.uniform(0.6, 1),
        rng.uniform(0, 0.3),
    )
    toa = rng.uniform(0.02, 0.8, 100)
    y = (toa / tg - path / tg) / (td * tu)
    np.testing.assert_allclose(physics.toa_to_boa(toa, path, tg, td, tu, s), y / (1 + s * y), rtol=1e-12)


def test_forward_then_inverse_recovers_the_surface_through_the_committed_lut():
    lut = load_lut()
    rng = np.random.default_rng(11)
    n = 5000
    surface = rng.uniform(0.0, 0.9, (len(lut.bands), n))
    atmosphere = {
        axis: rng.uniform(lut.axes[axis][0], lut.axes[axis][-1], n)
        for axis in ("aot", "sza", "vza", "wv", "o3")
    }
    atmosphere["raa"] = rng.uniform(0, 360, n)
    for sensor in ("S2A", "S2C"):
        for aerosol in lut.aerosols:
            terms = lut.terms_for(sensor, lut.bands, aerosol, **atmosphere)
            toa = physics.forward(surface, terms)
            assert toa.shape == surface.shape
            recovered = physics.invert(toa, terms)
            assert np.max(np.abs(recovered - surface)) < 1e-6  # well inside the 0.001 goal: exact algebra


def test_relative_azimuth_folds_to_0_180():
    np.testing.assert_allclose(
        physics.relative_azimuth([150, 10, 350, 100], [100, 350, 10, 280]), [50, 20, 20, 180]
    )


def test_one_formula_for_every_call_site():
    """invert_gain/forward_gain are the formula each former copy wrote out: the same numbers to the bit in the
    caller's dtype (in place where that changes nothing), the AI's floor only where asked, slopes via F."""
    rng = np.random.default_rng(7)
    toa = rng.uniform(-0.2, 0.6, (3, 40, 50)).astype(np.float32)
    path, gain, s_alb = (rng.uniform(0.02, 0.9, (3, 1, 1)).astype(np.float32) for _ in range(3))
    y = (toa - path) / gain
    assert np.array_equal(physics.invert_gain(toa, path, gain, s_alb), y / (1.0 + s_alb * y))
    floored = physics.invert_gain(toa, path, gain, s_alb, floor=physics.AI_DENOMINATOR_FLOOR)
    assert np.array_equal(floored, y / np.maximum(1.0 + s_alb * y, 0.2)) and floored.dtype == np.float32
    out = np.empty_like(toa)
    physics.invert_gain(toa, path, gain, s_alb, out=out)
    assert np.array_equal(out, y / (1.0 + s_alb * y))
    by_inverse = physics.invert_gain(toa, path, None, s_alb, inverse_gain=1.0 / gain)
    y_inv = (toa - path) * (1.0 / gain)
    assert np.array_equal(by_inverse, y_inv / (1.0 + s_alb * y_inv))
    f = rng.uniform(0.3, 1.5, toa.shape[1:])
    t64 = toa.astype(np.float64)
    y64 = (t64 - path) / gain
    assert np.array_equal(physics.invert_gain(t64, path, gain, s_alb, illumination=f), y64 / (f + s_alb * y64))
    rho = rng.uniform(0.0, 0.6, toa.shape)
    assert np.array_equal(physics.forward_gain(rho, path, gain, s_alb, illumination=f),
                          path + gain * rho * f / (1.0 - s_alb * rho))
    back = physics.invert_gain(physics.forward_gain(rho, path, gain, s_alb, illumination=f), path, gain, s_alb,
                               illumination=f)
    np.testing.assert_allclose(back, rho, atol=1e-9)
    assert physics.invert_gain(0.3, 0.05, 0.8, 0.1) == pytest.approx((0.25 / 0.8) / (1 + 0.1 * 0.25 / 0.8))


def test_value_objects_give_the_same_terms_as_loose_arguments():
    lut = load_lut()
    geometry = physics.Geometry.from_azimuths(35.0, 150.0, 6.0, 290.0)
    assert geometry.raa == pytest.approx(140.0) and geometry.angles() == {"sza": 35.0, "vza": 6.0, "raa": geometry.raa}
    atmosphere = physics.Atmosphere(0.3, 1.5, 0.33, "maritime")
    a = lut.terms_at("S2A", ("B02", "B11"), atmosphere, geometry)
    b = lut.terms_for("S2A", ("B02", "B11"), "maritime", 0.3, 35.0, 6.0, geometry.raa, 1.5, 0.33)
    for name in ("path", "tg", "t_down", "t_up", "s_alb"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    toa = np.full((2, 2, 2), 0.1, np.float32)
    boa = physics.lut_correction(toa, ("B02", "B11"), lut, sensor="S2A", atmosphere=atmosphere, geometry=geometry)
    assert boa.dtype == np.float32 and np.array_equal(boa, physics.invert(toa, b).astype(np.float32))
    with pytest.raises(EotwinError, match="floating point"):
        physics.lut_correction(toa.astype(np.uint16), ("B02", "B11"), lut, sensor="S2A", atmosphere=atmosphere,
                               geometry=geometry)
