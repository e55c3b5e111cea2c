"""Real L1C/L2A pairs as pair folders, and real L1C patches as L1C stacks (I/O edge).

A pair folder ``DIR/<pair_id>/`` holds ``l1c.tif`` (an L1C stack as :func:`~eotwin.sentinel2.products.open_l1c`
reads it), ``l2a.tif`` (an L2A reference stack with an ``SCL`` band on the same grid, as
:func:`~eotwin.sentinel2.products.open_l2a_reference` reads it) and ``pair.json`` (``pair_id``,
``source``, ``l1c_id``, ``l2a_id``, ``datetime``, ``bbox``, ``notes``: every approximation made).
``eotwin atmocorr pairs`` writes such folders from the CDSE; this module makes them from the real
fixtures that carry no metadata (sen2r's Barbellino pairs) and reads them back for the benchmark
``benchmarks/atmocorr_real.py``.

What the fixtures lack is filled here and said in the notes: sun angles from the estimated overpass
time (:mod:`eotwin.atmocorr.solar`), view angles at nadir, and B8A's TOA (absent from sen2r's 10 m
output) approximated by B08's. B8A is then never scored: the reference has no B8A either.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from eotwin.atmocorr.solar import sentinel2_overpass, sun_position
from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, Window
from eotwin.io.files import publish_staged, staging_dir
from eotwin.sentinel2.bands import L2A_BANDS, S2_BANDS
from eotwin.sentinel2.radiometry import QUANTIFICATION

PAIR_FILES = ("l1c.tif", "l2a.tif", "pair.json")
BARBELLINO_DIR = Path("ac") / "pair_sen2r_barbellino"
# sen2r's band order at 10 m (R/fix_envi_format.R; the folder's README): B8A dropped, B10 absent at L2A
BARBELLINO_TOA_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12")
BARBELLINO_BOA_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12")
BARBELLINO_NODATA = 65535
BARBELLINO_CENTRE = (46.066, 10.043)  # lat, lon (README)
# the products sen2r's example was cut from (sen2r's tests and docs name them: datatake start, baseline)
BARBELLINO_DATES = {
    "20170703": {
        "l1c_id": "S2A_MSIL1C_20170703T101021_N0205_R022_T32TNS_20170703T101041",
        "l2a_id": "S2A_MSIL2A_20170703T101021_N0205_R022_T32TNS_20170703T101041",
        "baseline": "02.05",
    },
    "20190723": {
        "l1c_id": "S2A_MSIL1C_20190723T101031_N0208_R022_T32TNS_20190723T121220",
        "l2a_id": "S2A_MSIL2A_20190723T101031_N0208_R022_T32TNS_20190723T121220",
        "baseline": "02.08",
    },
}
EUROSAT_DIR = Path("s2img") / "rico-hdl" / "EuroSAT_MS"
# inside EuroSAT's TIFFs B8A comes last (the README of the fixtures)
EUROSAT_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
EUROSAT_ASSUMED_DATE = date(2016, 7, 1)  # EuroSAT's scenes are 2015-2016 Sentinel-2A; the date of each patch is not kept


@dataclass(frozen=True)
class PairFolder:
    """One pair folder, read back: its files and ``pair.json``."""

    path: Path
    pair_id: str
    l1c: Path
    l2a: Path
    meta: dict


def _bbox(grid: Grid) -> list[float]:
    from eotwin.geo.grid import transform_bounds

    return [round(float(v), 6) for v in transform_bounds(grid.bounds, grid.crs, "EPSG:4326")]


def _centre_lonlat(grid: Grid) -> tuple[float, float]:
    lon0, lat0, lon1, lat1 = _bbox(grid)
    return (lon0 + lon1) / 2, (lat0 + lat1) / 2


def _read(path: Path) -> tuple[np.ndarray, Grid, float | None]:
    from eotwin.io.raster import grid_of, open_raster

    with open_raster(path) as ds:
        return ds.read(), grid_of(ds), ds.nodata


def _nearest_onto(path: Path, grid: Grid) -> np.ndarray:
    """A categorical band (SCL) resampled by nearest neighbour onto ``grid`` (0 = no data)."""
    from rasterio.crs import CRS
    from rasterio.warp import Resampling, reproject

    from eotwin.io.raster import open_raster

    out = np.zeros(grid.shape, dtype=np.uint8)
    with open_raster(path) as ds:
        reproject(
            ds.read(1), out, src_transform=ds.transform, src_crs=ds.crs, src_nodata=0,
            dst_transform=grid.transform, dst_crs=CRS.from_wkt(grid.crs.to_wkt()), dst_nodata=0,
            resampling=Resampling.nearest,
        )
    return out


def to_stack_dn(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """DN as the stacks want them: uint16 with 0 as no data (a pixel with no data in any band is no data in all)."""
    dn = np.asarray(data)
    missing = np.zeros(dn.shape[1:], dtype=bool) if nodata is None else (dn == nodata).any(axis=0)
    out = dn.astype(np.uint16)
    out[:, missing] = 0
    return out


def l1c_stack_bands(dn: np.ndarray, order: Sequence[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Bands of ``dn`` (in ``order``) rearranged to Sentinel-2's order; a missing B8A is B08's DN.

    Returns the stack, its band names and the notes on what was filled (pure).
    """
    if dn.shape[0] != len(order):
        raise EotwinError(f"{dn.shape[0]} bands in the data, {len(order)} named")
    by_name = dict(zip(order, dn, strict=True))
    notes = []
    if "B8A" not in by_name:
        if "B08" not in by_name:
            raise EotwinError("neither B8A nor B08 in the data: no stack can be made")
        by_name["B8A"] = by_name["B08"]
        notes.append("B8A TOA approximated by B08 TOA (the source has no B8A); B8A is never scored, "
                     "and the water-vapour (B09/B8A) and aerosol retrievals that read B8A see B08")
    names = [b for b in S2_BANDS if b in by_name]
    missing = [b for b in L2A_BANDS if b not in by_name]
    if missing:
        raise EotwinError(f"the data lack bands {', '.join(missing)}")
    return np.stack([by_name[b] for b in names]), names, notes


