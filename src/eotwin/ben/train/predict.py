"""Sliding-window prediction over a Sentinel-2 L2A GeoTIFF: per-class probability or label rasters.

The model sees 120 x 120 pixel windows at 10 m, as in BigEarthNet. The output grid has one cell per
``stride`` x ``stride`` input pixels (stride 120: one cell per window, 1.2 km at 10 m; stride 60: 600 m
cells) and each cell holds the prediction of the 120 px window centred on it, so overlapping windows
give a finer map without any averaging rule. The output keeps the input's CRS and is aligned with it
(its transform is the input's, scaled by ``stride``).

Bands are matched by name (the file's band descriptions, or ``--bands``), so any stack holding the
model's bands works, in any order. Pixel values are L2A DN; a processing-baseline >= 04.00 offset
(``BOA_ADD_OFFSET``, -1000) is added first so values match BigEarthNet's pre-04.00 DN, then the
published normalisation of the checkpoint's bands is applied. Windows that are mostly nodata or outside
the image are written as nodata; nodata pixels inside a kept window are set to the band mean.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eotwin.ben.bands import is_s1, normalise, resolve_bands
from eotwin.ben.train.config import PredictOptions
from eotwin.errors import EotwinError
from eotwin.heap import steady_heap
from eotwin.progress import ProgressReporter, ensure_progress

WINDOW = 120
log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    output: Path
    preview: Path | None
    kind: str
    shape: tuple[int, int]
    windows: int
    nodata_windows: int
    cell_size: float
    boa_offset: float
    class_frequency: dict[str, float]
    item: Path | None = None  # the STAC item describing the raster (OUTPUT.json)


def file_band_names(descriptions: tuple[str | None, ...], given: tuple[str, ...] | None) -> tuple[str, ...]:
    """Band names of the file's bands in order: ``given`` or the band descriptions (``B02``, ``B8A``...)."""
    if given is not None:
        names = resolve_bands(list(given))
        if len(names) != len(descriptions):
            raise EotwinError(f"--bands lists {len(names)} bands but the image has {len(descriptions)}")
        return names
    if any(not d for d in descriptions):
        raise EotwinError("the image's bands have no names: pass --bands with the band name of each band in order "
                          "(e.g. B02,B03,B04,B08)")
    try:
        return resolve_bands([str(d).split()[0] for d in descriptions])
    except EotwinError as exc:
        raise EotwinError(f"cannot read band names from the image's descriptions ({exc}): pass --bands") from None


def window_starts(length: int, stride: int) -> np.ndarray:
    """Start offset of the window centred on each output cell along one axis (may be negative)."""
    cells = math.ceil(length / stride)
    return np.arange(cells) * stride + (stride - WINDOW) // 2


