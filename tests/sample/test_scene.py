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
