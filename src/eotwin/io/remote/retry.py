"""The one retry policy of remote services: which statuses are transient, doubling backoff, Retry-After capped.

urllib3 applies it to every ``requests`` session (STAC API, metadata files) through :func:`http_retry`; the Earth
Data Hub's aiohttp middleware applies the same statuses and cap through :func:`retry_after_wait`; GDAL gets the
same count and delay through :func:`eotwin.io.remote.gdal.gdal_options`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from eotwin.io.remote.endpoints import Endpoints

RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER_S = 30.0  # a server may ask for any wait; a user waits this long at most per retry


def http_retry(endpoints: Endpoints):
    """The one retry policy for HTTP (STAC API, metadata): transient statuses, backoff, Retry-After capped."""
    from urllib3.util.retry import Retry

    class CappedRetry(Retry):
        def get_retry_after(self, response):
            after = super().get_retry_after(response)
            return None if after is None else min(after, MAX_RETRY_AFTER_S)

    return CappedRetry(total=endpoints.max_retries, backoff_factor=endpoints.backoff_s,
                       status_forcelist=RETRY_STATUSES, allowed_methods=None, raise_on_status=False)


def retry_after_wait(header: str, delay: float) -> float:
    """The wait before the next try: the server's ``Retry-After`` seconds (capped), else our backoff ``delay``."""
    return min(float(header), MAX_RETRY_AFTER_S) if header.isdigit() else delay


def tries(retries: int, backoff_s: float) -> Iterator[tuple[int, bool]]:
    """(attempt, last?) for ``retries + 1`` tries, sleeping the doubling backoff (``backoff_s``, twice that, ...)
    before each new one: the loop of every retry outside urllib3 and GDAL (cut bodies, dropped connections)."""
    delay = backoff_s
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(delay)
            delay *= 2
        yield attempt, attempt == retries
