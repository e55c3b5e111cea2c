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