def run_predict(options: PredictOptions, progress: ProgressReporter | None = None) -> PredictResult:
    """Predict ``options.image`` with ``options.checkpoint``; write the GeoTIFF (and a PNG preview)."""
    import torch
    from affine import Affine
    from rasterio.windows import Window

    from eotwin.ben.train.pipeline import load_classifier, resolve_device
    from eotwin.geo.grid import Grid
    from eotwin.io.raster import grid_of, open_raster, write_geotiff

    progress = ensure_progress(progress)
    module = load_classifier(options.checkpoint, resolve_device(options.device))
    data = module.hparams["data"]
    bands = tuple(data["bands"])
    radar = [band for band in bands if is_s1(band)]
    if radar:  # the image is L2A DN (offset added, clipped at 0): dB backscatter would be destroyed
        raise EotwinError(f"predict reads a Sentinel-2 L2A image; this model also needs Sentinel-1 band(s) "
                          f"{', '.join(radar)}: use a model trained on S2 bands only")
    classes = tuple(data["classes"])
    thresholds = (module.thresholds.detach().cpu().numpy() if options.thresholds == "tuned"
                  else np.full(len(classes), 0.5, dtype=np.float32))
    with open_raster(options.image) as ds:
        grid = grid_of(ds)
        names = file_band_names(tuple(ds.descriptions), options.bands)
        missing = [b for b in bands if b not in names]
        if missing:
            raise EotwinError(f"the model needs band(s) {', '.join(missing)}; the image has {', '.join(names)}")
        indexes = [names.index(b) + 1 for b in bands]
        offset = options.boa_offset
        if offset is None:
            offset = float(ds.tags().get("BOA_ADD_OFFSET", 0.0))
        nodata = ds.nodata if ds.nodata is not None else 0
        image_datetime = ds.tags().get("DATETIME") or None
        res = grid.res[0]
        if grid.crs.is_projected and not 9.0 <= res <= 11.0:
            log.warning("the model was trained on 10 m pixels; %s has %.1f m pixels", options.image, res)
        stride = options.stride
        rows, cols = window_starts(grid.height, stride), window_starts(grid.width, stride)
        out_grid = Grid(grid.transform @ Affine.scale(stride), len(cols), len(rows), grid.crs)
        probs = np.full((len(classes), len(rows), len(cols)), np.nan, dtype=np.float32)
        col0 = int(cols[0])
        strip_width = int(cols[-1]) + WINDOW - col0
        device = module.device
        nodata_windows = 0
        steady_heap()  # strip after strip of freed tensors would otherwise stay resident (see eotwin.heap)
        with progress.task(f"predict {len(rows) * len(cols)} windows", total=len(rows)) as task, torch.inference_mode():
            for r, row0 in enumerate(rows):
                strip = ds.read(indexes, window=Window(col0, int(row0), strip_width, WINDOW), boundless=True,
                                fill_value=nodata).astype(np.float32)
                valid = (strip != nodata).any(axis=0)
                stack = normalise(np.clip(strip + offset, 0, None), bands, data["resampling"])
                stack[:, ~valid] = 0.0  # nodata -> band mean
                starts = cols - col0
                keep = np.array([valid[:, s:s + WINDOW].mean() >= 1 - options.nodata_fraction for s in starts])
                nodata_windows += int((~keep).sum())
                chosen = np.flatnonzero(keep)
                for b in range(0, len(chosen), options.batch_size):
                    part = chosen[b:b + options.batch_size]
                    batch = np.stack([stack[:, :, starts[c]:starts[c] + WINDOW] for c in part])
                    p = module.predict_proba(torch.from_numpy(batch).to(device)).float().cpu().numpy()
                    probs[:, r, part] = p.T
                task.advance()
    tags: dict[str, Any] = {
        "EOTWIN_MODEL": module.cfg.model.name, "EOTWIN_CHECKPOINT": Path(options.checkpoint).name,
        "BANDS": ",".join(bands), "WINDOW_PX": WINDOW, "STRIDE_PX": stride, "BOA_ADD_OFFSET_APPLIED": offset,
        "CLASS_ORDER": data["class_order"], "THRESHOLDS": ",".join(f"{t:.3f}" for t in thresholds),
        "DESCRIPTION": "BigEarthNet 19-class multi-label prediction; one cell per stride, window centred on the cell",
    }
    valid_cells = ~np.isnan(probs[0])
    if options.kind == "probability":
        write_geotiff(options.output, probs, out_grid, nodata=float("nan"), descriptions=list(classes), tags=tags,
                      cog=True)
    else:
        labels = np.where(valid_cells[None], probs >= thresholds[:, None, None], 255).astype(np.uint8)
        write_geotiff(options.output, labels, out_grid, nodata=255, descriptions=list(classes), tags=tags, cog=True)
    frequency = {c: float((probs[i][valid_cells] >= thresholds[i]).mean()) if valid_cells.any() else 0.0
                 for i, c in enumerate(classes)}
    preview = write_preview(probs, thresholds, classes, Path(options.output).with_suffix(".png"))
    result = PredictResult(output=Path(options.output), preview=preview, kind=options.kind, shape=out_grid.shape,
                           windows=int(len(rows) * len(cols)), nodata_windows=nodata_windows,
                           cell_size=float(out_grid.res[0]), boa_offset=offset, class_frequency=frequency)
    result.item = write_prediction_item(result, out_grid, module.cfg.model.name, Path(options.checkpoint).name,
                                        bands, classes, thresholds, stride, image_datetime)
    return result


