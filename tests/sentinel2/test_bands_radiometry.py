"""The band table and the radiometric conventions of :mod:`eotwin.sentinel2`, and that it stands alone."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from eotwin.errors import EotwinError
from eotwin.sentinel2 import bands, radiometry


def test_the_band_table_in_esa_order_with_its_levels():
    assert bands.S2_BANDS == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
                              "B11", "B12")
    assert tuple(b for b in bands.S2_BANDS if b != "B10") == bands.L2A_BANDS
    assert bands.BAND_ID["B8A"] == 8 and bands.BAND_ID["B12"] == 12
    assert bands.bands_at(10) == ("B02", "B03", "B04", "B08")
    assert bands.bands_at(20) == ("B05", "B06", "B07", "B8A", "B11", "B12")
    assert bands.bands_at(60) == ("B01", "B09") and bands.bands_at(60, bands.S2_BANDS) == ("B01", "B09", "B10")
    assert bands.CENTRE_NM["B8A"] == 865.0 and bands.NATIVE_RESOLUTION["B10"] == 60


@pytest.mark.parametrize(("name", "canonical"), [("B1", "B01"), ("b01", "B01"), (" B8a ", "B8A"), ("B12", "B12")])
def test_band_spelling(name, canonical):
    assert bands.normalise_band(name) == canonical


@pytest.mark.parametrize(("name", "canonical"), [("Sentinel-2A", "S2A"), ("s2b", "S2B"), ("SENTINEL-2C", "S2C")])
def test_spacecraft_spelling(name, canonical):
    assert bands.normalise_sensor(name) == canonical and bands.PLATFORM[canonical] == name.lower().replace(
        "s2", "sentinel-2")


def test_unknown_names_are_user_errors():
    with pytest.raises(EotwinError, match="unknown Sentinel-2 band"):
        bands.normalise_band("B13")
    with pytest.raises(EotwinError, match="unknown Sentinel-2 spacecraft"):
        bands.normalise_sensor("Landsat-8")


def test_offsets_follow_the_processing_baseline():
    assert radiometry.baseline_offset(3.01) == 0 and radiometry.baseline_offset(4.0) == -1000
    assert radiometry.baseline_scale_offset(5.09) == (1e-4, -0.1)
    assert radiometry.baseline_scale_offset(2.09) == (1e-4, 0.0)


def test_dn_and_reflectance_both_ways_at_both_levels():
    refl = np.array([[0.0, 0.05, 0.3123, 1.2]], dtype=np.float32)
    l1c = radiometry.toa_to_dn(refl)
    np.testing.assert_array_equal(l1c, [[1000, 1500, 4123, 13000]])
    np.testing.assert_allclose(radiometry.dn_to_reflectance(l1c, 1e-4, -0.1), refl, atol=1e-6)
    l2a = radiometry.boa_to_dn(np.array([[0.05, np.nan, -0.2]], dtype=np.float32))
    np.testing.assert_array_equal(l2a, [[1500, 0, 1]])  # NaN: no data; below the offset: clipped to 1
    back = radiometry.dn_to_boa(l2a)
    assert back[0, 0] == pytest.approx(0.05) and np.isnan(back[0, 1])


def test_the_l2a_encoding_of_finite_reflectance_is_plain_rounding():
    """The sample scene's former own encoding (rint, then clip) gives the same DN for any finite float32."""
    refl = np.random.default_rng(3).uniform(-0.2, 7.0, 100_000).astype(np.float32)
    plain = np.clip(np.rint(refl * 10000 + 1000), 1, 65535).astype(np.uint16)
    np.testing.assert_array_equal(radiometry.boa_to_dn(refl), plain)


def test_the_sensor_package_does_not_import_the_capabilities():
    code = ("import sys, eotwin.sentinel2.products, eotwin.sentinel2.reading, eotwin.sentinel2.ecmwf; "
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('eotwin.')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not {"atmocorr", "ben", "live", "pointcloud", "sample", "cli"} & set(eval(out))
