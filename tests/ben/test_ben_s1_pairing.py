"""Sentinel-1 partners: a missing partner or a wrong ``s1_name`` is one line naming the patch, or is left out and
counted with ``--skip-missing``; on the real 24 patches in the GeoTIFF layout and in LMDBs written the rico-hdl way."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from eotwin.ben.bands import S1_BANDS, band_stats
from eotwin.ben.dataset import BenDataset
from eotwin.ben.sources import open_source
from eotwin.ben.sources.base import PairingError
from eotwin.cli.main import run


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


def test_geotiff_without_one_s1_folder(capsys, tmp_path, ben_geotiff_dir, ben_lmdb):
    root = tmp_path / "reben"
    shutil.copytree(ben_geotiff_dir, root)
    patch_id = ben_lmdb.patch_ids(split="validation")[1]
    s1_name = ben_lmdb.s1_partner(patch_id)
    shutil.rmtree(root / "BigEarthNet-S1" / s1_name.rsplit("_", 3)[0] / s1_name)

    assert run(["ben", "info", str(root), "--patch", patch_id, "--json"]) == 2
    line = _one_error_line(capsys)
    assert patch_id in line and s1_name in line and "missing" in line
    store = tmp_path / "store"
    assert run(["-q", "ben", "encode", str(root), "-o", str(store)]) == 2
    line = _one_error_line(capsys)
    assert patch_id in line and "--skip-missing" in line
    assert not store.exists()  # refused before anything was written

    assert run(["-q", "ben", "encode", str(root), "-o", str(store), "--skip-missing"]) == 0
    manifest = json.loads((store / "eotwin_store.json").read_text())
    assert (manifest["patches"], manifest["unpaired"], manifest["unpaired_first"]) == (23, 1, [patch_id])
    with open_source(store) as encoded:
        kept = encoded.patch_ids(include_snow=True, include_cloud=True)
        assert len(kept) == 23 and patch_id not in kept
        other = kept[0]
        for band, array in encoded.read(other, S1_BANDS).items():
            np.testing.assert_array_equal(array, ben_lmdb.read(other, S1_BANDS)[band])
    s2_store = tmp_path / "s2-store"  # S2 bands need no partner
    assert run(["-q", "ben", "encode", str(root), "-o", str(s2_store), "--bands", "s2"]) == 0
    assert json.loads((s2_store / "eotwin_store.json").read_text())["patches"] == 24


def test_wrong_or_absent_s1_name_in_the_metadata(capsys, tmp_path, ben_mock_dir, ben_lmdb):
    frame = pd.read_parquet(ben_mock_dir / "metadata.parquet")
    wrong, absent = ben_lmdb.patch_ids(split="train")[2], ben_lmdb.patch_ids(split="test")[0]
    other = ben_lmdb.patch_ids(split="test")[3]
    frame.loc[frame["patch_id"] == wrong, "s1_name"] = ben_lmdb.s1_partner(other)  # exists, but another place
    frame.loc[frame["patch_id"] == absent, "s1_name"] = None
    metadata = tmp_path / "metadata.parquet"
    frame.to_parquet(metadata, index=False)
    lmdb_dir = ben_mock_dir / "BigEarthNet-V2-LMDB"

    assert run(["ben", "info", str(lmdb_dir), "--metadata", str(metadata), "--patch", wrong]) == 2
    line = _one_error_line(capsys)
    assert wrong in line and "names another place" in line
    store = tmp_path / "store"
    assert run(["-q", "ben", "encode", str(lmdb_dir), "--metadata", str(metadata), "-o", str(store), "--no-snow",
                "--no-cloud"]) == 2
    line = _one_error_line(capsys)
    assert (wrong in line and "another place" in line) or (absent in line and "no s1_name" in line)
    assert not store.exists()
    assert run(["-q", "ben", "encode", str(lmdb_dir), "--metadata", str(metadata), "-o", str(store), "--no-snow",
                "--no-cloud", "--skip-missing"]) == 0
    manifest = json.loads((store / "eotwin_store.json").read_text())
    assert manifest["patches"] == 16 and manifest["unpaired"] == 2
    assert sorted(manifest["unpaired_first"]) == sorted([wrong, absent])


def test_dataset_needs_or_skips_partners(ben_lmdb_missing_s1, ben_lmdb):
    lmdb_dir, patch_id = ben_lmdb_missing_s1
    with open_source(lmdb_dir) as source:
        assert source.has_s1 and source.has_patch(patch_id)
        with pytest.raises(PairingError, match=patch_id):
            BenDataset(source, split="train", bands="all")
        data = BenDataset(source, split="train", bands="all", skip_missing=True)
        assert len(data) == 5 and data.unpaired == [patch_id] and data.describe()["unpaired_skipped"] == 1
        assert len(BenDataset(source, split="train", bands="s2")) == 6  # S2 alone needs no partner
        x, _ = data[0]
        raw = ben_lmdb.read(data.patch_ids[0], S1_BANDS)
        mean, std = band_stats(S1_BANDS)
        np.testing.assert_allclose(x[0], (raw["VV"] - mean[0]) / std[0], rtol=1e-6)
        np.testing.assert_allclose(x[1], (raw["VH"] - mean[1]) / std[1], rtol=1e-6)
        assert x.shape == (14, 120, 120)
