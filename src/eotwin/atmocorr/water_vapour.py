"""Scene water vapour from the B09/B8A band ratio through the 6S table, as sen2cor retrieves it (pure).

For each candidate water vapour the B8A surface is inverted and pushed through B09; the candidate where
the predicted B09 meets the measured one (scene median) is the answer, flagged when the scene lies
beyond the table's range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eotwin.atmocorr import physics
from eotwin.atmocorr.lut import SixSLut
from eotwin.atmocorr.retrieval import DEFAULT_AOT
from eotwin.errors import EotwinError

WV_MAX_SAMPLE = 50_000  # pixels for the water-vapour medians: evenly spread, so a full tile costs no more
WV_CANDIDATES = 49
WV_CHUNK = 7  # candidates per step: working arrays of (WV_CHUNK, pixels), whatever the candidate count


@dataclass(frozen=True)
class WaterVapour:
    """Scene water vapour from B09/B8A, and how much of the scene lies beyond the 6S table's range."""

    wv: float  # g/cm2, within the table's axis
    pixels: int  # pixels that entered the estimate
    below: int  # pixels whose own B09 asks for less water vapour than the table's lowest node
    above: int  # ... for more than its highest node
    edge: str | None  # "lower" or "upper" when the scene estimate is clamped to that end of the table
    source: str = "B09/B8A"  # or "default (...)" when the scene has too few pixels to measure it

    def warning(self, nodes: np.ndarray) -> str | None:
        """One line for the run info when the estimate sits on a table edge (it is then a bound, not a
        value) or is a default."""
        if self.source != "B09/B8A":
            return f"water vapour {self.wv:g} g/cm2 is a {self.source}"
        if self.edge is None:
            return None
        value, count = (nodes[0], self.below) if self.edge == "lower" else (nodes[-1], self.above)
        return (
            f"water vapour clamped to the 6S table's {self.edge} edge ({value:g} g/cm2): "
            f"{count} of {self.pixels} sampled pixels lie beyond it"
        )


def retrieve_water_vapour(
    toa_b8a: np.ndarray,
    toa_b09: np.ndarray,
    lut: SixSLut,
    *,
    sensor: str,
    aerosol: str,
    sza: float,
    vza: float,
    raa: float,
    aot: float = DEFAULT_AOT,
    o3: float = physics.DEFAULT_OZONE,
    valid: np.ndarray | None = None,
    default: float | None = None,
) -> WaterVapour:
    """Scene water vapour (g/cm2) from the B09/B8A ratio, assuming a flat surface between 865 and 945 nm.

    For each candidate water vapour the B8A surface is inverted and pushed through B09; the candidate
    whose predicted B09 matches the observed one (median over valid pixels) wins. At most
    ``WV_MAX_SAMPLE`` valid pixels, evenly spread over the input, enter the medians, and candidates are
    taken a few at a time, so memory stays bounded on a full tile. A scene beyond the table's range is
    clamped to its edge, never silently: ``edge`` says so and ``below``/``above`` count the pixels
    whose own B09 lies beyond the lowest or highest node. With fewer than 10 pixels bright enough in
    B8A (open water) it is an error, or ``default`` when given, and ``source`` then says so.
    """
    b8a = np.asarray(toa_b8a, dtype=np.float64).reshape(-1)
    b09 = np.asarray(toa_b09, dtype=np.float64).reshape(-1)
    mask = np.isfinite(b8a) & np.isfinite(b09) & (b8a > 0.02)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool).reshape(-1)
    if mask.sum() < 10:
        if default is not None:
            reason = f"default (only {int(mask.sum())} pixels with B8A reflectance above 0.02: too dark to measure)"
            return WaterVapour(float(default), int(mask.sum()), 0, 0, None, reason)
        raise EotwinError(
            "water vapour estimation needs at least 10 valid pixels with B8A reflectance above 0.02"
        )
    index = np.flatnonzero(mask)
    if index.size > WV_MAX_SAMPLE:
        index = index[np.linspace(0, index.size - 1, WV_MAX_SAMPLE).astype(np.int64)]
    b8a, b09 = b8a[index], b09[index]
    wv_nodes = lut.axes["wv"]
    candidates = np.linspace(wv_nodes[0], wv_nodes[-1], WV_CANDIDATES)
    terms = lut.terms_for(sensor, ("B8A", "B09"), aerosol, aot, sza, vza, raa, candidates, o3)
    parts = (terms.path, terms.tg, terms.t_down, terms.t_up, terms.s_alb)
    mismatch = np.empty(candidates.size)
    below = above = 0
    for start in range(0, candidates.size, WV_CHUNK):
        sl = slice(start, start + WV_CHUNK)
        rho = physics.toa_to_boa(b8a[None, :], *(t[0][sl, None] for t in parts))
        diff = physics.boa_to_toa(rho, *(t[1][sl, None] for t in parts)) - b09[None, :]
        mismatch[sl] = np.median(diff, axis=1)  # decreases as water vapour grows
        if start == 0:  # too little B09 predicted even at the driest node: the pixel is drier than it
            below = int((diff[0] < 0).sum())
        if sl.stop >= candidates.size:  # still too much B09 predicted at the wettest node
            above = int((diff[-1] > 0).sum())
    edge = None
    if mismatch[0] < 0 and mismatch[-1] < 0:
        edge = "lower"
    elif mismatch[0] > 0 and mismatch[-1] > 0:
        edge = "upper"
    return WaterVapour(float(_root(candidates, mismatch)), int(index.size), below, above, edge)


def _root(x: np.ndarray, f: np.ndarray) -> float:
    """Where a sampled, monotonic ``f`` crosses zero (clamped to the ends of ``x``)."""
    if f[0] * f[-1] > 0:
        return float(x[0] if abs(f[0]) < abs(f[-1]) else x[-1])
    order = np.argsort(f)
    return float(np.interp(0.0, f[order], x[order]))
