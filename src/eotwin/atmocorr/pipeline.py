"""``eotwin atmocorr run``: L1C product in, L2A-like product out, in row blocks with bounded memory.

read (SAFE / zip / stack) -> estimate the scene's atmosphere on a decimated overview -> correct each
block of rows -> write the L2A-like COG, TCI (GeoTIFF + PNG), optional AOT map and STAC item, and
with a reference L2A the metrics (RMSE, MAE, bias, R2 per band and the spectral angle), also for
"TOA left unchanged" so the gain is visible.

Correction methods are pluggable (:data:`METHODS`): ``6s-ddv`` (6S-table inversion, AOT from dark
dense vegetation and water vapour from B09/B8A, as sen2cor; or a given ``aot``/``wv``), ``dos``
(dark object subtraction) and ``ai`` once ``eotwin.atmocorr.ai:make_corrector`` exists. A corrector
gets the 12 L2A bands' TOA of a block and returns their BOA (and optionally an AOT map); it may ask
for ``overlap_above`` and ``overlap`` rows of context above and below.

Everything is written into a staging folder beside the output and moved into place at the end:
a failed run leaves no partial product.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from eotwin.atmocorr import stac_input
from eotwin.atmocorr.l2a_output import stac_item, write_png_preview
from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, Window
from eotwin.io.cog import BlockWriter
from eotwin.io.files import (
    DiskFullError,
    disk_full_error,
    out_of_space,
    publish_staged,
    staging_dir,
    write_json_atomic,
)
from eotwin.io.raster import gdal_cache_env
from eotwin.progress import ProgressReporter, ensure_progress
from eotwin.sentinel2.bands import L2A_BANDS, SCL_CLEAR, TCI_BANDS
from eotwin.sentinel2.metadata import AngleGrid, interpolate_azimuth, interpolate_nodes
from eotwin.sentinel2.products import L1CProduct, open_l2a_reference
from eotwin.sentinel2.radiometry import BOA_ADD_OFFSET, QUANTIFICATION, boa_to_dn, reflectance_to_tci
from eotwin.sentinel2.reading import BandReader, RawBlock, read_toa, toa_scaling

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from eotwin.atmocorr.baselines import AotRetrieval
    from eotwin.atmocorr.dem import DemOnGrid
    from eotwin.atmocorr.lut import SixSLut

SAMPLE_MAX_SIDE = 1500  # the scene's atmosphere is estimated on an overview at most this many pixels wide
GDAL_CACHE_MB = 128
COG_CACHE_MB = 128  # the COG copy streams (overviews are made during the block pass): no rereading
SAMPLE_MAX_PIXELS = 200_000  # ... from at most this many of its valid pixels
BLOCK_BUDGET_BYTES = 512 * 2**20  # working arrays of one block (about 40 float32 per pixel)
ENCODE_BANDS = 3  # bands per DN encoding step in the writer thread
TILE_ROWS = 256  # blocks start on whole rows of 256 px tiles (stacks, staging files): each tile decoded once
AI_FACTORY = "eotwin.atmocorr.ai:make_corrector"
SPEC_ABS, SPEC_REL = 0.005, 0.05  # L2A accuracy specification: |error| <= 0.005 + 0.05 x reflectance
FILES = {
    "l2a": "l2a.tif",
    "tci": "tci.tif",
    "tci_png": "tci.png",
    "aot": "aot.tif",
    "item": "item.json",
    "evaluation": "evaluation.json",
    "evaluation_png": "evaluation.png",
}


class RunOptions(BaseModel):
    """``eotwin atmocorr run INPUT -o OUTDIR``: shared by the CLI, the demo and a DeltaTwin component."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Path | str | None = None  # SAFE, zip, stack, STAC item JSON file or http(s) URL of an item
    output: Path
    resolution: Literal[10, 20] | None = None  # default: 10 m for SAFE, the stack's own grid for stacks
    method: str | None = None  # default: "ai" when available, else "6s-ddv"
    reference: Path | None = None
    # 6S aerosol model; "auto": 6s-ddv keeps the table's model under which its blue and red AOTs agree best
    aerosol: Literal["auto", "continental", "maritime"] = "auto"
    aot: float | None = Field(None, ge=0.0, le=5.0)  # 6s-ddv: given AOT at 550 nm instead of DDV
    aot_map: bool = True  # 6s-ddv: a smoothed AOT map from the dark pixels where they cover the scene (aotmap.py)
    wv: float | None = Field(None, gt=0.0, le=10.0)  # 6s-ddv: given water vapour (g/cm2) instead of B09/B8A
    # total ozone column (cm-atm) when known, e.g. ECMWF's of the L1C's auxiliary data (sen2cor uses it);
    # else 6s-ddv assumes a climatological 0.33 and ai uses its network's estimate
    ozone: float | None = Field(None, gt=0.0, le=1.0)
    lut: Path | None = None  # the 6S table (default: the committed one)
    # ground height: one elevation (m) for the whole scene, or a DEM (GeoTIFF, metres, any CRS) for the
    # molecular scattering above each pixel and the illumination of slopes (6s-ddv and dos; see terrain.py)
    elevation: float | None = Field(None, ge=-500.0, le=9000.0)
    dem: Path | None = None
    model: Path | None = None  # ai: model file (default: the committed one)
    # ai: the out-of-distribution score above which the scene falls back to 6s-ddv (default: the threshold
    # calibrated with the model's statistics); ood_fallback=False keeps the AI result and only records it
    ood_threshold: float | None = Field(None, gt=0.0)
    ood_fallback: bool = True
    block_rows: int | None = Field(None, ge=1, le=10980)
    # a STAC item input: its id in the STAC API (instead of ``input``), endpoints and S3 keys (else the
    # environment or ~/.netrc, as for live data)
    item_id: str | None = None
    stac_url: str | None = None
    s3_endpoint: str | None = None  # host[:port], or http(s)://host[:port]
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None

    @model_validator(mode="after")
    def _one_input(self) -> RunOptions:
        if (self.input is None) == (self.item_id is None):
            raise ValueError("give either INPUT or --item-id (an item of the STAC API), not both or neither")
        if self.elevation is not None and self.dem is not None:
            raise ValueError("give either --elevation or --dem, not both")
        return self


