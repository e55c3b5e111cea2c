"""BigEarthNet test fixtures: the real 24-patch LMDB turned into the other source kinds once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ben_lmdb(ben_mock_dir: Path):
    from eotwin.ben.sources import open_source

    with open_source(ben_mock_dir) as source:
        yield source


@pytest.fixture(scope="session")
def ben_geotiff_dir(tmp_path_factory, ben_lmdb) -> Path:
    """The 24 real patches written in reBEN's GeoTIFF folder layout (with their metadata)."""
    from eotwin.ben.geotiff import export_geotiff

    return export_geotiff(ben_lmdb, tmp_path_factory.mktemp("ben_geotiff"))


@pytest.fixture(scope="session")
def ben_store_dir(tmp_path_factory, ben_lmdb) -> Path:
    from eotwin.ben.store import encode

    store = tmp_path_factory.mktemp("ben_store") / "store"
    encode(ben_lmdb, store, workers=2)
    return store


@pytest.fixture(scope="session")
def ben_lmdb_missing_s1(tmp_path_factory, ben_lmdb) -> tuple[Path, str]:
    """A copy of the real LMDB (same keys and values, written with plain lmdb) without the S1 partner of the
    first train patch, with the wheel's metadata beside it: (LMDB folder, the patch left without S1)."""
    import shutil

    import lmdb

    patch_id = ben_lmdb.patch_ids(split="train")[0]
    dropped = ben_lmdb.s1_partner(patch_id)
    root = tmp_path_factory.mktemp("ben_missing_s1")
    target = root / "BigEarthNet-V2-LMDB"
    env = lmdb.open(str(target), map_size=1 << 28)
    with env.begin(write=True) as writer:  # values copied byte for byte (the source's env is already open here)
        for key in sorted(ben_lmdb.keys() - {dropped}):
            writer.put(key.encode(), ben_lmdb.raw(key))
    env.close()
    for name in ("metadata.parquet", "metadata_for_patches_with_snow_cloud_or_shadow.parquet"):
        shutil.copy(ben_lmdb.env_dir.parent / name, root / name)
    return target, patch_id