def _write_stack(path: Path, dn: np.ndarray, grid: Grid, names: Sequence[str], tags: dict) -> None:
    from eotwin.io.raster import write_geotiff

    write_geotiff(path, dn, grid, nodata=0, descriptions=list(names), tags={k: str(v) for k, v in tags.items()})


def write_pair(
    out_dir: Path,
    pair_id: str,
    grid: Grid,
    l1c: tuple[np.ndarray, Sequence[str], dict],
    l2a: tuple[np.ndarray, Sequence[str], dict],
    meta: dict,
) -> Path:
    """Write ``out_dir/pair_id`` (l1c.tif, l2a.tif, pair.json) through a staging folder: all or nothing."""
    from eotwin.io.files import write_json_atomic

    target = Path(out_dir) / pair_id
    staging = staging_dir(target)
    try:
        _write_stack(staging / "l1c.tif", *l1c[:1], grid, l1c[1], l1c[2])
        _write_stack(staging / "l2a.tif", *l2a[:1], grid, l2a[1], l2a[2])
        write_json_atomic(staging / "pair.json", {"pair_id": pair_id, **meta})
        publish_staged(staging, target)
        return target
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def barbellino_pairs(fixtures: Path, out_dir: Path) -> list[Path]:
    """The two real sen2r L1C/L2A pairs of Lago del Barbellino as pair folders; returns their paths."""
    folder = Path(fixtures) / BARBELLINO_DIR
    if not folder.is_dir():
        raise EotwinError(f"{folder}: no such folder (the sen2r Barbellino fixture)")
    written = []
    for day, ids in BARBELLINO_DATES.items():
        toa, grid, toa_nodata = _read(folder / f"S2A1C_{day}_022_Barbellino_TOA_10.tif")
        boa, boa_grid, boa_nodata = _read(folder / f"S2A2A_{day}_022_Barbellino_BOA_10.tif")
        if boa_grid != grid:
            raise EotwinError(f"{folder}: TOA and BOA of {day} are not on one grid")
        l1c_dn, l1c_names, notes = l1c_stack_bands(to_stack_dn(toa, toa_nodata), BARBELLINO_TOA_BANDS)
        boa_dn = to_stack_dn(boa, boa_nodata)
        scl = _nearest_onto(folder / f"S2A2A_{day}_022_Barbellino_SCL_10.tif", grid)
        lat, lon = BARBELLINO_CENTRE
        when = sentinel2_overpass(date(int(day[:4]), int(day[4:6]), int(day[6:])), lat, lon)
        sun = sun_position(when, lat, lon)
        notes += [
            f"sensing time {when.isoformat(timespec='seconds')} estimated from Sentinel-2's orbit at the place "
            "(mean local solar time 10:30 at the descending node; about +-7 min across the swath); the product "
            "name's time is the datatake start",
            f"sun zenith {sun.zenith:.2f} and azimuth {sun.azimuth:.2f} deg computed (NOAA solar position) at "
            f"{lat} N, {lon} E at that time; the TOA file carries no angles",
            "view zenith 0 and azimuth 0 deg assumed (nadir): the place's position in the swath is unknown, "
            "the true view zenith lies within 0-11.5 deg",
            "no ozone column known: the correctors use their default (climatology or the network's estimate)",
            "surface elevation from 1862 m (the lake) upwards (Alps): sen2cor corrected with a DEM (pressure, "
            "terrain); no DEM of the place is at hand here, so elevation_m gives the lake's height for "
            "--elevation and the slopes stay uncorrected",
            "SCL at 20 m resampled to 10 m by nearest neighbour; no data 65535 -> 0; reflectance = DN / 10000 "
            "(baseline < 04.00, no offset)",
            "sen2r resampled every band to 10 m (B01, B09, B10 from 60 m; B05-B07, B11, B12 from 20 m)",
        ]
        meta = {
            "source": f"sen2r example data ({folder}): ranghetti/sen2r e47a78d, inst/extdata/out",
            "l1c_id": ids["l1c_id"],
            "l2a_id": ids["l2a_id"],
            "datetime": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "bbox": _bbox(grid),
            "elevation_m": BARBELLINO_ELEVATION[0],
            "elevation_source": BARBELLINO_ELEVATION[1],
            "notes": notes,
        }
        l1c_tags = {
            "SUN_ZENITH": round(sun.zenith, 4),
            "SUN_AZIMUTH": round(sun.azimuth, 4),
            "VIEW_ZENITH": 0.0,
            "VIEW_AZIMUTH": 0.0,
            "SPACECRAFT": "Sentinel-2A",
            "RADIO_ADD_OFFSET": 0,
            "QUANTIFICATION_VALUE": int(QUANTIFICATION),
            "DATETIME": meta["datetime"],
            "PRODUCT_ID": ids["l1c_id"],
            "PROCESSING_BASELINE": ids["baseline"],
            "PROCESSING_LEVEL": "L1C",
        }
        l2a_tags = {"BOA_ADD_OFFSET": 0, "BOA_QUANTIFICATION_VALUE": int(QUANTIFICATION),
                    "PRODUCT_ID": ids["l2a_id"], "PROCESSING_LEVEL": "L2A"}
        l2a_stack = np.concatenate([boa_dn, scl[None].astype(np.uint16)])
        written.append(
            write_pair(out_dir, f"barbellino_{day}", grid, (l1c_dn, l1c_names, l1c_tags),
                       (l2a_stack, [*BARBELLINO_BOA_BANDS, "SCL"], l2a_tags), meta)
        )
    return written