# ----------------------------------------------------------------------------- correctors
@dataclass
class SceneSample:
    """A decimated view of the whole scene, for scene-level estimates (DDV aerosol, DOS haze)."""

    toa: np.ndarray  # (12, 1, n) float32 TOA of L2A_BANDS at n valid pixels spread over the scene
    valid: np.ndarray  # (1, n) bool
    angles: dict[str, float]  # scene means: sun_zenith, sun_azimuth, view_zenith, view_azimuth
    # the decimated view itself (12, h, w), every ``overview_step``-th pixel, and a reader of full-resolution
    # windows (TOA (12, h, w) of a Window): the AI's OOD score needs cells at full resolution
    overview: np.ndarray | None = None
    overview_step: int = 1
    read_window: Callable[[Window], np.ndarray] | None = None


@dataclass
class BlockResult:
    boa: np.ndarray  # (12, h, w) float32 of L2A_BANDS, NaN = no data
    aot: np.ndarray | None = None  # (h, w) float32 AOT at 550 nm, when the method maps it


class Corrector(Protocol):
    """One correction method. ``prepare`` sees the whole scene once; ``correct`` sees one block."""

    name: str
    overlap: int  # rows of context needed below a block
    overlap_above: int  # and above it (the AI keeps what it computed for earlier blocks)
    gives_aot_map: bool

    def prepare(self, product: L1CProduct, sample: SceneSample) -> dict[str, object]: ...

    def correct(self, toa: np.ndarray, grid: Grid, window: Window, valid: np.ndarray) -> BlockResult: ...


