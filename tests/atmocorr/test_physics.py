"""TOA <-> BOA algebra: forward then inverse recovers the surface; analytic special cases."""

from __future__ import annotations

import numpy as np
import pytest

from eotwin.atmocorr import physics
from eotwin.atmocorr.lut import load_lut


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
