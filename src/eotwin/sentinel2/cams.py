"""The CAMS aerosol forecast of a Sentinel-2 L1C (``AUX_DATA/AUX_CAMSFO``, a GRIB file).

L1C products of processing baseline 04.00 and later carry, beside ``AUX_ECMWFT``, the Copernicus Atmosphere
Monitoring Service forecast for the tile: total aerosol optical depth at 550 nm (``aod550``, paramId 210207)
and its split by species (sea salt ``ssaod550`` 210208, dust ``duaod550`` 210209, organic matter
``omaod550`` 210210, black carbon ``bcaod550`` 210211, sulphate ``suaod550`` 210212), and the model's
surface geopotential (``z``, 129). sen2cor reads its AOT from there (``AOT_RETRIEVAL_METHOD`` CAMS in real
L2A metadata). eotwin takes two things from it (:mod:`eotwin.atmocorr.correctors`): the aerosol model,
maritime where sea salt makes most of the optical depth, and the AOT where the scene has no usable dark
pixels, instead of a fixed default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eotwin.errors import EotwinError
from eotwin.sentinel2.ecmwf import grib_fields, read_grib_source

AOD550_PARAM_ID = 210207
SPECIES_PARAM_IDS = {"sea salt": 210208, "dust": 210209, "organic matter": 210210, "black carbon": 210211,
                     "sulphate": 210212}
GEOPOTENTIAL_PARAM_ID = 129
GRAVITY = 9.80665  # m s-2: geopotential (m2 s-2) / g = height (m)
AOD_RANGE = (0.0, 5.0)  # a total AOD at 550 nm beyond this is a unit or decoding error, not weather
MARITIME_SEA_SALT_SHARE = 0.5  # maritime when sea salt makes at least this share of the species' AOD


@dataclass(frozen=True)
class CamsAerosol:
    """The tile means of a CAMS aerosol forecast."""

    aod550: float
    species: dict[str, float]  # AOD at 550 nm per species present in the file
    surface_height_m: float | None = None  # the CAMS model's orography (coarse), when the file has ``z``

    @property
    def sea_salt_share(self) -> float | None:
        """Sea salt's share of the species' total AOD; None without the species split."""
        total = sum(self.species.values())
        return self.species["sea salt"] / total if "sea salt" in self.species and total > 0 else None

    @property
    def aerosol_model(self) -> str | None:
        """The 6S table's model for this air: maritime where sea salt dominates, else continental (dust,
        smoke and pollution are closer to continental among the two); None without the species split."""
        share = self.sea_salt_share
        if share is None:
            return None
        return "maritime" if share >= MARITIME_SEA_SALT_SHARE else "continental"

    def describe(self) -> str:
        share = self.sea_salt_share
        split = f", sea salt {100 * share:.0f} % of it" if share is not None else ""
        return f"CAMS AUX_CAMSFO (AOD 550 nm {self.aod550:.3f}{split})"


# the forecast as tags of an L1C stack (``eotwin atmocorr pairs`` writes them), named after the GRIB shortNames
SPECIES_TAGS = {"sea salt": "CAMS_SSAOD550", "dust": "CAMS_DUAOD550", "organic matter": "CAMS_OMAOD550",
                "black carbon": "CAMS_BCAOD550", "sulphate": "CAMS_SUAOD550"}
AOD_TAG, HEIGHT_TAG = "CAMS_AOD550", "CAMS_SURFACE_HEIGHT"


def stack_tags(cams: CamsAerosol) -> dict[str, str]:
    """The forecast as L1C-stack tags (read back by :func:`from_stack_tags`)."""
    tags = {AOD_TAG: f"{cams.aod550:.5f}", **{SPECIES_TAGS[k]: f"{v:.5f}" for k, v in cams.species.items()}}
    if cams.surface_height_m is not None:
        tags[HEIGHT_TAG] = f"{cams.surface_height_m:.1f}"
    return tags


def from_stack_tags(tags: dict[str, str], name: str) -> CamsAerosol | None:
    """The forecast an L1C stack's tags carry; None without ``CAMS_AOD550``."""
    if AOD_TAG not in tags:
        return None

    def number(key: str) -> float:
        try:
            value = float(tags[key])
        except ValueError:
            raise EotwinError(f"{name}: tag {key}={tags[key]!r} is not a number") from None
        if not np.isfinite(value) or (key != HEIGHT_TAG and value < 0):
            raise EotwinError(f"{name}: tag {key}={tags[key]!r} must be a finite, non-negative optical depth")
        return value

    aod = number(AOD_TAG)
    lo, hi = AOD_RANGE
    if not lo <= aod <= hi:
        raise EotwinError(f"{name}: tag {AOD_TAG}={aod:g} is outside [{lo:g}, {hi:g}]")
    species = {k: number(tag) for k, tag in SPECIES_TAGS.items() if tag in tags}
    return CamsAerosol(aod550=aod, species=species,
                       surface_height_m=number(HEIGHT_TAG) if HEIGHT_TAG in tags else None)


def read_cams(source: bytes | Path, name: str | None = None) -> CamsAerosol:
    """The tile means of an ``AUX_CAMSFO`` GRIB file (bytes or a path): over its grid points and, where the
    file holds several forecast steps, over all of them."""
    data, name = read_grib_source(source, name)
    wanted = (AOD550_PARAM_ID, GEOPOTENTIAL_PARAM_ID, *SPECIES_PARAM_IDS.values())
    fields = grib_fields(data, name, wanted)

    def mean(param: int) -> float | None:
        values = np.concatenate(fields[param]) if param in fields else np.empty(0)
        return float(values.mean()) if values.size else None

    aod = mean(AOD550_PARAM_ID)
    if aod is None:
        raise EotwinError(f"{name}: no total aerosol optical depth at 550 nm (aod550, paramId {AOD550_PARAM_ID}) "
                          "in the GRIB data")
    lo, hi = AOD_RANGE
    if not lo <= aod <= hi:
        raise EotwinError(f"{name}: aerosol optical depth {aod:.3f} at 550 nm is outside [{lo:g}, {hi:g}]")
    species = {k: v for k, p in SPECIES_PARAM_IDS.items() if (v := mean(p)) is not None}
    if any(v < 0 for v in species.values()):
        raise EotwinError(f"{name}: a species' aerosol optical depth is negative")
    z = mean(GEOPOTENTIAL_PARAM_ID)
    return CamsAerosol(aod550=aod, species=species, surface_height_m=None if z is None else z / GRAVITY)
