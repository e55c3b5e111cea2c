"""STAC items built with pystac (:mod:`eotwin.io.stac`): the item's JSON as eotwin has always written it."""

from __future__ import annotations

import json

from affine import Affine
from pyproj import CRS

from eotwin.geo.grid import Grid
from eotwin.io.stac import EXTENSIONS, footprint_lonlat, item_dict


def test_item_keeps_the_given_datetime_spelling_key_order_and_stac_1_0():
    item = item_dict(
        "x", geometry={"type": "Point", "coordinates": [7.0, 46.0]}, bbox=[7.0, 46.0, 7.0, 46.0],
        datetime="2023-02-16T04:48:51.024Z", properties={"created": "2024-01-01T00:00:00Z", "gsd": 10},
        extensions=("eo", "view"),
        assets={"l2a": {"href": "l2a.tif", "type": "", "roles": ["data"], "title": "T", "eo:bands": [{"name": "B02"}]}},
        links=[{"rel": "derived_from", "title": "L1C input", "href": "file:///in.tif"}],
    )
    assert item["stac_version"] == "1.0.0" and item["type"] == "Feature" and item["id"] == "x"
    assert item["stac_extensions"] == [EXTENSIONS["eo"], EXTENSIONS["view"]]
    assert list(item["properties"].items()) == [("datetime", "2023-02-16T04:48:51.024Z"),
                                                ("created", "2024-01-01T00:00:00Z"), ("gsd", 10)]
    assert list(item["assets"]["l2a"]) == ["href", "type", "roles", "title", "eo:bands"]
    assert item["assets"]["l2a"]["type"] == "" and item["links"] == [
        {"rel": "derived_from", "title": "L1C input", "href": "file:///in.tif"}]
    json.dumps(item)  # plain JSON types only


def test_footprint_is_a_closed_lon_lat_ring_around_the_grid():
    grid = Grid(Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5100000.0), 1000, 800, CRS.from_epsg(32632))
    bbox, geometry = footprint_lonlat(grid)
    ring = geometry["coordinates"][0]
    assert len(ring) == 45 and ring[0] == ring[-1]
    assert bbox[0] < bbox[2] and bbox[1] < bbox[3] and 10.2 < bbox[0] < 10.5 and 45.9 < bbox[1] < 46.1


def test_key_order_puts_the_named_top_level_keys_first():
    item = item_dict("y", geometry={"type": "Point", "coordinates": [0, 0]}, bbox=[0, 0, 0, 0],
                     datetime="2024-01-01T00:00:00Z", properties={}, extensions=(), assets={},
                     key_order=("type", "stac_version", "id", "bbox", "geometry", "assets", "links"))
    assert list(item)[:7] == ["type", "stac_version", "id", "bbox", "geometry", "assets", "links"]
    assert set(item) == {"type", "stac_version", "stac_extensions", "id", "bbox", "geometry", "properties",
                         "assets", "links"}
