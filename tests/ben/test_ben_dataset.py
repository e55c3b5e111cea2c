import pickle
import subprocess
import sys

import numpy as np
import pytest

from eotwin.ben.bands import band_stats, resample
from eotwin.ben.dataset import BenDataset
from eotwin.ben.labels import CLASSES_ALPHABETICAL, multi_hot
from eotwin.ben.sources import open_source
from eotwin.errors import EotwinError


def test_items_are_normalised_stacks_and_multi_hot(ben_lmdb):
    data = BenDataset(ben_lmdb, split="train", bands="s2-10", resampling="bilinear")
    assert len(data) == 6
    x, y = data[0]
    assert x.shape == (10, 120, 120) and x.dtype == np.float32
    assert y.shape == (19,) and y.dtype == np.float32
    patch_id = data.patch_ids[0]
    raw = ben_lmdb.read(patch_id)
    mean, std = band_stats(data.bands, "bilinear")
    b05 = data.bands.index("B05")
    np.testing.assert_allclose(x[b05], (resample(raw["B05"], 120, "bilinear") - mean[b05]) / std[b05], rtol=1e-6)
    np.testing.assert_array_equal(y, multi_hot(ben_lmdb.record(patch_id).labels))
    assert data.targets.shape == (6, 19)
    assert data.describe()["bands"] == list(data.bands)


def test_same_items_from_every_source_kind(ben_lmdb, ben_geotiff_dir, ben_store_dir):
    ids = ben_lmdb.patch_ids(split="test")
    reference = BenDataset(ben_lmdb, split="test", bands="all", class_order="alphabetical")
    assert reference[0][0].shape == (14, 120, 120)  # VV, VH + 12 S2 bands
    for path in (ben_geotiff_dir, ben_store_dir):
        other = BenDataset(path, split="test", bands="all", class_order="alphabetical")
        assert other.patch_ids == ids
        for i in range(len(ids)):
            np.testing.assert_array_equal(other[i][0], reference[i][0])
            np.testing.assert_array_equal(other[i][1], reference[i][1])
        other.source.close()
    x, y = reference[0]
    labels = ben_lmdb.record(ids[0]).labels
    assert sorted(np.flatnonzero(y).tolist()) == sorted(CLASSES_ALPHABETICAL.index(label) for label in labels)


def test_batches_unnormalised_and_errors(ben_lmdb):
    data = BenDataset(ben_lmdb, bands=["B02"], normalised=False, include_snow=True, include_cloud=True)
    assert len(data) == 24
    shapes = [(x.shape, y.shape) for x, y in data.batches(10)]
    assert shapes == [((10, 1, 120, 120), (10, 19))] * 2 + [((4, 1, 120, 120), (4, 19))]
    first_x, _ = next(data.batches(1))
    np.testing.assert_array_equal(first_x[0, 0], ben_lmdb.read(data.patch_ids[0])["B02"].astype(np.float32))
    with pytest.raises(IndexError):
        data[24]
    with pytest.raises(EotwinError):
        BenDataset(ben_lmdb, patch_ids=["S2A_missing_1_1"])


def test_dataset_pickles_for_worker_processes(ben_store_dir):
    data = BenDataset(ben_store_dir, split="validation")
    x0, _ = data[0]
    clone = pickle.loads(pickle.dumps(data))
    np.testing.assert_array_equal(clone[0][0], x0)
    clone.source.close()
    data.source.close()


def test_dataset_module_does_not_import_torch():
    code = "import sys, eotwin.ben.dataset, eotwin.ben.sources, eotwin.ben.store; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "False"


def test_torchgeo_layout_gives_full_size_stack(shared_fixtures):
    data = BenDataset(open_source(shared_fixtures / "ben" / "synthetic_torchgeo"), split="train", normalised=False,
                      bands="s2")
    x, y = data[0]
    assert x.shape == (12, 120, 120) and y.sum() >= 1
