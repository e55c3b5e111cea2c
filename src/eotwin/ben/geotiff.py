"""Write patches in reBEN's GeoTIFF folder layout.

``BigEarthNet-S2/<tile>/<patch>/<patch>_<band>.tif`` for the S2 bands and, when the source holds Sentinel-1,
``BigEarthNet-S1/<product>/<s1 patch>/<s1 patch>_<VV|VH>.tif`` for the partner named by ``s1_name``.

Used to turn LMDB patches back into the published folder layout, so the GeoTIFF reader and the
loader benchmark run on real pixel values. LMDB values carry no georeferencing, so the files
written from them have no CRS: only the true pixel size (10, 20 or 60 m) in a local frame whose
origin is the patch's upper-left corner. Reading them back gives the same arrays (float32 dB for S1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eotwin.ben.bands import S1_BANDS, S2_BANDS
from eotwin.ben.sources.base import BenSource
from eotwin.ben.sources.geotiff import s1_product_of, tile_of
from eotwin.ben.sources.metadata import METADATA_NAME
from eotwin.errors import EotwinError
from eotwin.io.files import atomic_path, ensure_writable_dir
from eotwin.progress import ProgressReporter, ensure_progress


def _write_band(path: Path, array: np.ndarray) -> None:
    import rasterio
    from rasterio import Affine

    pixel = 1200.0 / array.shape[0]  # 10, 20 or 60 m
    with atomic_path(path) as tmp, rasterio.open(
        tmp, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
        dtype=str(array.dtype), compress="deflate", transform=Affine(pixel, 0, 0, 0, -pixel, 1200.0),
    ) as dataset:
        dataset.write(array, 1)


def export_geotiff(source: BenSource, output: str | Path, patch_ids: Sequence[str] | None = None,
                   progress: ProgressReporter | None = None) -> Path:
    """Write ``patch_ids`` (default: every patch of ``source``, flagged ones included), their S1 partners when
    the source has Sentinel-1 data, and their metadata."""
    output = ensure_writable_dir(Path(output))
    ids = list(patch_ids) if patch_ids is not None else source.patch_ids(include_snow=True, include_cloud=True)
    if not ids:
        raise EotwinError("no patches to export")
    with_s1 = source.has_s1
    progress = ensure_progress(progress)
    with progress.task(f"export {len(ids)} patches as GeoTIFF", total=len(ids)) as task:
        for patch_id in ids:
            folder = ensure_writable_dir(output / "BigEarthNet-S2" / tile_of(patch_id) / patch_id)
            for band, array in source.read(patch_id, S2_BANDS).items():
                _write_band(folder / f"{patch_id}_{band}.tif", array)
            if with_s1:
                s1_name = source.s1_partner(patch_id)
                s1_folder = ensure_writable_dir(output / "BigEarthNet-S1" / s1_product_of(s1_name) / s1_name)
                for band, array in source.read(patch_id, S1_BANDS).items():
                    _write_band(s1_folder / f"{s1_name}_{band}.tif", array)
            task.advance()
    frame = source.metadata.set_index("patch_id", drop=False).loc[ids].reset_index(drop=True)
    with atomic_path(output / METADATA_NAME) as tmp:
        frame.to_parquet(tmp, index=False)
    return output
