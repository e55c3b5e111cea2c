"""Shared test fixtures: the real fixtures beside the repository and the sample scene."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.fail(f"../shared/fixtures not found at {SHARED_FIXTURES}: tests need the shared fixtures beside the repository")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def sample_scene():
    from eotwin.sample.scene import make_scene

    return make_scene(size=200, seed=7)


@pytest.fixture(scope="session")
def sample_files(tmp_path_factory, sample_scene):
    from eotwin.sample.files import write_sample

    return write_sample(tmp_path_factory.mktemp("sample"), sample_scene)


@pytest.fixture(scope="session")
def ben_mock_dir() -> Path:
    """The 24 real BigEarthNet v2 patches (LMDB + metadata.parquet) unpacked by ``make setup``."""
    path = REPO / ".eotwin-data" / "BENv2"
    if not (path / "metadata.parquet").exists():
        pytest.fail(f"{path} is missing: run `make setup` (it fetches the configilm 0.7.1 wheel and unpacks its mock data)")
    return path