@dataclass
class SixSCorrector:
    """6S-table inversion per pixel, with the scene's AOT (DDV) and water vapour (B09/B8A) or given values.

    The 6S terms are computed at the angle-grid nodes (per band, with that band's viewing angles) and
    interpolated bilinearly to the pixels by two small matrix products per term, so a full tile costs
    a few multiply-adds per pixel and band instead of a multilinear table lookup. ``aot_estimator``
    "dark-object" makes it the ``dos`` method: the AOT from the darkest visible pixels instead of DDV.
    """

    lut_path: Path | None = None
    aerosol: str = "auto"  # "auto": the DDV picks the table's model per scene (continental when it cannot)
    aot: float | None = None
    wv: float | None = None
    ozone: float | None = None  # cm-atm as given (--ozone); None: the product's own, else a climatology
    name: str = "6s-ddv"
    aot_estimator: Literal["ddv", "dark-object"] = "ddv"
    aot_map: bool = True  # ddv: a smoothed AOT map from the dark pixels (aotmap.py) where they cover the scene
    elevation: float | None = None  # metres, the whole scene (the table is taken at that surface pressure)
    dem: Path | None = None  # per-pixel height, slope and aspect (altitude and terrain illumination)
    overlap: int = 0
    overlap_above: int = 0
    gives_aot_map: bool = False
    _nodes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _angles: AngleGrid | None = field(default=None, repr=False)
    _ozone: float = 0.0  # the ozone used for the product being corrected (set by prepare)
    _aerosol: str = "continental"  # the aerosol model in use (set by prepare)
    _aot: float = 0.0
    _aot_nodes: np.ndarray | None = None  # the AOT map at the node grid, when there is one
    _sensor: str = "S2A"
    # with a DEM: the DEM reader, the sea-level molecules-only node terms and t_down per band
    _dem: DemOnGrid | None = field(default=None, repr=False)
    _scene_z: float | None = None  # the DEM's median height over the scene (its holes are corrected at it)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)
    _molecular: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False
    )

    def close(self) -> None:
        """Release the DEM (if one was opened)."""
        self._stack.close()
        self._dem = None

    def prepare(self, product: L1CProduct, sample: SceneSample) -> dict[str, object]:
        from eotwin.atmocorr import baselines
        from eotwin.atmocorr.dem import DemOnGrid
        from eotwin.atmocorr.lut import load_lut
        from eotwin.atmocorr.terrain import pressure_ratio

        sea_level = load_lut(self.lut_path)
        lut = sea_level
        info: dict[str, object] = {}
        if self.elevation is not None:
            lut = sea_level.at_pressure(float(pressure_ratio(self.elevation)))
            info.update({"elevation": round(float(self.elevation), 1), "elevation_source": "given"})
        elif self.dem is not None:
            self._dem = DemOnGrid(self.dem, product.grid, self._stack)
            median, holes = self._dem.scene_elevation()
            self._scene_z = median
            lut = sea_level.at_pressure(float(pressure_ratio(median)))  # the scene-wide retrieval's table
            info.update({"elevation": round(median, 1), "elevation_source": f"DEM median ({Path(self.dem).name})",
                         "terrain": "altitude and illumination per pixel", "dem_holes_share": round(holes, 4)})
            if holes > 0:
                logger.warning("%s: the DEM leaves %.1f %% of the scene without height: those pixels are corrected "
                               "as flat ground at the scene's median elevation", product.product_id, 100 * holes)
        self._ozone, ozone_source = resolve_ozone(self.ozone, product, fallback=baselines.DEFAULT_OZONE, lut=lut)
        means = sample.angles
        geometry = {
            "sza": means["sun_zenith"],
            "vza": min(means["view_zenith"], float(lut.axes["vza"][-1])),
            "raa": float(_raa(means["sun_azimuth"], means["view_azimuth"])),
        }
        info.update({"ozone": self._ozone, "ozone_source": ozone_source})
        chosen = None if self.aerosol == "auto" else self.aerosol
        aerosol = chosen or lut.aerosols[0]
        aot, wv = self.aot, self.wv
        water = None
        warnings: list[str] = []
        if aot is None:
            common = dict(sensor=product.spacecraft, wv=wv, o3=self._ozone, valid=sample.valid, **geometry)
            if self.aot_estimator == "dark-object":
                result = baselines.dos_correction(sample.toa, L2A_BANDS, lut, aerosol=aerosol, **common)
            else:
                result = baselines.ddv_correction(sample.toa, L2A_BANDS, lut, aerosol=chosen, **common)
            aot, wv, aerosol, water, retrieval = result.aot, result.wv, result.aerosol, result.water, result.retrieval
            info.update(_retrieval_info(retrieval, self.aot_estimator))
            if retrieval.fallback:
                warnings.append(f"AOT: {retrieval.source}")
            info["aerosol_source"] = (
                "given" if chosen else "blue/red DDV agreement" if retrieval.mismatch and not retrieval.fallback
                else f"default ({'no retrieval chose it' if self.aot_estimator == 'ddv' else 'dos assumes it'})"
            )
        else:
            info["aot_source"] = "given"
            info["aerosol_source"] = "given" if chosen else "default (AOT given)"
            if wv is None:
                water = baselines.retrieve_water_vapour(
                    sample.toa[L2A_BANDS.index("B8A")],
                    sample.toa[L2A_BANDS.index("B09")],
                    lut,
                    sensor=product.spacecraft,
                    aerosol=aerosol,
                    aot=aot,
                    o3=self._ozone,
                    valid=sample.valid,
                    default=lut.wv_ref,
                    **geometry,
                )
                wv = water.wv
        self._aerosol = aerosol
        info["aerosol"] = aerosol
        angles = product.angles
        aot_map = None
        if self.aot_map and self.aot is None and self.aot_estimator == "ddv" and sample.overview is not None:
            from eotwin.atmocorr.aotmap import ddv_aot_map

            grid = product.grid
            aot_map = ddv_aot_map(
                sample.overview, L2A_BANDS, lut, retrieval, pixel_size=grid.res[0] * sample.overview_step,
                origin=(grid.transform.c, grid.transform.f), sensor=product.spacecraft, wv=wv, o3=self._ozone,
                **geometry,
            )
        if aot_map is not None:
            # the 6S terms go to the map's cell centres (angles resampled there): per pixel the same cost
            angles = angles.resampled(aot_map.x0, aot_map.y0, aot_map.step, aot_map.values.shape)
            self._aot_nodes = aot_map.values
            self.gives_aot_map = True
            info.update(aot_map.summary())
        else:
            self._aot_nodes = None
            self.gives_aot_map = False
            if self.aot_map and self.aot is None and self.aot_estimator == "ddv":
                info["aot_map"] = "none (one AOT for the scene: the DDV fell back or too few cells hold dark pixels)"
        info["wv_source"] = "given" if self.wv is not None else water.source if water is not None else "B09/B8A"
        if water is not None:
            info.update(
                {
                    "wv_edge": water.edge or "none",
                    "wv_pixels": water.pixels,
                    "wv_pixels_below_table": water.below,
                    "wv_pixels_above_table": water.above,
                }
            )
            if (line := water.warning(lut.axes["wv"])) is not None:
                warnings.append(line)
        info.update({"aot": round(float(aot), 5), "wv": round(float(wv), 5)})
        if warnings:
            info["warning"] = "; ".join(warnings)
            for line in warnings:
                logger.warning("%s: %s", product.product_id, line)
        # 6S terms at the angle nodes (or the AOT map's), per band
        sza = angles.sun_zenith
        node_aot = self._aot_nodes if self._aot_nodes is not None else aot
        vza_max = float(lut.axes["vza"][-1])
        for band in L2A_BANDS:
            vza = np.minimum(angles.view_zenith[band], vza_max)  # S2's widest view is at the table's edge
            raa = _raa(angles.sun_azimuth, angles.view_azimuth[band])
            # with a DEM the nodes are at sea level and each pixel is moved to its own pressure in correct()
            table = sea_level if self._dem is not None else lut
            terms = table.terms_for(product.spacecraft, (band,), aerosol, node_aot, sza, vza, raa, wv, self._ozone)
            gain = (terms.tg * terms.t_down * terms.t_up)[0].astype(np.float64)
            self._nodes[band] = (terms.path[0].astype(np.float64), gain, terms.s_alb[0].astype(np.float64))
            if self._dem is not None:
                mol = sea_level.terms_for(product.spacecraft, (band,), aerosol, 0.0, sza, vza, raa, wv, self._ozone)
                self._molecular[band] = (
                    mol.path[0].astype(np.float64),
                    (mol.t_down * mol.t_up)[0].astype(np.float64),
                    mol.s_alb[0].astype(np.float64),
                    terms.t_down[0].astype(np.float64),
                    mol.t_down[0].astype(np.float64),
                )
        self._angles, self._aot, self._sensor = angles, float(aot), product.spacecraft
        return info

    def correct(self, toa: np.ndarray, grid: Grid, window: Window, valid: np.ndarray) -> BlockResult:
        if self._angles is None:
            raise EotwinError("the 6S corrector was not prepared")
        wr, wc = self._angles.weights(grid, window)
        aot_block = interpolate_nodes(self._aot_nodes, wr, wc) if self._aot_nodes is not None else None
        if aot_block is not None:
            aot_block = np.broadcast_to(aot_block, valid.shape)
        if self._dem is not None:
            return BlockResult(self._correct_terrain(toa, window, valid, wr, wc, aot_block), aot_block)
        boa = np.empty_like(toa, dtype=np.float32)
        for k, band in enumerate(L2A_BANDS):
            path, gain, s_alb = (interpolate_nodes(v, wr, wc) for v in self._nodes[band])
            y = toa[k] - path  # in place from here: the same float32 operations, fewer temporaries
            y /= gain
            denominator = s_alb * y
            denominator += 1.0
            np.divide(y, denominator, out=boa[k])
        np.copyto(boa, np.float32(np.nan), where=~valid)  # broadcast over the bands, no gather
        return BlockResult(boa, aot_block)

    def _correct_terrain(
        self, toa: np.ndarray, window: Window, valid: np.ndarray, wr: np.ndarray, wc: np.ndarray,
        aot: np.ndarray | None,
    ) -> np.ndarray:
        """Per pixel: the table moved to the pixel's surface pressure, and the slope's illumination factor."""
        from eotwin.atmocorr import terrain

        block = self._dem.read(window)
        holes = ~np.isfinite(block.elevation)
        elevation = np.where(holes, self._scene_elevation(), block.elevation)
        p = terrain.pressure_ratio(elevation)
        slope = np.where(holes | ~np.isfinite(block.slope), 0.0, block.slope)
        aspect = np.where(np.isfinite(block.aspect), block.aspect, 0.0)
        sza = interpolate_nodes(self._angles.sun_zenith, wr, wc).astype(np.float64)
        saa = interpolate_azimuth(self._angles.sun_azimuth, wr, wc).astype(np.float64)
        cos_i = terrain.cos_incidence(sza, saa, slope, aspect)
        depths = terrain.load_optical_depths()
        boa = np.empty_like(toa, dtype=np.float32)
        for k, band in enumerate(L2A_BANDS):
            path, gain, s_alb = (interpolate_nodes(v, wr, wc).astype(np.float64) for v in self._nodes[band])
            path0, trans0, s_alb0, t_down, t_down0 = (
                interpolate_nodes(v, wr, wc).astype(np.float64) for v in self._molecular[band]
            )
            path = terrain.molecular_scaled(path, path0, p)
            gain = terrain.molecular_scaled(gain, trans0, p, transmittance=True)
            s_alb = terrain.molecular_scaled(s_alb, s_alb0, p)
            t_down = terrain.molecular_scaled(t_down, t_down0, p, transmittance=True)
            tau = depths.tau(self._sensor, band, self._aerosol, self._aot if aot is None else aot, p)
            factor = terrain.illumination_factor(cos_i, sza, tau, t_down, slope)
            boa[k] = terrain.toa_to_boa_tilted(toa[k], path, gain, s_alb, factor)
        np.copyto(boa, np.float32(np.nan), where=~valid)
        return boa

    def _scene_elevation(self) -> float:
        if self._scene_z is None:
            raise EotwinError("the 6S corrector was not prepared with a DEM")
        return self._scene_z


