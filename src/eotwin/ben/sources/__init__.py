"""Open any BigEarthNet source by what its folder holds: published GeoTIFFs, LMDB, v1 folders or our store.

* ``geotiff``: reBEN's ``BigEarthNet-S2/<tile>/<patch>/<patch>_<band>.tif`` and
  ``BigEarthNet-S1/<product>/<s1 patch>/<s1 patch>_<VV|VH>.tif`` plus ``metadata.parquet``
  (and ``metadata_for_patches_with_snow_cloud_or_shadow.parquet`` when present).
* ``lmdb``: the rico-hdl encoder's LMDB (the format ConfigILM reads): key = patch id, value = a
  safetensors dict ``{band: array}``: S2 patches (uint16 at native resolution) under their S2 id, S1 patches
  (VV, VH float32 dB at 120 px) under their S1 name; both share the database.
* ``v1``: BigEarthNet v1 patch folders ``<patch>/<patch>_<band>.tif`` with ``<patch>_labels_metadata.json``
  (43 CORINE labels, mapped to the 19 classes); official split CSVs are used when found beside them.
* ``store``: our training store (see :mod:`eotwin.ben.store`), an LMDB in the rico-hdl layout plus
  ``metadata.parquet`` and a manifest.

Every source returns native-resolution arrays with the dtype on disk, so the same patch reads
identically from all of them; resampling and normalisation happen later (:mod:`eotwin.ben.bands`).

The interface is :class:`~eotwin.ben.sources.base.BenSource`; S1 pairing is checked there.
"""

from __future__ import annotations

from pathlib import Path

from eotwin.ben.sources.base import BenSource
from eotwin.ben.sources.geotiff import GeoTiffSource
from eotwin.ben.sources.lmdb_source import MANIFEST_NAME, LmdbSource, StoreSource
from eotwin.ben.sources.metadata import METADATA_NAME
from eotwin.ben.sources.v1 import V1Source
from eotwin.errors import EotwinError


def open_source(path: str | Path, metadata: str | Path | None = None, allow_incomplete: bool = False) -> BenSource:
    """Open any BigEarthNet source by looking at what the folder holds."""
    path = Path(path)
    meta = Path(metadata) if metadata is not None else None
    if not path.exists():
        raise EotwinError(f"{path} not found")
    if path.is_file():
        raise EotwinError(f"{path} is a file: give the dataset folder, the LMDB folder or the store folder")
    if (path / MANIFEST_NAME).is_file():
        return StoreSource(path, allow_incomplete=allow_incomplete)
    if (path / "data.mdb").is_file():
        return LmdbSource(path, meta)
    lmdb_dirs = sorted(p for p in path.iterdir() if p.is_dir() and (p / "data.mdb").is_file())
    if (path / "BigEarthNet-S2").is_dir():
        return GeoTiffSource(path, meta)
    if len(lmdb_dirs) == 1:
        return LmdbSource(lmdb_dirs[0], meta or _metadata_in(path))
    for child in sorted(path.iterdir()):
        if child.is_dir():
            if (child / f"{child.name}_labels_metadata.json").is_file():
                return V1Source(path)
            grand = next((g for g in sorted(child.iterdir()) if g.is_dir()), None)
            if grand is not None and any(grand.glob(f"{grand.name}_B*.tif")):
                return GeoTiffSource(path, meta)
            break
    raise EotwinError(f"{path} is not a BigEarthNet source (GeoTIFF folders, LMDB, v1 folders or an eotwin store)")


def _metadata_in(path: Path) -> Path | None:
    candidate = path / METADATA_NAME
    return candidate if candidate.is_file() else None
