import numpy as np
import pytest
from affine import Affine
from pyproj import CRS

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, Window, intersect_bounds, transform_bounds, utm_crs_for_lonlat


def make_grid() -> Grid:
    return Grid(Affine(10, 0, 500_000, 0, -10, 5_000_000), 4, 3, CRS.from_epsg(32632))


def test_pixel_centres_are_half_a_pixel_in():
    x, y = make_grid().pixel_centres()
    assert x.shape == (3, 4) and x.dtype == np.float64
    assert x[0, 0] == 500_005 and y[0, 0] == 4_999_995
    assert x[2, 3] == 500_035 and y[2, 3] == 4_999_975


def test_pixel_centres_of_rotated_grid_follow_the_affine():
    g = Grid(Affine(10, 2, 0, 1, -10, 100), 3, 2, "EPSG:32632")
    x, y = g.pixel_centres()
    for r in range(2):
        for c in range(3):
            assert (x[r, c], y[r, c]) == pytest.approx(g.transform @ (c + 0.5, r + 0.5))


def test_row_blocks_cover_every_row_once():
    g = Grid(Affine(1, 0, 0, 0, -1, 0), 5, 11, 4326)
    rows = [r for w in g.row_blocks(4) for r in range(w.row_off, w.row_off + w.height)]
    assert rows == list(range(11))


def test_window_grid_keeps_geometry():
    g = make_grid()
    sub = g.window_grid(Window(1, 2, 2, 2))
    assert sub.pixel_centres()[0][0, 0] == g.pixel_centres()[0][1, 2]
    assert sub.pixel_centres()[1][0, 0] == g.pixel_centres()[1][1, 2]


def test_window_for_bounds_clips_and_detects_disjoint():
    g = make_grid()
    assert g.window_for_bounds((500_012, 4_999_975, 500_021, 4_999_991)) == Window(0, 1, 3, 2)
    assert g.window_for_bounds((0, 0, 1, 1)) is None


def test_from_bounds_snaps_to_resolution():
    g = Grid.from_bounds((12.0, 3.0, 58.0, 41.0), 10, 32632)
    assert g.bounds == (10.0, 0.0, 60.0, 50.0) and g.shape == (5, 5)


@pytest.mark.parametrize(("lon", "lat", "epsg"), [(7.3, 45.7, 32632), (-0.1, 51.5, 32630), (151.2, -33.9, 32756), (180, 0, 32660)])
def test_utm_zone(lon, lat, epsg):
    assert utm_crs_for_lonlat(lon, lat).to_epsg() == epsg


def test_bad_inputs_are_user_errors():
    with pytest.raises(EotwinError):
        utm_crs_for_lonlat(200, 0)
    with pytest.raises(EotwinError):
        Grid(Affine.identity(), 0, 3, 4326)


def test_transform_and_intersect_bounds():
    b = transform_bounds((7.0, 45.0, 7.1, 45.1), CRS.from_epsg(4326), CRS.from_epsg(32632))
    assert 300_000 < b[0] < b[2] < 400_000 and 4_980_000 < b[1] < b[3] < 5_000_000
    assert intersect_bounds((0, 0, 2, 2), (1, 1, 3, 3)) == (1, 1, 2, 2)
    assert intersect_bounds((0, 0, 1, 1), (2, 2, 3, 3)) is None