def _retrieval_info(retrieval: AotRetrieval, estimator: str) -> dict[str, object]:
    """The run info of an aerosol retrieval: where the AOT came from and the figures behind it."""
    info: dict[str, object] = {"aot_source": retrieval.source}
    if estimator != "ddv":
        return info
    info.update(
        {
            "ddv_pixels": retrieval.n_used,
            "ddv_pixels_found": retrieval.n_found,
            "ddv_swir_range": list(retrieval.swir_range) if retrieval.swir_range else None,
            "ddv_aot_red": retrieval.aot_red,
            "ddv_aot_blue": retrieval.aot_blue,
            "ddv_aot_spread": retrieval.spread,
            "ddv_aot_cap": None if retrieval.cap is None else round(retrieval.cap, 4),
            "ddv_excluded": dict(retrieval.excluded),
        }
    )
    info.update({f"aerosol_mismatch_{m}": v for m, v in retrieval.mismatch.items()})
    return info


def resolve_ozone(
    given: float | None, product: L1CProduct, fallback: float | None, lut: SixSLut
) -> tuple[float | None, str]:
    """The ozone column to use and where it comes from: the user's (``--ozone``), else the product's own
    (ECMWF's in a SAFE, the ``OZONE`` tag of a stack), else ``fallback`` (a climatology; ``None`` lets the
    AI estimate it).

    A given value outside the 6S table's ozone axis is an error; the product's own (ozone-hole or
    tropical columns can fall outside) is clamped to it, and the source says so.
    """
    lo, hi = (float(v) for v in lut.axes["o3"][[0, -1]])
    if given is not None:
        if not lut.contains("o3", given):
            raise EotwinError(f"--ozone {given:g} cm-atm is outside the 6S table's range [{lo:.2f}, {hi:.2f}]")
        return given, "given"
    if product.ozone is not None:
        if lut.contains("o3", product.ozone):
            return product.ozone, str(product.ozone_source)
        clamped = min(max(product.ozone, lo), hi)
        return clamped, f"{product.ozone_source} ({product.ozone:.3f} clamped to the 6S table's [{lo:.2f}, {hi:.2f}])"
    return fallback, "climatology" if fallback is not None else "network estimate"


