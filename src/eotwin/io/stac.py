"""STAC items of eotwin's outputs, built with pystac: footprint, extension schemas, the item as JSON.

Each capability says what its item holds (an L2A product, a point cloud); this module turns that into a
STAC 1.0.0 item through :class:`pystac.Item`, so every output is described the same way. Items are not
validated against the JSON schemas here: pystac fetches those from the internet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from eotwin.geo.grid import Grid

STAC_VERSION = "1.0.0"  # what the extension versions below are written for
EXTENSIONS: dict[str, str] = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "projection": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "view": "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "pointcloud": "https://stac-extensions.github.io/pointcloud/v1.0.0/schema.json",
}
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def footprint_lonlat(grid: Grid) -> tuple[list[float], dict]:
    """WGS 84 bbox and GeoJSON polygon of a grid's footprint (11 points per side: UTM edges curve in lon/lat)."""
    from pyproj import Transformer

    left, bottom, right, top = grid.bounds
    xs = np.concatenate(
        [np.linspace(left, right, 11), np.full(11, right), np.linspace(right, left, 11), np.full(11, left)]
    )
    ys = np.concatenate(
        [np.full(11, top), np.linspace(top, bottom, 11), np.full(11, bottom), np.linspace(bottom, top, 11)]
    )
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    ring = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    bbox = [float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat))]
    return bbox, {"type": "Polygon", "coordinates": [ring]}


def item_dict(
    item_id: str,
    *,
    geometry: dict,
    bbox: Sequence[float],
    datetime: str,
    properties: Mapping[str, Any],
    extensions: Sequence[str],
    assets: Mapping[str, Mapping[str, Any]],
    links: Sequence[Mapping[str, Any]] = (),
    key_order: Sequence[str] = (),
) -> dict:
    """A STAC item as a JSON-ready dict.

    ``datetime`` is an RFC 3339 string, kept as written (pystac would spell milliseconds as
    microseconds); ``extensions`` are keys of :data:`EXTENSIONS`; each asset is a dict with ``href``,
    optional ``type``, ``title`` and ``roles``, any other key kept as an extension field; each link a dict
    with ``rel``, ``href`` and optional ``title``; ``key_order``: top-level keys to put first, in this order
    (pystac's order otherwise), so an output keeps the bytes it always had.
    """
    import pystac
    from pystac.utils import str_to_datetime

    item = pystac.Item(
        id=item_id,
        geometry=geometry,
        bbox=list(bbox),
        datetime=str_to_datetime(datetime),
        properties={k: v for k, v in properties.items() if k != "datetime"},
        stac_extensions=[EXTENSIONS[k] for k in extensions],
    )
    for key, spec in assets.items():
        extra = {k: v for k, v in spec.items() if k not in ("href", "type", "title", "roles")}
        item.add_asset(key, pystac.Asset(href=spec["href"], title=spec.get("title"), media_type=spec.get("type"),
                                         roles=list(spec["roles"]) if "roles" in spec else None,
                                         extra_fields=extra))
    for link in links:
        item.add_link(pystac.Link(rel=link["rel"], target=link["href"], title=link.get("title")))
    out = item.to_dict(include_self_link=False, transform_hrefs=False)
    out["stac_version"] = STAC_VERSION  # pystac writes its newest version; the extensions named are 1.0's
    # the caller's key order where it gave one (pystac appends datetime and puts roles last)
    out["properties"] = _ordered_like({"datetime": datetime, **properties}, {**out["properties"], "datetime": datetime})
    out["assets"] = {key: _ordered_like(assets[key], value) for key, value in out["assets"].items()}
    out["links"] = [_ordered_like(given, value) for given, value in zip(links, out["links"], strict=True)]
    return _ordered_like(dict.fromkeys(key_order), out)


def _ordered_like(given: Mapping[str, Any], built: dict) -> dict:
    """``built`` with the keys of ``given`` first, in their order, then any others."""
    return {**{k: built[k] for k in given if k in built}, **{k: v for k, v in built.items() if k not in given}}
