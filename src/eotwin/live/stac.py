"""STAC search against the CDSE STAC API (pystac-client) and the choice of items for a bounding box.

Choice rule, stated to the user: items must intersect the bbox; the set is built greedily so that
it covers the bbox, preferring the least cloudy item (``eo:cloud_cover``), then the newest, and an
item is added only if it covers part of the bbox that the chosen ones do not.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import numpy as np

from eotwin.errors import EotwinError
from eotwin.live.endpoints import MAX_SEARCH_ITEMS, Endpoints

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class ChosenItem:
    item: dict
    coverage: float  # fraction of the bbox this item covers
    adds: float  # fraction of the bbox it adds to the items chosen before it
    reason: str


def parse_bbox(text: str) -> BBox:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise EotwinError(f"--bbox must be MINLON,MINLAT,MAXLON,MAXLAT, got {text!r}") from None
    if len(values) != 4:
        raise EotwinError(f"--bbox must have 4 numbers, got {len(values)}")
    west, south, east, north = values
    if west > east and east >= -180 and west <= 180:
        raise EotwinError(f"--bbox {text!r} has west > east: inverted, or crossing the antimeridian (split it into two boxes)")
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise EotwinError(f"--bbox {text!r} is not a valid lon/lat box (west < east, south < north, in range)")
    return values  # type: ignore[return-value]


def parse_date(text: str) -> str:
    """``START`` or ``START/END`` (ISO dates) to a STAC datetime interval."""
    parts = text.split("/")
    if len(parts) not in (1, 2):
        raise EotwinError(f"--date must be START or START/END, got {text!r}")
    try:
        days = [dt.date.fromisoformat(p) if len(p) <= 10 else dt.datetime.fromisoformat(p.replace("Z", "+00:00")).date()
                for p in parts]
    except ValueError:
        raise EotwinError(f"--date must be ISO dates (YYYY-MM-DD), got {text!r}") from None
    start, end = days[0], days[-1]
    if end < start:
        raise EotwinError(f"--date ends before it starts: {text!r}")
    today = dt.datetime.now(dt.UTC).date()
    if start > today:
        raise EotwinError(f"--date {text!r} is in the future (today is {today.isoformat()}): no acquisitions yet")
    return f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z"


def _stac_io(endpoints: Endpoints):
    from pystac_client.stac_api_io import StacApiIO

    from eotwin.live.endpoints import http_retry

    return StacApiIO(timeout=endpoints.timeout_s, max_retries=http_retry(endpoints))


def search(endpoints: Endpoints, collection: str, bbox: BBox, datetime: str, max_cloud: float | None,
           limit: int = 100, allow_empty: bool = False) -> list[dict]:
    """All items matching the query (following ``next`` pages), as plain STAC item dicts.

    No match is a user error unless ``allow_empty`` (a caller that explains the absence itself).
    """
    from pystac import STACError, STACTypeError
    from pystac_client.exceptions import APIError
    from requests.exceptions import RequestException

    query = {"eo:cloud_cover": {"lte": max_cloud}} if max_cloud is not None else None
    delay = endpoints.backoff_s
    for attempt in range(endpoints.max_retries + 1):
        # urllib3 retries statuses; a body cut mid-page or a connection dropped while reading is retried here
        # (the whole search again: it is idempotent)
        try:
            items = _search_once(endpoints, collection, bbox, datetime, query, limit)
            break
        except APIError as exc:
            status = getattr(exc, "status_code", None)
            failure = (f"STAC search at {endpoints.stac_url} failed{f' (HTTP {status})' if status else ''}: "
                       f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")
            if status is not None and status < 500 and status != 429:
                raise EotwinError(failure) from None
        except RequestException as exc:
            failure = f"STAC search at {endpoints.stac_url} failed: {type(exc).__name__}"
        except (ValueError, STACError, STACTypeError) as exc:  # a cut JSON body, or a landing page that did not arrive whole
            failure = f"STAC search at {endpoints.stac_url} failed: {type(exc).__name__}"
        if attempt == endpoints.max_retries:
            raise EotwinError(f"{failure} (after {attempt + 1} attempts)")
        time.sleep(delay)
        delay *= 2
    if not items and not allow_empty:
        cloud = f", cloud cover <= {max_cloud} %" if max_cloud is not None else ""
        raise EotwinError(f"no {collection} items for bbox {list(bbox)} and {datetime}{cloud}")
    return items


def _search_once(endpoints: Endpoints, collection: str, bbox: BBox, datetime: str, query: dict | None,
                 limit: int) -> list[dict]:
    from pystac_client import Client

    client = Client.open(endpoints.stac_url, stac_io=_stac_io(endpoints))
    found = client.search(collections=[collection], bbox=list(bbox), datetime=datetime, query=query, limit=limit,
                          method="POST")
    items: list[dict] = []
    for page in found.pages_as_dicts():
        items.extend(page.get("features", []))
        if len(items) > MAX_SEARCH_ITEMS:
            raise EotwinError(f"the STAC search at {endpoints.stac_url} matches more than {MAX_SEARCH_ITEMS:,} "
                              f"{collection} items; narrow the bbox, the dates or --max-cloud")
    return items


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
