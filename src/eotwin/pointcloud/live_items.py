"""Which STAC items a live point cloud mosaics: a least-cloudy, newest-first set that covers the bbox.

Choice rule, stated to the user: items must intersect the bbox; the set is built greedily so that
it covers the bbox, preferring the least cloudy item (``eo:cloud_cover``), then the newest, and an
item is added only if it covers part of the bbox that the chosen ones do not.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from eotwin.errors import EotwinError
from eotwin.io.remote.stac_api import BBox


@dataclass(frozen=True)
class ChosenItem:
    item: dict
    coverage: float  # fraction of the bbox this item covers
    adds: float  # fraction of the bbox it adds to the items chosen before it
    reason: str


def _sample_points(bbox: BBox, n: int = 40) -> np.ndarray:
    west, south, east, north = bbox
    lon = west + (np.arange(n) + 0.5) * (east - west) / n
    lat = south + (np.arange(n) + 0.5) * (north - south) / n
    return np.column_stack([np.repeat(lon, n), np.tile(lat, n)])


def _inside(item: dict, points: np.ndarray) -> np.ndarray:
    from matplotlib.path import Path as PolygonPath

    geometry = item.get("geometry") or {}
    polygons = geometry.get("coordinates", [])
    if geometry.get("type") == "Polygon":
        polygons = [polygons]
    inside = np.zeros(len(points), dtype=bool)
    for polygon in polygons:
        if polygon:
            inside |= PolygonPath(np.asarray(polygon[0])[:, :2]).contains_points(points)
    return inside


def choose_items(items: list[dict], bbox: BBox) -> list[ChosenItem]:
    """A least-cloudy, newest-first set of items that covers ``bbox`` (see module docstring)."""
    points = _sample_points(bbox)
    ranked = sorted(items, key=lambda it: (float(it["properties"].get("eo:cloud_cover", 100.0)),
                                           -dt.datetime.fromisoformat(it["properties"]["datetime"].replace("Z", "+00:00")).timestamp()))
    covered = np.zeros(len(points), dtype=bool)
    chosen: list[ChosenItem] = []
    for item in ranked:
        inside = _inside(item, points)
        adds = inside & ~covered
        if not adds.any():
            continue
        covered |= inside
        cloud = item["properties"].get("eo:cloud_cover")
        reason = (f"{cloud:.1f} % cloud, {item['properties']['datetime'][:10]}, covers {inside.mean():.0%} of the bbox"
                  + ("" if len(chosen) == 0 else f", adds {adds.mean():.0%} not covered by the items before it"))
        chosen.append(ChosenItem(item, float(inside.mean()), float(adds.mean()), reason))
        if covered.all():
            break
    if not chosen:
        raise EotwinError("no item footprint intersects the bbox")
    if not covered.all():
        chosen[-1] = ChosenItem(chosen[-1].item, chosen[-1].coverage, chosen[-1].adds,
                                chosen[-1].reason + f"; {1 - covered.mean():.0%} of the bbox stays uncovered")
    return chosen