def _raa(sun_azimuth: np.ndarray | float, view_azimuth: np.ndarray | float) -> np.ndarray:
    from eotwin.atmocorr.physics import relative_azimuth

    return relative_azimuth(sun_azimuth, view_azimuth)


def _ai_factory(options: RunOptions) -> Corrector:
    module_name, _, func = AI_FACTORY.partition(":")
    if importlib.util.find_spec(module_name) is None:
        raise EotwinError(
            "method 'ai' is not available yet (no trained model in this version); use 6s-ddv or dos"
        )
    return getattr(importlib.import_module(module_name), func)(options)


METHODS: dict[str, Callable[[RunOptions], Corrector]] = {
    "6s-ddv": lambda o: SixSCorrector(lut_path=o.lut, aerosol=o.aerosol, aot=o.aot, wv=o.wv, ozone=o.ozone,
                                      elevation=o.elevation, dem=o.dem, aot_map=o.aot_map),
    "dos": lambda o: SixSCorrector(lut_path=o.lut, aerosol=o.aerosol, wv=o.wv, ozone=o.ozone, name="dos",
                                   aot_estimator="dark-object", elevation=o.elevation, dem=o.dem),
    "ai": _ai_factory,
}


def default_method() -> str:
    """The physical baseline (6S inversion with DDV aerosol) stays the default.

    On the held-out 6S-made benchmark (benchmarks/atmocorr_accuracy.py, BigEarthNet surfaces) the AI
    (``--method ai``) beats it on every band, but on the procedural sample scene, whose surfaces are
    unlike any it was trained on, it is five times less accurate (mean RMSE 0.0126 against DDV's
    0.0026), and it is slower end to end: a user gets the method that holds everywhere unless they ask.
    """
    return "6s-ddv"


def make_corrector(options: RunOptions) -> Corrector:
    method = options.method or default_method()
    if method not in METHODS:
        raise EotwinError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    if method != "6s-ddv" and (options.aot is not None or options.wv is not None):
        raise EotwinError("--aot and --wv only apply to --method 6s-ddv")
    if method == "ai" and (options.elevation is not None or options.dem is not None):
        raise EotwinError("--elevation and --dem apply to --method 6s-ddv and dos: the AI's network knows sea-level"
                          " targets only")
    if method != "ai" and options.ood_threshold is not None:
        raise EotwinError("--ood-threshold only applies to --method ai")
    return METHODS[method](options)


# ----------------------------------------------------------------------------- metrics against a reference
@dataclass
class MetricsAccumulator:
    """Streaming per-band RMSE, MAE, bias, R2 and share within the L2A specification, and the mean
    spectral angle, over valid pixels.

    The specification (the VIIRS/Sentinel-2 L2A objective) is |error| <= 0.005 + 0.05 x reference
    reflectance; ``within_spec`` is that share per band, and its mean over bands at the top.
    """

    bands: tuple[str, ...]
    n: int = 0
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    sam_sum: float = 0.0

    def __post_init__(self) -> None:
        for key in ("d", "ad", "d2", "r", "r2", "spec"):
            self.sums[key] = np.zeros(len(self.bands), dtype=np.float64)

    def add(self, pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> None:
        p = pred[:, mask].astype(np.float64)
        r = ref[:, mask].astype(np.float64)
        if p.shape[1] == 0:
            return
        d = p - r
        self.n += p.shape[1]
        self.sums["d"] += d.sum(axis=1)
        self.sums["ad"] += np.abs(d).sum(axis=1)
        self.sums["d2"] += (d * d).sum(axis=1)
        self.sums["r"] += r.sum(axis=1)
        self.sums["r2"] += (r * r).sum(axis=1)
        # + 1e-6 (a hundredth of a DN): integer DN often land exactly on the limit, float32 rounding must not decide
        self.sums["spec"] += (np.abs(d) <= SPEC_ABS + SPEC_REL * np.maximum(r, 0.0) + 1e-6).sum(axis=1)
        cos = (p * r).sum(axis=0) / np.maximum(np.linalg.norm(p, axis=0) * np.linalg.norm(r, axis=0), 1e-12)
        self.sam_sum += float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).sum())

    def result(self) -> dict[str, object]:
        if self.n == 0:
            return {"pixels": 0, "bands": {}}
        n = self.n
        mean_r = self.sums["r"] / n
        sst = self.sums["r2"] - n * mean_r**2
        bands = {}
        for i, b in enumerate(self.bands):
            bands[b] = {
                "rmse": float(math.sqrt(self.sums["d2"][i] / n)),
                "mae": float(self.sums["ad"][i] / n),
                "bias": float(self.sums["d"][i] / n),
                "r2": float(1.0 - self.sums["d2"][i] / sst[i]) if sst[i] > 0 else None,
                "within_spec": float(self.sums["spec"][i] / n),
            }
        return {
            "pixels": n,
            "bands": bands,
            "mean_rmse": float(np.mean([v["rmse"] for v in bands.values()])),
            "within_spec": float(np.mean([v["within_spec"] for v in bands.values()])),
            "sam_degrees": self.sam_sum / n,
        }


# ----------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class RunResult:
    output_dir: Path
    files: dict[str, Path]
    method: str
    atmosphere: dict[str, object]
    metrics: dict[str, object] | None
    seconds: float
    megapixels: float
    product: L1CProduct


def make_options(**kwargs: object) -> RunOptions:
    """:class:`RunOptions` from plain values; a validation error is a one-line :class:`EotwinError`."""
    from eotwin.options import validated

    return validated(RunOptions, **kwargs)


