"""``eotwin atmocorr run``: L1C product in, L2A-like product out, in row blocks with bounded memory.

read (SAFE / zip / stack) -> estimate the scene's atmosphere on a decimated overview -> correct each
block of rows -> write the L2A-like COG, TCI (GeoTIFF + PNG), optional AOT map and STAC item, and
with a reference L2A the metrics (RMSE, MAE, bias, R2 per band and the spectral angle), also for
"TOA left unchanged" so the gain is visible.

Correction methods are pluggable (:data:`eotwin.atmocorr.correctors.METHODS`): ``6s-ddv`` (6S-table
inversion, AOT from dark dense vegetation and water vapour from B09/B8A, as sen2cor; or a given
``aot``/``wv``), ``dos`` (dark object subtraction) and ``ai``; see :mod:`eotwin.atmocorr.correctors`.
The metrics against a reference are :mod:`eotwin.atmocorr.evaluation`'s.

Everything is written into a staging folder beside the output and moved into place at the end:
a failed run leaves no partial product.
"""

from __future__ import annotations

import contextlib
import functools
import math
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from eotwin.atmocorr import stac_input
from eotwin.atmocorr.correctors import SceneSample, choose_method, make_corrector
from eotwin.atmocorr.evaluation.metrics import MetricsAccumulator
from eotwin.atmocorr.evaluation.reference import accumulate_reference, write_evaluation_png
from eotwin.atmocorr.l2a_output import stac_item, write_png_preview
from eotwin.errors import EotwinError
from eotwin.geo.grid import Window
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
from eotwin.sentinel2.products import L1CProduct, open_l2a_reference
from eotwin.sentinel2.radiometry import BOA_ADD_OFFSET, QUANTIFICATION, boa_to_dn, reflectance_to_tci
from eotwin.sentinel2.reading import BandReader, RawBlock, read_toa, toa_scaling

SAMPLE_MAX_SIDE = 1500  # the scene's atmosphere is estimated on an overview at most this many pixels wide
GDAL_CACHE_MB = 128
COG_CACHE_MB = 128  # the COG copy streams (overviews are made during the block pass): no rereading
SAMPLE_MAX_PIXELS = 200_000  # ... from at most this many of its valid pixels
BLOCK_BUDGET_BYTES = 512 * 2**20  # working arrays of one block (about 40 float32 per pixel)
ENCODE_BANDS = 3  # bands per DN encoding step in the writer thread
TILE_ROWS = 256  # blocks start on whole rows of 256 px tiles (stacks, staging files): each tile decoded once
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
    method: str | None = None  # default: "ai" (6s-ddv when --aot, --wv or --aerosol is given)
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
                       functools.partial(read_toa, reader, product, L2A_BANDS), index=flat)


def run_correction(options: RunOptions, progress: ProgressReporter | None = None) -> RunResult:
    """Correct one L1C product; see the module docstring for what is written."""
    progress = ensure_progress(progress)
    started = time.perf_counter()
    product = _open_input(options)
    corrector = make_corrector(options)
    method, method_source = corrector.name, choose_method(options)[1]
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
                atmosphere = {**corrector.prepare(product, sample), "method_source": method_source}
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
                        accumulate_reference(acc, acc_toa, reference, ref_reader, window, boa, toa, valid)
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
