import numpy as np
import rasterio
from pyproj import Transformer

from eotwin.sample.scene import LAKE_LEVEL_M, elevation_at, make_scene
from eotwin.sample.spectra import LAND_COVER_NAMES, SNOW, WATER


def test_scene_is_deterministic():
    a, b = make_scene(size=96, seed=3), make_scene(size=96, seed=3)
    assert np.array_equal(a.surface_reflectance, b.surface_reflectance)
    assert np.array_equal(a.dem, b.dem)


def test_relief_and_land_cover_are_realistic(sample_scene):
    z = sample_scene.elevation
    assert z.min() >= LAKE_LEVEL_M and 800 < z.max() - z.min() < 3000
    # land cover follows elevation: water is at lake level, snow is higher than any water
    lc = sample_scene.land_cover
    assert set(np.unique(lc)) <= set(range(len(LAND_COVER_NAMES)))
    if (lc == WATER).any() and (lc == SNOW).any():
        assert z[lc == SNOW].min() > z[lc == WATER].max()


def test_files_are_georeferenced_and_coregistered(sample_files, sample_scene):
    with rasterio.open(sample_files.dem) as dem, rasterio.open(sample_files.tci) as tci:
        assert dem.crs.to_epsg() == 4326 and tci.crs.to_epsg() == 32632
        assert tci.count == 3 and tci.dtypes[0] == "uint8"
        # the DEM samples the same analytic surface: check a pixel centre exactly
        lon, lat = dem.transform @ (10.5, 20.5)
        x, y = Transformer.from_crs(4326, 32632, always_xy=True).transform(lon, lat)
        assert abs(dem.read(1)[20, 10] - elevation_at(np.array(x), np.array(y))) < 1e-2
    with rasterio.open(sample_files.l2a) as l2a:
        assert l2a.descriptions == ("B02", "B03", "B04", "B08")
        assert l2a.tags()["BOA_ADD_OFFSET"] == "-1000"
        dn = l2a.read(3)
        valid = ~sample_scene.nodata & ~sample_scene.cloud & ~sample_scene.cloud_shadow
        refl = (dn[valid].astype(float) - 1000) / 10000
        assert np.allclose(refl, sample_scene.surface_reflectance[3][valid], atol=6e-5)
        assert (dn[sample_scene.nodata] == 0).all()


def test_rows_streamed_in_any_split_equal_the_whole_scene():
    import numpy as np

    from eotwin.sample.scene import SceneGenerator, make_scene

    whole = make_scene(size=333, seed=3)
    gen = SceneGenerator(333, 3)
    parts = [gen.rows(r, min(r + 70, 333)) for r in range(0, 333, 70)]  # 70 does not divide 333
    for name in ("elevation", "land_cover", "cloud", "cloud_shadow", "nodata"):
        assert np.array_equal(np.concatenate([getattr(p, name) for p in parts]), getattr(whole, name)), name
    assert np.array_equal(np.concatenate([p.surface_reflectance for p in parts], axis=1), whole.surface_reflectance)
    assert whole.cloud_shadow.any() and whole.cloud.any()


def test_written_sample_equals_the_scene_in_memory(tmp_path):
    """``write_sample`` streams rows; its files hold exactly what the in-memory scene gives."""
    import numpy as np
    import rasterio

    from eotwin.sample.files import write_sample
    from eotwin.sample.scene import make_scene, observed_reflectance, scene_scl
    from eotwin.sentinel2.radiometry import boa_to_dn

    streamed = write_sample(tmp_path / "s", size=300, seed=5, block_rows=64)
    scene = make_scene(size=300, seed=5)
    with rasterio.open(streamed.l2a) as l2a, rasterio.open(streamed.scl) as scl, rasterio.open(streamed.dem) as dem:
        expected_b04 = boa_to_dn(observed_reflectance(scene)[3])
        expected_b04[scene.nodata] = 0
        assert np.array_equal(l2a.read(3), expected_b04)
        assert np.array_equal(scl.read(1), scene_scl(scene))
        assert np.array_equal(dem.read(1), scene.dem)


def test_beyond_the_noise_tile_the_noise_repeats_and_rows_stay_consistent(monkeypatch):
    import numpy as np

    from eotwin.sample import scene as scene_module

    monkeypatch.setattr(scene_module, "NOISE_TILE", 64)
    gen = scene_module.SceneGenerator(200, 1)
    assert gen._cloud.shape == (64, 64)
    whole = gen.rows(0, 200)
    split = [gen.rows(r, min(r + 50, 200)) for r in range(0, 200, 50)]
    assert np.array_equal(np.concatenate([p.land_cover for p in split]), whole.land_cover)
    assert np.array_equal(np.concatenate([p.cloud_shadow for p in split]), whole.cloud_shadow)
    assert np.array_equal(whole.cloud[:64, :64], whole.cloud[64:128, 64:128])  # periodic clouds