def auto_block_rows(width: int) -> int:
    """Rows per block: within the memory budget, whole 256-row tiles when there is room for one.

    Reading, correcting and writing overlap (one block read ahead, one being written), so about three
    blocks are alive at once: 256 rows of a full tile are 0.45 GB of working arrays at most.
    """
    rows = int(np.clip(BLOCK_BUDGET_BYTES // (max(width, 1) * 4 * 40), 16, 1024))
    return rows - rows % TILE_ROWS if rows >= TILE_ROWS else rows


def read_scene_sample(
    reader: BandReader, product: L1CProduct, max_side: int = SAMPLE_MAX_SIDE, block_rows: int = 256
) -> SceneSample:
    """The 12 L2A bands' TOA on a decimated view of at most ``max_side`` pixels per side.

    SAFE bands (JPEG 2000, one file each) are read decimated, from their resolution levels; a stack
    (one pixel-interleaved file, usually without overviews, where GDAL's decimated reads are very slow)
    is read in row blocks, keeping every k-th row and column.
    """
    grid = product.grid
    step = max(1, math.ceil(max(grid.width, grid.height) / max_side))
    if step == 1:
        toa = read_toa(reader, product, L2A_BANDS)
    elif product.kind == "stack":
        rows = max(step, block_rows - block_rows % step)
        parts = [read_toa(reader, product, L2A_BANDS, window, step=step) for window in grid.row_blocks(rows)]
        toa = np.concatenate(parts, axis=1)
    else:
        shape = (max(1, grid.height // step), max(1, grid.width // step))
        toa = read_toa(reader, product, L2A_BANDS, out_shape=shape, resampling="nearest")
    valid = np.isfinite(toa).all(axis=0)
    if not valid.any():
        raise EotwinError(f"{product.source}: no valid pixel (every band is no data)")
    # the estimators work on pixel statistics (percentiles, medians) and hold arrays of
    # candidates x pixels: an evenly spread subset keeps their memory bounded
    flat = np.flatnonzero(valid)
    if flat.size > SAMPLE_MAX_PIXELS:
        flat = flat[np.linspace(0, flat.size - 1, SAMPLE_MAX_PIXELS).astype(np.int64)]
    pixels = toa.reshape(toa.shape[0], -1)[:, flat]
    return SceneSample(pixels[:, None, :], np.ones((1, flat.size), dtype=bool), product.angles.means(), toa, step,
                       functools.partial(read_toa, reader, product, L2A_BANDS))


def run_correction(options: RunOptions, progress: ProgressReporter | None = None) -> RunResult:
    """Correct one L1C product; see the module docstring for what is written."""
    progress = ensure_progress(progress)
    started = time.perf_counter()
    product = _open_input(options)
    corrector = make_corrector(options)
    method = corrector.name
    release = getattr(corrector, "close", None)  # a corrector holding a file (the DEM) lets it go at the end
    reference = (
        open_l2a_reference(options.reference, round(product.resolution)) if options.reference else None
    )
    grid = product.grid
    block_rows = options.block_rows or auto_block_rows(grid.width)
    target = Path(options.output)
    staging = staging_dir(target)
    writers: list[BlockWriter] = []
    try:
        with contextlib.ExitStack() as stack:
            import rasterio

            if release is not None:
                stack.callback(release)

            # GDAL's default block cache (5 % of RAM) would grow past the memory goal on a full tile
            # (an integer is bytes for rasterio; GDAL_NUM_THREADS decodes the tiles of one read in parallel)
            stack.enter_context(
                gdal_cache_env(GDAL_CACHE_MB, GDAL_NUM_THREADS="ALL_CPUS")
            )
            stack.enter_context(stac_input.product_env(product))  # S3/HTTP access for an item's bands
            reader = stack.enter_context(BandReader({b: product.bands[b] for b in L2A_BANDS}, grid,
                                                    **stac_input.read_retries(product)))
            ref_reader = (
                stack.enter_context(BandReader(reference.bands, grid, categorical=("SCL",)))
                if reference
                else None
            )
            with progress.task("estimating the atmosphere", total=1) as task:
                sample = read_scene_sample(reader, product, block_rows=block_rows)
                atmosphere = corrector.prepare(product, sample)
                method = corrector.name  # the ai method may fall back to 6s-ddv (out of distribution)
                del sample
                task.advance()
            tags = {
                "BOA_ADD_OFFSET": BOA_ADD_OFFSET,
                "BOA_QUANTIFICATION_VALUE": int(QUANTIFICATION),
                "PROCESSING_LEVEL": "L2A",
                "SPACECRAFT": {"S2A": "Sentinel-2A", "S2B": "Sentinel-2B", "S2C": "Sentinel-2C"}[
                    product.spacecraft
                ],
                "SOURCE_PRODUCT": product.product_id,
                "ATMOCORR_METHOD": method,
                **{
                    f"ATMOCORR_{k.upper()}": v
                    for k, v in atmosphere.items()
                    if isinstance(v, int | float | str)
                },
            }
            l2a = BlockWriter(
                staging / FILES["l2a"],
                grid,
                len(L2A_BANDS),
                "uint16",
                nodata=0,
                descriptions=L2A_BANDS,
                tags=tags,
            )
            writers.append(l2a)
            tci = BlockWriter(
                staging / FILES["tci"],
                grid,
                3,
                "uint8",
                nodata=0,
                descriptions=("red", "green", "blue"),
                tags={"SOURCE_PRODUCT": product.product_id},
                photometric="RGB",
            )
            writers.append(tci)
            aot_writer = None
            if corrector.gives_aot_map:
                aot_writer = BlockWriter(
                    staging / FILES["aot"],
                    grid,
                    1,
                    "uint16",
                    nodata=0,
                    descriptions=("AOT",),
                    tags={"AOT_QUANTIFICATION_VALUE": 1000},
                )
                writers.append(aot_writer)
            acc = MetricsAccumulator(tuple(b for b in L2A_BANDS if reference and b in reference.bands))
            acc_toa = MetricsAccumulator(acc.bands)
            rgb_index = [L2A_BANDS.index(b) for b in TCI_BANDS]
            windows = list(grid.row_blocks(block_rows))

            # rasterio's options are global when set from the main thread, thread-local otherwise
            worker_env = (
                contextlib.nullcontext
                if threading.current_thread() is threading.main_thread()
                else functools.partial(rasterio.Env, **rasterio.env.getenv())
            )

            scaling = toa_scaling(product, L2A_BANDS)

            def read_block(window: Window) -> tuple[Window, RawBlock]:
                read_win = _with_overlap(window, corrector.overlap_above, corrector.overlap, grid.height)
                with worker_env():  # the block read ahead is held as stored (uint16), not as float32
                    return read_win, reader.read_dn(L2A_BANDS, read_win)

            def encode_block(
                boa: np.ndarray, valid: np.ndarray, aot: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
                """L2A DN, TCI and AOT DN of a block: the writer thread then holds integers, not float32."""
                dn = np.empty(boa.shape, dtype=np.uint16)
                for b in range(0, boa.shape[0], ENCODE_BANDS):  # small float32 temporaries
                    dn[b : b + ENCODE_BANDS] = boa_to_dn(boa[b : b + ENCODE_BANDS], valid)
                tci_dn = reflectance_to_tci(boa[rgb_index])
                aot_dn = None
                if aot_writer is not None and aot is not None:
                    aot_dn = np.clip(np.rint(np.nan_to_num(aot) * 1000), 1, 65535).astype(np.uint16)
                    aot_dn[~valid | ~np.isfinite(aot)] = 0
                return dn, tci_dn, aot_dn

            def write_block(
                window: Window, dn: np.ndarray, tci_dn: np.ndarray, aot_dn: np.ndarray | None
            ) -> None:
                with worker_env():
                    l2a.write(dn, window)
                    tci.write(tci_dn, window)
                    if aot_writer is not None and aot_dn is not None:
                        aot_writer.write(aot_dn, window)

            # GDAL releases the GIL: block i+1 is read and block i-1 written while block i is corrected;
            # the block read ahead stays uint16 and the block being written is already encoded
            with (
                ThreadPoolExecutor(1, thread_name_prefix="atmocorr-read") as read_pool,
                ThreadPoolExecutor(1, thread_name_prefix="atmocorr-write") as write_pool,
                progress.task(f"correcting ({method})", total=len(windows)) as task,
            ):
                next_read = read_pool.submit(read_block, windows[0])
                writing: Future | None = None
                for i, window in enumerate(windows):
                    read_win, raw = next_read.result()
                    if i + 1 < len(windows):
                        next_read = read_pool.submit(read_block, windows[i + 1])
                    toa = reader.to_float(raw, scaling)
                    del raw
                    valid = np.isfinite(toa).all(axis=0)
                    result = corrector.correct(toa, grid, read_win, valid)
                    inner = slice(
                        window.row_off - read_win.row_off, window.row_off - read_win.row_off + window.height
                    )
                    boa, toa, valid = result.boa[:, inner], toa[:, inner], valid[inner]
                    aot = result.aot[inner] if result.aot is not None else None
                    encoded = encode_block(boa, valid, aot)
                    if writing is not None:
                        writing.result()  # at most one block waits for the writer: memory stays bounded
                    writing = write_pool.submit(write_block, window, *encoded)
                    del result, encoded
                    if reference is not None and ref_reader is not None:
                        _accumulate(acc, acc_toa, reference, ref_reader, window, boa, toa, valid)
                    del boa, toa, valid, aot  # before the next block is converted
                    task.advance()
                if writing is not None:
                    writing.result()
            with (
                gdal_cache_env(COG_CACHE_MB),
                progress.task("writing cloud-optimised GeoTIFFs", total=len(writers)) as task,
            ):
                while writers:
                    writers.pop(0).finish()
                    task.advance()
            files = {"l2a": staging / FILES["l2a"], "tci": staging / FILES["tci"]}
            write_png_preview(files["tci"], staging / FILES["tci_png"])
            files["tci_png"] = staging / FILES["tci_png"]
            if aot_writer is not None:
                files["aot"] = staging / FILES["aot"]
            metrics = None
            if reference is not None:
                metrics = {
                    "reference": str(reference.source),
                    "method": method,
                    "valid_pixels": "finite in both, SCL in " + ",".join(map(str, SCL_CLEAR))
                    if "SCL" in reference.bands
                    else "finite in both (no SCL)",
                    "corrected": acc.result(),
                    "toa_unchanged": acc_toa.result(),
                }
                if metrics["corrected"]["pixels"] == 0:
                    raise EotwinError(
                        f"{reference.source}: no valid pixel shared with the input (check its grid)"
                    )
                write_json_atomic(staging / FILES["evaluation"], metrics)
                files["evaluation"] = staging / FILES["evaluation"]
                write_evaluation_png(
                    staging / FILES["evaluation_png"], metrics, files["l2a"], ref_reader, reference
                )
                files["evaluation_png"] = staging / FILES["evaluation_png"]
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        item = stac_item(
            product,
            {k: v for k, v in files.items()},
            method=method,
            atmosphere=atmosphere,
            item_dir=staging,
            created=created,
        )
        write_json_atomic(staging / FILES["item"], item)
        published = {n: target / n for n in publish_staged(staging, target, stale=FILES.values())}
    except BaseException as exc:
        full = out_of_space(exc, staging) if isinstance(exc, Exception) else None  # before the staging goes
        for w in writers:
            w.abort()
        shutil.rmtree(staging, ignore_errors=True)
        if full and not isinstance(exc, DiskFullError):
            raise disk_full_error(target, full) from None
        raise
    names = {v: k for k, v in FILES.items()}
    out_files = {names[n]: p for n, p in published.items() if n in names}
    return RunResult(
        target,
        out_files,
        method,
        atmosphere,
        metrics,
        time.perf_counter() - started,
        grid.width * grid.height / 1e6,
        product,
    )


def _open_input(options: RunOptions) -> L1CProduct:
    """The L1C product of ``options.input`` (or ``item_id``); remote access resolved from the options."""
    secret = lambda s: s.get_secret_value() if s is not None else None  # noqa: E731
    access = stac_input.RemoteAccess.resolve(
        stac_url=options.stac_url, s3_endpoint=options.s3_endpoint,
        s3_access_key=secret(options.s3_access_key), s3_secret_key=secret(options.s3_secret_key),
    )
    if options.item_id is not None:
        return stac_input.open_item_id(options.item_id, options.resolution, access)
    return stac_input.open_input(options.input, options.resolution, access=access)


def _with_overlap(window: Window, above: int, below: int, height: int) -> Window:
    if above <= 0 and below <= 0:
        return window
    top = max(0, window.row_off - above)
    bottom = min(height, window.row_off + window.height + below)
    return Window(top, window.col_off, bottom - top, window.width)


def _accumulate(
    acc: MetricsAccumulator,
    acc_toa: MetricsAccumulator,
    reference,
    ref_reader: BandReader,
    window: Window,
    boa: np.ndarray,
    toa: np.ndarray,
    valid: np.ndarray,
) -> None:
    bands = acc.bands
    dn = ref_reader.read(bands, window)
    offsets = np.array([reference.offsets.get(b, 0.0) for b in bands], dtype=np.float32)[:, None, None]
    ref = (dn + offsets) / np.float32(reference.quantification)
    mask = valid & np.isfinite(ref).all(axis=0)
    if "SCL" in reference.bands:
        scl = ref_reader.read(("SCL",), window)[0]
        mask &= np.isin(np.nan_to_num(scl, nan=0).astype(np.int64), SCL_CLEAR)
    idx = [L2A_BANDS.index(b) for b in bands]
    acc.add(boa[idx], ref, mask)
    acc_toa.add(toa[idx], ref, mask)


def write_evaluation_png(
    path: Path, metrics: Mapping[str, object], l2a_path: Path, ref_reader: BandReader | None, reference
) -> Path:
    """Per-band RMSE and bias (corrected vs TOA unchanged) and the two products side by side in true colour."""
    from eotwin.report.plotting import pyplot

    plt = pyplot()

    from eotwin.io.files import atomic_path
    from eotwin.io.raster import open_raster

    corrected = metrics["corrected"]["bands"]  # type: ignore[index]
    toa = metrics["toa_unchanged"]["bands"]  # type: ignore[index]
    bands = list(corrected)
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    x = np.arange(len(bands))
    for ax, key, label in ((axes[1, 0], "rmse", "RMSE"), (axes[1, 1], "bias", "bias (product - reference)")):
        ax.bar(x - 0.2, [toa[b][key] for b in bands], 0.4, label="TOA unchanged", color="#bbbbbb")
        ax.bar(
            x + 0.2, [corrected[b][key] for b in bands], 0.4, label=str(metrics["method"]), color="#1f77b4"
        )
        ax.set_xticks(x, bands, rotation=45)
        ax.set_ylabel(f"{label} (reflectance)")
        ax.axhline(0, color="k", lw=0.5)
        ax.legend()
    with open_raster(l2a_path) as ds:
        scale = max(1.0, max(ds.width, ds.height) / 600)
        shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        idx = [L2A_BANDS.index(b) + 1 for b in TCI_BANDS]
        dn = ds.read(idx, out_shape=(3, *shape)).astype(np.float32)
    pred = np.where(dn > 0, (dn + BOA_ADD_OFFSET) / QUANTIFICATION, np.nan)
    axes[0, 0].imshow(_rgb_for_plot(pred))
    axes[0, 0].set_title(f"corrected ({metrics['method']})")
    if ref_reader is not None and all(b in reference.bands for b in TCI_BANDS):
        rdn = ref_reader.read(TCI_BANDS, out_shape=shape)
        offs = np.array([reference.offsets.get(b, 0.0) for b in TCI_BANDS], dtype=np.float32)[:, None, None]
        axes[0, 1].imshow(_rgb_for_plot((rdn + offs) / np.float32(reference.quantification)))
    axes[0, 1].set_title("reference L2A")
    for ax in axes[0]:
        ax.set_axis_off()
    c, t = metrics["corrected"], metrics["toa_unchanged"]  # type: ignore[index]
    fig.suptitle(
        f"mean RMSE {c['mean_rmse']:.4f} (TOA unchanged {t['mean_rmse']:.4f}), "  # type: ignore[index]
        f"SAM {c['sam_degrees']:.2f} deg, {c['pixels']} pixels"
    )  # type: ignore[index]
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def _rgb_for_plot(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(np.moveaxis(rgb, 0, -1), nan=0.0) / TCI_SATURATION_PLOT, 0.0, 1.0)


TCI_SATURATION_PLOT = 0.25