def eurosat_stacks(fixtures: Path, out_dir: Path) -> list[Path]:
    """The three real EuroSAT L1C patches as L1C stacks ``out_dir/<name>/l1c.tif`` with ``patch.json`` (notes)."""
    from eotwin.io.files import write_json_atomic

    folder = Path(fixtures) / EUROSAT_DIR
    paths = sorted(folder.glob("*/*.tif"))
    if not paths:
        raise EotwinError(f"{folder}: no EuroSAT patches")
    written = []
    for path in paths:
        data, grid, nodata = _read(path)
        dn, names, notes = l1c_stack_bands(to_stack_dn(data, nodata), EUROSAT_BANDS)
        lon, lat = _centre_lonlat(grid)
        when = sentinel2_overpass(EUROSAT_ASSUMED_DATE, lat, lon)
        sun = sun_position(when, lat, lon)
        notes += [
            f"acquisition date unknown (EuroSAT keeps none): {EUROSAT_ASSUMED_DATE.isoformat()} assumed, "
            f"overpass {when.isoformat(timespec='seconds')} from Sentinel-2's orbit at {lat:.3f} N, {lon:.3f} E",
            f"sun zenith {sun.zenith:.2f} and azimuth {sun.azimuth:.2f} deg computed for that time",
            "view zenith 0 and azimuth 0 deg assumed (nadir)",
            "Sentinel-2A and processing baseline < 04.00 assumed (EuroSAT, 2017): reflectance = DN / 10000",
        ]
        tags = {
            "SUN_ZENITH": round(sun.zenith, 4), "SUN_AZIMUTH": round(sun.azimuth, 4),
            "VIEW_ZENITH": 0.0, "VIEW_AZIMUTH": 0.0, "SPACECRAFT": "Sentinel-2A",
            "RADIO_ADD_OFFSET": 0, "QUANTIFICATION_VALUE": int(QUANTIFICATION),
            "DATETIME": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "PRODUCT_ID": f"EuroSAT_{path.stem}", "PROCESSING_LEVEL": "L1C",
        }
        target = Path(out_dir) / path.stem
        staging = staging_dir(target)
        try:
            _write_stack(staging / "l1c.tif", dn, grid, names, tags)
            write_json_atomic(staging / "patch.json", {"patch_id": path.stem, "source": str(path),
                                                       "class": path.parent.name, "bbox": _bbox(grid),
                                                       "datetime": tags["DATETIME"], "notes": notes})
            publish_staged(staging, target)
            written.append(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return written


def read_pair(folder: Path) -> PairFolder:
    """A pair folder's files and ``pair.json``; a missing file is a one-line error."""
    folder = Path(folder)
    missing = [n for n in PAIR_FILES if not (folder / n).is_file()]
    if missing:
        raise EotwinError(f"{folder}: not a pair folder ({', '.join(missing)} missing)")
    try:
        meta = json.loads((folder / "pair.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EotwinError(f"{folder / 'pair.json'}: not readable JSON ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict) or "pair_id" not in meta:
        raise EotwinError(f"{folder / 'pair.json'}: no pair_id")
    return PairFolder(folder, str(meta["pair_id"]), folder / "l1c.tif", folder / "l2a.tif", meta)


def list_pairs(directory: Path) -> list[PairFolder]:
    """Every pair folder directly under ``directory`` (those with a ``pair.json``), sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EotwinError(f"{directory}: no such folder")
    pairs = [read_pair(p) for p in sorted(directory.iterdir()) if p.is_dir() and (p / "pair.json").is_file()]
    if not pairs:
        raise EotwinError(f"{directory}: no pair folder (DIR/<pair_id>/pair.json) in it")
    return pairs



# ----------------------------------------------------------------------------- running the methods
TOA_METHOD = "toa"  # "TOA left unchanged", beside every method
AI_RAW = "ai-raw"  # ``ai`` with its out-of-distribution fallback off
FIXED_AOT_PREFIX = "6s-ddv:aot="  # ``6s-ddv`` given this AOT instead of retrieving it
ELEVATION_SUFFIX = ":elevation"  # ``<method>:elevation``: the method given the ground height of the pair's ``elevation_m``
AT_ELEVATION = "6s-ddv" + ELEVATION_SUFFIX
AT_ELEVATION_METHODS = (AT_ELEVATION, "ai" + ELEVATION_SUFFIX)  # what ``atmocorr_real.py --elevation`` adds
BARBELLINO_ELEVATION = (1862.0, "Lago del Barbellino's surface, 1,862 m a.s.l. (Wikipedia, 'Lago del Barbellino'); "
                        "the patch lies on its shore, the ground rises from there")


def benchmark_methods() -> list[str]:
    """Every method the pipeline accepts, plus :data:`AI_RAW` when the pipeline has the AI's fallback."""
    from eotwin.atmocorr.correctors import METHODS
    from eotwin.atmocorr.pipeline import RunOptions

    return [*METHODS, *([AI_RAW] if "ai" in METHODS and "ood_fallback" in RunOptions.model_fields else [])]
NDVI_VEGETATION = 0.4  # a pixel is vegetation when its TOA NDVI reaches this
ISSUE_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")  # issue 13's mean


def scene_aot(result) -> float | None:
    """The scene's AOT at 550 nm of a run: the retrieval's (``aot`` in its atmosphere), else the mean
    of the AOT map it wrote (``ai``); ``None`` when the method has neither (``dos``)."""
    aot = result.atmosphere.get("aot")
    if isinstance(aot, int | float):
        return float(aot)
    if "aot" in result.files:
        from eotwin.io.raster import open_raster

        with open_raster(result.files["aot"]) as ds:
            dn = ds.read(1)
            quant = float(ds.tags().get("AOT_QUANTIFICATION_VALUE", 1000))
        return float(dn[dn > 0].mean() / quant) if (dn > 0).any() else None
    return None


def correct(l1c: Path, method: str, output: Path, reference: Path | None = None, progress=None,
            elevation: float | None = None):
    """One run of the real pipeline (``eotwin atmocorr run``) with ``method``; with ``reference`` the run
    scores itself against it (SCL-clear pixels, :class:`~eotwin.atmocorr.evaluation.metrics.MetricsAccumulator`).
    A method named ``<method>:elevation`` (:data:`ELEVATION_SUFFIX`) needs ``elevation`` (the pair's ground
    height)."""
    from eotwin.atmocorr.pipeline import make_options, run_correction

    extra: dict = {}
    if method.endswith(ELEVATION_SUFFIX):
        if elevation is None:
            raise EotwinError(f"{method}: the pair has no elevation_m in its pair.json")
        method, extra = method.removesuffix(ELEVATION_SUFFIX), {"elevation": float(elevation)}
    if method == AI_RAW:  # the AI's own answer, even where its out-of-distribution score says fall back
        method, extra = "ai", {**extra, "ood_fallback": False}
    elif method.startswith(FIXED_AOT_PREFIX):  # 6s-ddv with a given AOT: how far a constant gets
        try:
            extra = {**extra, "aot": float(method.removeprefix(FIXED_AOT_PREFIX))}
        except ValueError:
            raise EotwinError(f"{method}: expected {FIXED_AOT_PREFIX}<number>") from None
        method = "6s-ddv"
    options = make_options(input=Path(l1c), output=Path(output), method=method, reference=reference, **extra)
    return run_correction(options, progress=progress)


def evaluate_pair(pair: PairFolder, methods: Sequence[str], output: Path, progress=None) -> dict:
    """Every method on one pair: per method the run's metrics against ``l2a.tif`` and its atmosphere,
    and "TOA left unchanged" (the same pixels) under :data:`TOA_METHOD`.

    A method that fails on the pair with a user-level error (e.g. too few valid pixels for a
    retrieval) is recorded as ``{"error": message}``, not dropped.
    """
    report: dict = {"pair_id": pair.pair_id, "meta": pair.meta, "methods": {}}
    for method in methods:
        try:
            result = correct(pair.l1c, method, Path(output) / pair.pair_id / method.replace(":", "_"), pair.l2a,
                             progress, elevation=pair.meta.get("elevation_m"))
        except EotwinError as exc:
            report["methods"][method] = {"error": str(exc)}
            continue
        metrics = result.metrics or {}
        report["methods"][method] = {
            "metrics": metrics["corrected"],
            "aot": scene_aot(result),
            "atmosphere": {k: v for k, v in result.atmosphere.items() if isinstance(v, int | float | str)},
            "l2a": str(Path(output) / pair.pair_id / method.replace(":", "_") / "l2a.tif"),
            "seconds": round(result.seconds, 3),
        }
        report["methods"].setdefault(TOA_METHOD, {"metrics": metrics["toa_unchanged"], "aot": None})
    return report


IN_MEMORY_MAX_PIXELS = 16_000_000  # about 0.8 GB per 12-band float32 array: beyond, read windows


def read_reflectance(pair: PairFolder, product: Path | None = None, window: Window | None = None
                     ) -> dict[str, np.ndarray]:
    """TOA (``toa``), the reference (``ref``, with ``scl``) and optionally a corrected product (``boa``)
    of one pair (or of ``window`` of it) as reflectance arrays (bands of :data:`L2A_BANDS`, NaN where
    absent), in memory: for diagnostics and fine-tuning on small pairs or windows of large ones."""
    from eotwin.sentinel2.products import open_l1c, open_l2a_reference
    from eotwin.sentinel2.reading import BandReader, toa_scaling

    l1c = open_l1c(pair.l1c)
    ref = open_l2a_reference(pair.l2a)
    grid = l1c.grid
    height, width = (window.height, window.width) if window is not None else grid.shape
    if height * width > IN_MEMORY_MAX_PIXELS:
        raise EotwinError(f"{pair.path}: {width} x {height} px is too large to hold in memory; read a window")
    out: dict[str, np.ndarray] = {}
    with BandReader({b: l1c.bands[b] for b in L2A_BANDS}, grid) as reader:
        out["toa"] = reader.read(L2A_BANDS, window, scaling=toa_scaling(l1c, L2A_BANDS))
    shared = [b for b in L2A_BANDS if b in ref.bands]
    with BandReader(ref.bands, grid, categorical=("SCL",)) as reader:
        values = reader.read(shared, window, scaling=[(ref.offsets.get(b, 0.0), ref.quantification) for b in shared])
        out["ref"] = np.full(out["toa"].shape, np.nan, dtype=np.float32)
        out["ref"][[L2A_BANDS.index(b) for b in shared]] = values
        del values
        if "SCL" in ref.bands:
            out["scl"] = np.nan_to_num(reader.read(("SCL",), window)[0], nan=0).astype(np.uint8)
    if product is not None:
        boa = open_l2a_reference(product)
        with BandReader(boa.bands, grid) as reader:
            out["boa"] = reader.read(L2A_BANDS, window, scaling=[(boa.offsets.get(b, 0.0), boa.quantification)
                                                                 for b in L2A_BANDS])
    return out


def ndvi(reflectance: np.ndarray) -> np.ndarray:
    """NDVI from a (12, ...) stack of :data:`L2A_BANDS` (B08, B04); NaN where undefined (pure)."""
    nir, red = reflectance[L2A_BANDS.index("B08")], reflectance[L2A_BANDS.index("B04")]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (nir - red) / (nir + red)


def vegetation_ndvi(toa: np.ndarray, boa: np.ndarray, threshold: float = NDVI_VEGETATION) -> dict:
    """Mean NDVI of the vegetation pixels (TOA NDVI >= threshold, valid in both) before and after a correction."""
    before, after = ndvi(toa), ndvi(boa)
    veg = np.isfinite(before) & np.isfinite(after) & (before >= threshold)
    n = int(veg.sum())
    return {"pixels": n, "threshold": threshold,
            "toa": float(before[veg].mean()) if n else None, "corrected": float(after[veg].mean()) if n else None}


def flat_terrain_mask(data: dict[str, np.ndarray], clear: Sequence[int], tolerance: float = 0.04) -> np.ndarray:
    """Clear pixels where the reference's gain B12 BOA/TOA lies within ``tolerance`` of its mode (pure).

    Why: sen2cor corrects terrain illumination, a factor common to all bands of a pixel that no flat
    correction reproduces; in the SWIR the atmosphere changes little, so a pixel whose B12 gain is far
    from the scene's usual one was re-lit by the terrain correction. A diagnostic only: it selects
    pixels with the reference.
    """
    i = L2A_BANDS.index("B12")
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = data["ref"][i] / data["toa"][i]
    ok = np.isfinite(gain) & np.isin(data.get("scl", np.full(gain.shape, clear[0])), clear)
    if not ok.any():
        return ok
    values = gain[ok]
    centres = np.quantile(values, np.linspace(0.05, 0.95, 91))
    counts = [np.count_nonzero(np.abs(values / c - 1) <= tolerance) for c in centres]
    mode = centres[int(np.argmax(counts))]
    return ok & (np.abs(gain / mode - 1) <= tolerance)
