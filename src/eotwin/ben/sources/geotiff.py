"""reBEN's published GeoTIFF folders: ``BigEarthNet-S2/<tile>/<patch>/`` with ``BigEarthNet-S1/<product>/`` beside."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from eotwin.ben.sources.base import BenSource
from eotwin.ben.sources.metadata import find_metadata, read_metadata
from eotwin.errors import EotwinError


def s1_product_of(s1_name: str) -> str:
    """reBEN S1 product folder of an S1 patch: the name without its trailing ``_<tile>_<row>_<col>``."""
    parts = s1_name.rsplit("_", 3)
    if len(parts) != 4:
        raise EotwinError(f"'{s1_name}' is not a BigEarthNet v2 S1 patch name (<product>_<tile>_<row>_<col>)")
    return parts[0]


def read_tif(path: Path) -> np.ndarray:
    """One band file of a patch as stored (also the v1 folders' reader)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as dataset:
            return dataset.read(1)
    except RasterioIOError as exc:
        if not path.exists():
            raise EotwinError(f"band file {path} not found") from None
        raise EotwinError(f"cannot read {path}: {exc}") from None


def tile_of(patch_id: str) -> str:
    """reBEN tile folder of a patch: the id without its trailing ``_<row>_<col>``."""
    parts = patch_id.rsplit("_", 2)
    if len(parts) != 3:
        raise EotwinError(f"'{patch_id}' is not a BigEarthNet v2 patch id (<tile product>_<row>_<col>)")
    return parts[0]


class GeoTiffSource(BenSource):
    """reBEN ``BigEarthNet-S2/<tile>/<patch>/<patch>_<band>.tif`` folders, with the ``BigEarthNet-S1`` ones beside."""

    kind = "geotiff"

    def __init__(self, root: Path, metadata: Path | None = None) -> None:
        root = Path(root)
        self.s2_root = root / "BigEarthNet-S2" if (root / "BigEarthNet-S2").is_dir() else root
        self.s1_root = root / "BigEarthNet-S1"
        meta, snow_cloud = find_metadata(root, root.parent, explicit=metadata)
        super().__init__(root, read_metadata(meta, snow_cloud))

    def patch_dir(self, patch_id: str) -> Path:
        return self.s2_root / tile_of(patch_id) / patch_id

    def s1_dir(self, s1_name: str) -> Path:
        return self.s1_root / s1_product_of(s1_name) / s1_name

    def has_patch(self, patch_id: str) -> bool:
        return self.patch_dir(patch_id).is_dir()

    @property
    def has_s1(self) -> bool:
        return self.s1_root.is_dir()

    def has_s1_data(self, s1_name: str) -> bool:
        return self.s1_dir(s1_name).is_dir()

    def _read_s2(self, patch_id: str, bands: Sequence[str]) -> dict[str, np.ndarray]:
        folder = self.patch_dir(patch_id)
        if not folder.is_dir():
            raise EotwinError(f"patch '{patch_id}' not found: no folder {folder}")
        return {band: read_tif(folder / f"{patch_id}_{band}.tif") for band in bands}

    def _read_s1(self, patch_id: str, s1_name: str, bands: Sequence[str]) -> dict[str, np.ndarray]:
        folder = self.s1_dir(s1_name)
        return {band: read_tif(folder / f"{s1_name}_{band}.tif") for band in bands}
