"""The one STAC API client (pystac-client): item search with retries and a paging stop, and the query's parsing.

Every STAC API request (the live point cloud's search, ``atmocorr pairs``' searches, an L1C item by id) goes
through :func:`search`: statuses are retried by the one policy (urllib3), a body cut mid-page by a new search,
and paging stops at :data:`MAX_SEARCH_ITEMS`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from eotwin.errors import EotwinError
from eotwin.io.remote.credentials import redact
from eotwin.io.remote.endpoints import Endpoints
from eotwin.io.remote.retry import tries

MAX_SEARCH_ITEMS = 5_000  # STAC paging stops here: a query this broad is narrowed by the user, not paged forever

BBox = tuple[float, float, float, float]


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


def stac_io(endpoints: Endpoints):
    """pystac-client's I/O with the endpoints' timeout and the one retry policy."""
    from pystac_client.stac_api_io import StacApiIO

    from eotwin.io.remote.retry import http_retry

    return StacApiIO(timeout=endpoints.timeout_s, max_retries=http_retry(endpoints))


def open_client(endpoints: Endpoints):
    """The STAC API at ``endpoints.stac_url`` (its landing page fetched through :func:`stac_io`)."""
    from pystac_client import Client

    return Client.open(endpoints.stac_url, stac_io=stac_io(endpoints))


def search(endpoints: Endpoints, collection: str, bbox: BBox | None, datetime: str | None, max_cloud: float | None,
           limit: int = 100, allow_empty: bool = False, *, ids: Sequence[str] | None = None,
           secrets: Sequence[str] = ()) -> list[dict]:
    """All items matching the query (following ``next`` pages), as plain STAC item dicts.

    No match is a user error unless ``allow_empty`` (a caller that explains the absence itself). ``secrets``
    are scrubbed from the server's error text.
    """
    from pystac import STACError, STACTypeError
    from pystac_client.exceptions import APIError
    from requests.exceptions import RequestException

    query = {"eo:cloud_cover": {"lte": max_cloud}} if max_cloud is not None else None
    for attempt, last in tries(endpoints.max_retries, endpoints.backoff_s):
        # urllib3 retries statuses; a body cut mid-page or a connection dropped while reading is retried here
        # (the whole search again: it is idempotent)
        try:
            items = _search_once(endpoints, collection, bbox, datetime, query, limit, ids)
            break
        except APIError as exc:
            status = getattr(exc, "status_code", None)
            text = redact(str(exc).splitlines()[0][:200], list(secrets)) if str(exc) else type(exc).__name__
            failure = f"STAC search at {endpoints.stac_url} failed{f' (HTTP {status})' if status else ''}: {text}"
            if status is not None and status < 500 and status != 429:
                raise EotwinError(failure) from None
        except RequestException as exc:
            failure = f"STAC search at {endpoints.stac_url} failed: {type(exc).__name__}"
        except (ValueError, STACError, STACTypeError) as exc:  # a cut JSON body, or a landing page that did not arrive whole
            failure = f"STAC search at {endpoints.stac_url} failed: {type(exc).__name__}"
        if last:
            raise EotwinError(f"{failure} (after {attempt + 1} attempts)")
    if not items and not allow_empty:
        cloud = f", cloud cover <= {max_cloud} %" if max_cloud is not None else ""
        raise EotwinError(f"no {collection} items for bbox {list(bbox or ())} and {datetime}{cloud}")
    return items


def _search_once(endpoints: Endpoints, collection: str, bbox: BBox | None, datetime: str | None, query: dict | None,
                 limit: int, ids: Sequence[str] | None) -> list[dict]:
    client = open_client(endpoints)
    found = client.search(collections=[collection], bbox=list(bbox) if bbox is not None else None, datetime=datetime,
                          query=query, limit=limit, ids=list(ids) if ids is not None else None, method="POST")
    items: list[dict] = []
    for page in found.pages_as_dicts():
        items.extend(page.get("features", []))
        if len(items) > MAX_SEARCH_ITEMS:
            raise EotwinError(f"the STAC search at {endpoints.stac_url} matches more than {MAX_SEARCH_ITEMS:,} "
                              f"{collection} items; narrow the bbox, the dates or --max-cloud")
    return items
