"""Correction methods the pipeline plugs in: the ``Corrector`` protocol, the 6S-table corrector
(``6s-ddv``, ``dos``) and the dispatch from ``--method`` to a corrector.

A corrector gets the 12 L2A bands' TOA of a block and returns their BOA (and optionally an AOT map);
it may ask for ``overlap_above`` and ``overlap`` rows of context above and below. ``ai`` is made by
``eotwin.atmocorr.ai.corrector:make_corrector`` (:data:`AI_FACTORY`) when that package can be imported.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from eotwin.atmocorr.physics import DEFAULT_OZONE, Atmosphere, Geometry, invert_gain, relative_azimuth
from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, Window
from eotwin.sentinel2.bands import L2A_BANDS
from eotwin.sentinel2.metadata import AngleGrid, interpolate_azimuth, interpolate_nodes
from eotwin.sentinel2.products import L1CProduct

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from eotwin.atmocorr.dem import DemOnGrid
    from eotwin.atmocorr.lut import SixSLut
    from eotwin.atmocorr.pipeline import RunOptions
    from eotwin.atmocorr.retrieval import AotRetrieval

AI_FACTORY = "eotwin.atmocorr.ai.corrector:make_corrector"


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
    index: np.ndarray | None = None  # where ``toa``'s pixels lie in the flattened overview


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
        from eotwin.atmocorr import dark_object, dark_vegetation, water_vapour
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
        elif (height := product_height(product)) is not None:
            lut = sea_level.at_pressure(float(pressure_ratio(height[0])))
            info.update({"elevation": round(height[0], 1), "elevation_source": height[1]})
        self._ozone, ozone_source = resolve_ozone(self.ozone, product, fallback=DEFAULT_OZONE, lut=lut)
        means = sample.angles
        geometry = Geometry(  # the scene means, for the scene-wide retrievals
            sza=means["sun_zenith"],
            vza=min(means["view_zenith"], float(lut.axes["vza"][-1])),
            raa=float(relative_azimuth(means["sun_azimuth"], means["view_azimuth"])),
        )
        info.update({"ozone": self._ozone, "ozone_source": ozone_source})
        chosen = None if self.aerosol == "auto" else self.aerosol
        aerosol = chosen or lut.aerosols[0]
        aot, wv = self.aot, self.wv
        water = None
        warnings: list[str] = []
        cams = product.cams if self.aot_estimator == "ddv" else None  # the product's CAMS forecast, for the DDV
        cams_model = cams.aerosol_model if cams is not None else None
        if aot is None:
            common = dict(sensor=product.spacecraft, wv=wv, o3=self._ozone, valid=sample.valid, **geometry.angles())
            if self.aot_estimator == "dark-object":
                result = dark_object.dos_correction(sample.toa, L2A_BANDS, lut, aerosol=aerosol, **common)
            else:
                open_water = _open_water(sample, product, lut, geometry, wv, self._ozone)
                result = dark_vegetation.ddv_correction(sample.toa, L2A_BANDS, lut, aerosol=chosen,
                                                        open_water=open_water, **common)
                if (chosen is None and cams_model is not None and not result.retrieval.water_nir
                        and result.aerosol != cams_model):  # CAMS's species, not Kaufman's ratios, pick the model
                    result = dark_vegetation.ddv_correction(sample.toa, L2A_BANDS, lut, aerosol=cams_model,
                                                            open_water=open_water, **common)
            aot, wv, aerosol, water, retrieval = result.aot, result.wv, result.aerosol, result.water, result.retrieval
            info.update(_retrieval_info(retrieval, self.aot_estimator))
            if cams is not None and retrieval.fallback:
                lo, hi = (float(v) for v in lut.axes["aot"][[0, -1]])
                aot = min(max(cams.aod550, lo), hi)  # the forecast instead of a fixed default
                info["aot_source"] = f"{cams.describe()}, as the dark pixels gave none ({retrieval.source})"
            if retrieval.fallback:
                warnings.append(f"AOT: {info['aot_source'] if cams is not None else retrieval.source}")
            info["aerosol_source"] = (
                "given" if chosen else "dark water NIR/SWIR fit" if retrieval.water_nir
                else cams.describe() if cams_model is not None
                else "blue/red DDV agreement" if retrieval.mismatch and not retrieval.fallback
                else f"default ({'no retrieval chose it' if self.aot_estimator == 'ddv' else 'dos assumes it'})"
            )
        else:
            info["aot_source"] = "given"
            info["aerosol_source"] = "given" if chosen else "default (AOT given)"
            if wv is None:
                water = water_vapour.retrieve_water_vapour(
                    sample.toa[L2A_BANDS.index("B8A")],
                    sample.toa[L2A_BANDS.index("B09")],
                    lut,
                    sensor=product.spacecraft,
                    aerosol=aerosol,
                    aot=aot,
                    o3=self._ozone,
                    valid=sample.valid,
                    default=lut.wv_ref,
                    **geometry.angles(),
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
                **geometry.angles(),
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
            raa = relative_azimuth(angles.sun_azimuth, angles.view_azimuth[band])
            # with a DEM the nodes are at sea level and each pixel is moved to its own pressure in correct()
            table = sea_level if self._dem is not None else lut
            at_nodes = Geometry(sza, vza, raa)
            terms = table.terms_at(product.spacecraft, (band,), Atmosphere(node_aot, wv, self._ozone, aerosol), at_nodes)
            gain = (terms.tg * terms.t_down * terms.t_up)[0].astype(np.float64)
            self._nodes[band] = (terms.path[0].astype(np.float64), gain, terms.s_alb[0].astype(np.float64))
            if self._dem is not None:
                molecules = Atmosphere(0.0, wv, self._ozone, aerosol)
                mol = sea_level.terms_at(product.spacecraft, (band,), molecules, at_nodes)
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
            invert_gain(toa[k], path, gain, s_alb, out=boa[k])  # float32, in place on its temporaries
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
            boa[k] = invert_gain(np.asarray(toa[k], dtype=np.float64), path, gain, s_alb, illumination=factor)
        np.copyto(boa, np.float32(np.nan), where=~valid)
        return boa

    def _scene_elevation(self) -> float:
        if self._scene_z is None:
            raise EotwinError("the 6S corrector was not prepared with a DEM")
        return self._scene_z


OPEN_WATER_MAX_SIDE = 500  # the open-water map is made on an overview at most this wide (1 km is a few pixels)


def _open_water(sample: SceneSample, product: L1CProduct, lut: SixSLut, geometry: Geometry, wv: float | None,
                o3: float) -> np.ndarray | None:
    """Per pixel of ``sample.toa`` (1, n): whether it is open water, far enough from land for the dark-water
    aerosol retrieval; None when the sample keeps no overview (no shores known: no dark water)."""
    import math

    from eotwin.atmocorr import dark_vegetation

    if sample.overview is None or sample.index is None:
        return None
    h, w = sample.overview.shape[1:]
    k = max(1, math.ceil(max(h, w) / OPEN_WATER_MAX_SIDE))
    pixel = abs(float(product.grid.transform.a)) * sample.overview_step * k
    mask = dark_vegetation.open_water_mask(sample.overview[:, ::k, ::k], L2A_BANDS, lut, pixel_size=pixel,
                                           sensor=product.spacecraft, wv=wv, o3=o3, **geometry.angles())
    rows, cols = np.divmod(sample.index, w)
    return mask[rows // k, cols // k][None, :]


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
    if retrieval.water_nir:
        info["dark_water_surface"] = dict(retrieval.water_surface)
        info.update({f"dark_water_b08_{m}": v for m, v in retrieval.water_nir.items()})
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


def product_height(product: L1CProduct) -> tuple[float, str] | None:
    """The ground height (m) the product itself gives when neither ``--elevation`` nor ``--dem`` does, and
    its source: the CAMS forecast's model orography (AUX_CAMSFO ``z``, a coarse tile mean); None without one.

    Coarse, but the Rayleigh error of assuming sea level grows with the height (0.0050 mean RMSE at 1 km for
    ai, benchmarks/atmocorr_altitude.py), so a tile mean is better than none; give --elevation 0 to refuse it.
    """
    cams = product.cams
    if cams is None or cams.surface_height_m is None:
        return None
    height = min(max(float(cams.surface_height_m), -400.0), 8000.0)
    return height, "CAMS AUX_CAMSFO model orography (tile mean of a coarse grid)"


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


# Options only a physical inversion takes: given without --method, they choose 6s-ddv (the network takes no
# fixed atmosphere). --elevation and --dem are not: every method takes the ground's height.
PHYSICAL_ONLY_OPTIONS = {"aot": "--aot", "wv": "--wv"}


def default_method() -> str:
    """``ai``: the network, with its out-of-distribution fallback to 6s-ddv, wins the leave-one-source-out
    evaluation (issue 13 asks for the winner as the default).

    Scenes made with the real 6S code over six surface sources (``benchmarks/atmocorr_accuracy.py --loso``):
    mean RMSE ``ai`` (as the pipeline runs it) 0.0062 against 0.0098 for 6s-ddv (seed 1000), never worse on a source; on
    scenes unlike its training ones its OOD score sends the scene to 6s-ddv, and the product's tags say so.
    """
    return "ai"


def choose_method(options: RunOptions) -> tuple[str, str]:
    """The method of a run and why: ``--method``, options only a physical inversion takes, or the default."""
    if options.method:
        return options.method, "--method"
    given = [flag for name, flag in PHYSICAL_ONLY_OPTIONS.items() if getattr(options, name) is not None]
    if options.aerosol != "auto":
        given.append(f"--aerosol {options.aerosol}")
    if given:
        return "6s-ddv", f"{', '.join(given)} given (options of 6s-ddv, not of the default ai)"
    return default_method(), "default"


def make_corrector(options: RunOptions) -> Corrector:
    method, _ = choose_method(options)
    if method not in METHODS:
        raise EotwinError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    if method != "6s-ddv" and (options.aot is not None or options.wv is not None):
        raise EotwinError("--aot and --wv only apply to --method 6s-ddv")
    if method != "ai" and options.ood_threshold is not None:
        raise EotwinError("--ood-threshold only applies to --method ai")
    return METHODS[method](options)