def write_prediction_item(result: PredictResult, grid, model: str, checkpoint: str, bands: tuple[str, ...],
                          classes: tuple[str, ...], thresholds: np.ndarray, stride: int, datetime: str | None) -> Path:
    """The STAC item (projection extension) of a prediction raster, beside it as ``OUTPUT.json``; hrefs relative.

    ``datetime``: the image's acquisition time when its tags say it (``DATETIME``), else the time of writing."""
    import datetime as dt

    from pystac.utils import str_to_datetime

    from eotwin import __version__
    from eotwin.io.files import write_json_atomic
    from eotwin.io.stac import COG_MEDIA_TYPE, footprint_lonlat, item_dict

    bbox, geometry = footprint_lonlat(grid)
    try:
        str_to_datetime(datetime or "")
        when, datetime_from = str(datetime), "the image's DATETIME tag (acquisition)"
    except ValueError:  # absent or not RFC 3339: said so in the item, not guessed
        when, datetime_from = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "time of writing"
    assets = {"data": {"href": f"./{result.output.name}", "type": COG_MEDIA_TYPE,
                       "title": f"BigEarthNet {result.kind}, one band per class", "roles": ["data"]}}
    if result.preview is not None:
        assets["preview"] = {"href": f"./{result.preview.name}", "type": "image/png",
                             "title": "Most likely class per cell", "roles": ["overview"]}
    item = item_dict(
        result.output.stem, geometry=geometry, bbox=bbox, datetime=when, extensions=("projection",),
        properties={
            "proj:epsg": grid.crs.to_epsg(), "proj:wkt2": grid.crs.to_wkt(), "proj:shape": [grid.height, grid.width],
            "proj:transform": list(grid.transform)[:6],
            "eotwin:version": __version__, "eotwin:datetime_from": datetime_from, "eotwin:kind": result.kind, "eotwin:classes": list(classes),
            "eotwin:model": model, "eotwin:checkpoint": checkpoint,
            "eotwin:bands": list(bands), "eotwin:window_px": WINDOW, "eotwin:stride_px": stride,
            "eotwin:thresholds": [round(float(t), 6) for t in thresholds],
            "eotwin:boa_offset_applied": result.boa_offset, "eotwin:windows": result.windows,
            "eotwin:nodata_windows": result.nodata_windows,
            "eotwin:class_frequency": {k: round(v, 6) for k, v in result.class_frequency.items()},
        },
        assets=assets,
    )
    target = Path(str(result.output) + ".json")
    write_json_atomic(target, item)
    return target


def write_preview(probs: np.ndarray, thresholds: np.ndarray, classes: tuple[str, ...], target: Path) -> Path:
    """PNG of the most probable class per cell (with a legend of the classes shown)."""
    from eotwin.report.plotting import pyplot

    plt = pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from eotwin.ben.labels import SHORT_NAMES
    from eotwin.io.files import atomic_path

    valid = ~np.isnan(probs[0])
    top = np.where(valid, np.nanargmax(np.where(valid[None], probs, -1), axis=0), -1)
    colours = plt.get_cmap("tab20")(np.arange(len(classes)) % 20)
    cmap = ListedColormap(colours)
    shown = np.ma.masked_where(top < 0, top)
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5, interpolation="nearest")
    present = sorted(set(top[valid].tolist()))
    ax.legend(handles=[Patch(color=colours[i], label=SHORT_NAMES.get(classes[i], classes[i])) for i in present],
              loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="most probable class")
    ax.set(title="BigEarthNet prediction (most probable class per cell)", xticks=[], yticks=[])
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    plt.close(fig)
    return target
