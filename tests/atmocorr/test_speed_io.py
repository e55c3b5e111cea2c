"""The fast, bounded I/O of ``eotwin atmocorr run``: decimated reads, the full-tile synthetic L1C and the
bounded water-vapour estimate (COG writing: tests/io/test_cog.py)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from eotwin.atmocorr import physics, water_vapour
from eotwin.atmocorr.lut import load_lut
from eotwin.atmocorr.sample_l1c import make_tiled_l1c, mirror_index, simulate_toa
from eotwin.geo.grid import Window
from eotwin.sentinel2.bands import L2A_BANDS
from eotwin.sentinel2.products import open_l1c
from eotwin.sentinel2.reading import BandReader, read_toa


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    return make_tiled_l1c(tmp_path_factory.mktemp("tile"), size=700, base=256, block_rows=256)


def test_tiled_l1c_is_the_mirrored_6s_forward_model_with_the_stack_conventions(tiled):
    product = open_l1c(tiled.l1c)
    assert product.grid.shape == (700, 700) and product.offsets["B02"] == -1000
    assert product.spacecraft == "S2A" and product.angles.means()["sun_zenith"] == pytest.approx(35.0)
    truth = tiled.surface(200, 300, 150, 400)  # crosses a mirror seam at 256 and 512
    with BandReader(product.bands, product.grid) as reader:
        toa = read_toa(reader, product, L2A_BANDS, Window(200, 300, 150, 400))
    from eotwin.sentinel2.bands import S2_BANDS

    expected = simulate_toa(
        truth[[S2_BANDS.index(b) for b in L2A_BANDS]], load_lut(), sensor="S2A",
        aerosol="continental", aot=0.2, wv=1.5, o3=0.33, bands=L2A_BANDS, **tiled.geometry,
    )  # fmt: skip
    np.testing.assert_allclose(toa, expected, atol=0.5e-4 + 1e-7)  # DN rounding only
    assert np.isnan(toa[:, -1, 0]).all() == np.isnan(truth[:, -1, 0]).all()
    assert mirror_index(254, 4, 256).tolist() == [254, 255, 255, 254]
    # the swath edge: the lower-left corner is no data
    with BandReader(product.bands, product.grid) as reader:
        corner = reader.read(("B02",), Window(690, 0, 10, 10))
    assert np.isnan(corner).all()


def test_decimated_read_equals_decimating_the_full_read(tiled):
    product = open_l1c(tiled.l1c)
    window = Window(13, 0, 301, 700)
    with BandReader(product.bands, product.grid) as reader:
        full = read_toa(reader, product, L2A_BANDS, window)
        step = read_toa(reader, product, L2A_BANDS, window, step=6)
        dn = reader.read(("B04",), window)
    np.testing.assert_array_equal(step, full[:, ::6, ::6])
    np.testing.assert_array_equal(
        full[L2A_BANDS.index("B04")], (dn[0] + np.float32(-1000)) / np.float32(10000)
    )


def test_water_vapour_estimate_is_bounded_on_many_pixels_and_recovers_the_truth():
    lut = load_lut()
    rng = np.random.default_rng(3)
    n = 400_000
    surface = rng.uniform(0.15, 0.4, n)  # flat between B8A and B09, the method's premise
    geometry = dict(sza=40.0, vza=6.0, raa=120.0)
    terms = lut.terms_for("S2A", ("B8A", "B09"), "continental", 0.2, wv=2.1, o3=0.33, **geometry)
    toa = physics.forward(np.stack([surface, surface]), terms)
    kwargs = dict(sensor="S2A", aerosol="continental", aot=0.2, o3=0.33, **geometry)
    tracemalloc.start()
    wv = water_vapour.retrieve_water_vapour(toa[0], toa[1], lut, **kwargs).wv
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert wv == pytest.approx(2.1, abs=0.05)
    # 49 candidates x 400k pixels in float64 would be 157 MB per array; bounded: a few (7 x 50k) arrays
    assert peak < 40 * 2**20, peak / 2**20
    # the same as the estimate on the evenly spread subsample it takes
    idx = np.linspace(0, n - 1, water_vapour.WV_MAX_SAMPLE).astype(np.int64)
    assert water_vapour.retrieve_water_vapour(toa[0][idx], toa[1][idx], lut, **kwargs).wv == wv


def test_gdal_cache_env_sets_megabytes_not_bytes():
    """Bug found: pipelines passed GDAL_CACHEMAX=128 to rasterio, which means 128 bytes of block cache."""
    from rasterio._env import get_gdal_config

    from eotwin.io.raster import gdal_cache_env

    with gdal_cache_env(128):
        assert int(get_gdal_config("GDAL_CACHEMAX")) == 128 * 2**20
