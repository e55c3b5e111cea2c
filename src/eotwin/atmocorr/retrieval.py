"""What the scene retrievals (DDV, dark object) share: their results and the 6S-table searches under them (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from eotwin.atmocorr import physics
from eotwin.atmocorr.lut import SixSLut

if TYPE_CHECKING:
    from eotwin.atmocorr.water_vapour import WaterVapour

DEFAULT_AOT = 0.2  # used when no dark vegetation is found (sen2cor falls back to a default visibility)


@dataclass(frozen=True)
class AotRetrieval:
    """The scene's aerosol (AOT at 550 nm and 6S model) and how it was found, for the run info."""

    aot: float
    aerosol: str
    source: str  # "ddv", "ddv, capped by the darkest pixels", "dark water (...)", "default (<why>)", "dark object"
    n_found: int  # dark dense vegetation pixels selected
    n_used: int  # of those, the pixels whose red- and blue-derived AOTs agree (0 when the default is used)
    swir_range: tuple[float, float] | None
    aot_red: float | None = None  # median AOT of the pixels used, from the B04/B12 ratio
    aot_blue: float | None = None  # ... from the B02/B12 ratio
    spread: float | None = None  # interquartile range of the pixels' AOT
    cap: float | None = None  # the highest AOT the scene's darkest blue and red pixels allow
    mismatch: dict[str, float] = field(default_factory=dict)  # |median blue - median red| AOT per model
    excluded: dict[str, int] = field(default_factory=dict)  # pixels left out as cloud, water, shadow
    # source "dark water": the clearest water's surface at the chosen fit, and its B08 surface under each model
    water_surface: dict[str, float] = field(default_factory=dict)
    water_nir: dict[str, float] = field(default_factory=dict)

    @property
    def fallback(self) -> bool:
        return self.source.startswith("default")


@dataclass(frozen=True)
class DdvResult:
    """Output of the DDV baseline: surface reflectance and the atmosphere it estimated."""

    boa: np.ndarray  # (bands, ...) float32
    aot: float
    wv: float
    n_dark: int  # DDV pixels used (0 when the default AOT was used)
    swir_range: tuple[float, float] | None
    fallback: bool
    aerosol: str = "continental"
    retrieval: AotRetrieval | None = None
    water: WaterVapour | None = None  # None when the water vapour was given


def network_aot_replaces(retrieval_source: str) -> bool:
    """Beyond the AI's OOD threshold (scene corrected by 6s-ddv), whether the network's scene AOT replaces
    the retrieval's, the retrieval keeping its aerosol model and water vapour.

    Only an AOT from dense vegetation is replaced. Kaufman's ratios hold for temperate vegetation: over
    other vegetation both ratios fail the same way, red and blue agree and the AOT comes out far too high
    (leave-one-source-out, true AOT 0.05: Major-TOM read 0.29, PROSAIL canopies 0.22), while the network's
    scene AOT still holds there (with the true aerosol model: mean RMSE 0.0015-0.0018 on Major-TOM,
    PROSAIL and BigEarthNet). A dark-water fit (black NIR/SWIR, no surface ratio) and the default (no dark
    pixel: the network's AOT over deserts is near zero whatever the truth) are kept.
    """
    return retrieval_source.startswith("ddv")


def scene_mean_aot(aot_maps: list[np.ndarray]) -> float:
    """The mean AOT of one or more AOT maps of a scene (NaN: no data); NaN when none has a value."""
    values = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in aot_maps])
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def crossings(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Per column of ``f`` (candidates x pixels, decreasing along ``x``): where it crosses zero.

    Linear between the two candidates around the first negative value; clamped to ``x[0]`` where the
    column starts negative and to ``x[-1]`` where it never gets there. One vectorised pass, no loop.
    """
    negative = f < 0
    first = np.argmax(negative, axis=0)
    k = np.clip(first, 1, x.size - 1)
    cols = np.arange(f.shape[1])
    f0, f1 = f[k - 1, cols], f[k, cols]
    step = f0 - f1
    frac = np.clip(np.divide(f0, step, out=np.zeros_like(f0), where=step != 0), 0.0, 1.0)
    out = x[k - 1] + frac * (x[k] - x[k - 1])
    out[negative[0]] = x[0]
    out[~negative.any(axis=0)] = x[-1]
    return out


def aot_candidates(lut: SixSLut) -> np.ndarray:
    nodes = lut.axes["aot"]
    return np.linspace(nodes[0], nodes[-1], round((nodes[-1] - nodes[0]) / 0.01) + 1)


def terms_parts(terms) -> tuple[np.ndarray, ...]:
    return (terms.path, terms.tg, terms.t_down, terms.t_up, terms.s_alb)


def mean_geometry(sza, vza, raa) -> dict[str, float]:
    folded_raa = physics.relative_azimuth(raa, 0.0)  # so 179 and -179 average to 179, not 0
    return {k: float(np.nanmean(v)) for k, v in (("sza", sza), ("vza", vza), ("raa", folded_raa))}
