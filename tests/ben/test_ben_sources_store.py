import json
import os
import subprocess
import sys

import numpy as np
import pytest

from eotwin.ben.bands import ALL_BANDS, NATIVE_SIZE, S1_BANDS, S2_BANDS
from eotwin.ben.info import patch_info
from eotwin.ben.sources import open_source
from eotwin.ben.sources.base import PairingError
from eotwin.ben.sources.geotiff import GeoTiffSource
from eotwin.ben.sources.lmdb_source import LmdbSource, StoreSource
from eotwin.ben.sources.v1 import V1Source
from eotwin.ben.store import encode
from eotwin.errors import EotwinError

ALL = {"include_snow": True, "include_cloud": True}


def test_real_lmdb_patches_and_splits(ben_lmdb):
    assert isinstance(ben_lmdb, LmdbSource)
    assert len(ben_lmdb.patch_ids(**ALL)) == 24
    assert len(ben_lmdb.patch_ids()) == 18  # snow / cloud patches are outside the official splits
    assert [len(ben_lmdb.patch_ids(split=s)) for s in ("train", "validation", "test")] == [6, 6, 6]
    flagged = [p for p in ben_lmdb.patch_ids(**ALL) if ben_lmdb.record(p).snow or ben_lmdb.record(p).cloud]
    assert len(flagged) == 6
    assert ben_lmdb.has_s1  # the wheel's LMDB holds the 24 S1 partners too, keyed by s1_name
    arrays = ben_lmdb.read(ben_lmdb.patch_ids()[0])
    assert list(arrays) == list(ALL_BANDS)
    for band in S2_BANDS:
        assert arrays[band].dtype == np.uint16 and arrays[band].shape == (NATIVE_SIZE[band],) * 2
    for band in S1_BANDS:  # backscatter in dB
        assert arrays[band].dtype == np.float32 and arrays[band].shape == (120, 120)
        assert -60 < arrays[band].min() < arrays[band].max() < 40
    with pytest.raises(EotwinError, match="unknown split"):
        ben_lmdb.patch_ids(split="val")


def test_geotiff_lmdb_and_store_give_identical_arrays(ben_lmdb, ben_geotiff_dir, ben_store_dir):
    geotiff, store = open_source(ben_geotiff_dir), open_source(ben_store_dir)
    assert isinstance(geotiff, GeoTiffSource) and isinstance(store, StoreSource)
    ids = ben_lmdb.patch_ids(**ALL)
    assert geotiff.patch_ids(**ALL) == ids == store.patch_ids(**ALL)
    for patch_id in ids:
        reference = ben_lmdb.read(patch_id)
        for other in (geotiff, store):
            arrays = other.read(patch_id)
            assert list(arrays) == list(reference) == list(ALL_BANDS)  # S1 and S2 from all three
            for band in reference:
                assert arrays[band].dtype == reference[band].dtype
                np.testing.assert_array_equal(arrays[band], reference[band])
        assert patch_info(geotiff, patch_id) == patch_info(ben_lmdb, patch_id) == patch_info(store, patch_id)
    store.close()


def test_store_is_readable_the_configilm_way(ben_store_dir, ben_lmdb, tmp_path):
    """Plain lmdb + safetensors in a fresh process (no eotwin), as ConfigILM's BENv2LDMBReader reads:
    S2 under the patch id, S1 under its s1_name."""
    manifest = json.loads((ben_store_dir / "eotwin_store.json").read_text())
    assert manifest["complete"] and manifest["patches"] == 24 and manifest["bands"] == list(ALL_BANDS)
    assert manifest["unpaired"] == 0
    patch_id = ben_lmdb.patch_ids()[3]
    s1_name = ben_lmdb.s1_partner(patch_id)
    code = (
        "import sys, lmdb, numpy as np\n"
        "from safetensors.numpy import load\n"
        "env = lmdb.open(sys.argv[1], readonly=True, lock=False, meminit=False, readahead=True)\n"
        "with env.begin(write=False, buffers=True) as txn:\n"
        "    print(txn.stat()['entries'])\n"
        "    arrays = load(bytes(txn.get(sys.argv[2].encode())))\n"
        "    radar = load(bytes(txn.get(sys.argv[4].encode())))\n"
        "np.save(sys.argv[3], arrays['B09'])\n"
        "np.save(sys.argv[3] + '.vh.npy', radar['VH'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ben_store_dir), patch_id, str(tmp_path / "b09.npy"), s1_name],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "48"  # 24 S2 + 24 S1 entries, as in the wheel's LMDB
    np.testing.assert_array_equal(np.load(tmp_path / "b09.npy"), ben_lmdb.read(patch_id)["B09"])
    np.testing.assert_array_equal(np.load(tmp_path / "b09.npy.vh.npy"), ben_lmdb.read(patch_id)["VH"])


class _Failing:
    """Wraps a source and fails on the n-th read, like a crash half-way through an encode."""

    def __init__(self, source, fail_at):
        self._source, self._reads, self._fail_at = source, 0, fail_at

    def __getattr__(self, name):
        return getattr(self._source, name)

    def read(self, patch_id, bands=None):
        self._reads += 1
        if self._reads == self._fail_at:
            raise EotwinError("simulated crash")
        return self._source.read(patch_id, bands)


def test_encode_resumes_after_a_crash(tmp_path, ben_lmdb):
    store = tmp_path / "store"
    with pytest.raises(EotwinError, match="simulated crash"):
        encode(_Failing(ben_lmdb, fail_at=25), store, batch_size=5, workers=1)  # reads: S2, S1 per patch: patch 13
    manifest = json.loads((store / "eotwin_store.json").read_text())
    assert not manifest["complete"] and manifest["written"] == 10
    with pytest.raises(EotwinError, match="incomplete"):
        open_source(store)
    with open_source(store, allow_incomplete=True) as partial:  # info still works on a partial store
        assert len(partial.patch_ids(**ALL)) == 10
    result = encode(ben_lmdb, store, batch_size=5, workers=2)
    assert (result.planned, result.skipped, result.written) == (24, 10, 14)
    with open_source(store) as reopened:
        for patch_id in ben_lmdb.patch_ids(**ALL):
            assert patch_info(reopened, patch_id) == patch_info(ben_lmdb, patch_id)
    again = encode(ben_lmdb, store)
    assert again.written == 0 and again.skipped == 24


def test_encode_refuses_foreign_or_mismatched_folders(tmp_path, ben_lmdb):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(EotwinError, match="not an eotwin store"):
        encode(ben_lmdb, foreign)
    store = tmp_path / "store"
    encode(ben_lmdb, store, split="test")
    with pytest.raises(EotwinError, match="other options"):
        encode(ben_lmdb, store, split="train")
    result = encode(ben_lmdb, store, split="train", overwrite=True, include_snow=False, include_cloud=False)
    assert result.planned == 6
    with open_source(store) as reopened:
        assert reopened.patch_ids(**ALL) == ben_lmdb.patch_ids(split="train")


def test_encode_band_subset(tmp_path, ben_lmdb):
    store = tmp_path / "rgb"
    encode(ben_lmdb, store, bands=("B04", "B03", "B02"), limit=3)
    with open_source(store) as reopened:
        patch_id = reopened.patch_ids(**ALL)[0]
        assert set(reopened.read(patch_id, ("B02", "B03", "B04"))) == {"B02", "B03", "B04"}
        with pytest.raises(EotwinError, match="lacks band"):
            reopened.read(patch_id)


def test_v1_folders_with_43_labels(tmp_path, ben_lmdb):
    import rasterio

    root = tmp_path / "BigEarthNet-v1.0"
    source_ids = ben_lmdb.patch_ids()[:2]
    v1_labels = [["Discontinuous urban fabric", "Sea and ocean", "Bare rock"], ["Vineyards", "Olive groves", "Peatbogs"]]
    names = []
    for i, (patch_id, labels) in enumerate(zip(source_ids, v1_labels, strict=True)):
        name = f"S2A_MSIL2A_20170613T101031_{i}_{i + 1}"
        names.append(name)
        folder = root / name
        folder.mkdir(parents=True)
        for band, array in ben_lmdb.read(patch_id).items():
            with rasterio.open(folder / f"{name}_{band}.tif", "w", driver="GTiff", width=array.shape[1],
                               height=array.shape[0], count=1, dtype="uint16", crs="EPSG:32633",
                               transform=rasterio.Affine(1200 / array.shape[0], 0, 500000, 0, -1200 / array.shape[0], 5e6)) as ds:
                ds.write(array, 1)
        (folder / f"{name}_labels_metadata.json").write_text(json.dumps({"labels": labels, "projection": "EPSG:32633"}))
    (tmp_path / "test.csv").write_text(names[1] + "\n")
    source = open_source(root)
    assert isinstance(source, V1Source)
    assert source.record(names[0]).labels == ("Urban fabric", "Marine waters")
    assert source.record(names[1]).labels == ("Permanent crops", "Inland wetlands")
    assert source.record(names[1]).split == "test" and source.record(names[0]).split is None
    np.testing.assert_array_equal(source.read(names[1])["B8A"], ben_lmdb.read(source_ids[1])["B8A"])
    store = tmp_path / "store"
    encode(source, store)
    with open_source(store) as reopened:
        assert patch_info(reopened, names[0]) == patch_info(source, names[0])


def test_torchgeo_layout_and_bad_inputs(shared_fixtures, tmp_path):
    source = open_source(shared_fixtures / "ben" / "synthetic_torchgeo")
    assert isinstance(source, GeoTiffSource) and len(source.patch_ids()) == 4
    arrays = source.read(source.patch_ids()[0], S2_BANDS)
    assert arrays["B01"].shape == (120, 120) and arrays["B01"].dtype == np.int16  # generated: all bands at 120 px
    # torchgeo's generator pairs each S2 patch with an S1 patch of another row / col: refused as a wrong s1_name
    with pytest.raises(PairingError, match=r"S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57.*names another place"):
        source.read(source.patch_ids()[0])
    assert source.pair(source.patch_ids(), skip_missing=True) == ([], source.patch_ids())
    with pytest.raises(EotwinError, match="not found"):
        open_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EotwinError, match="not a BigEarthNet source"):
        open_source(tmp_path / "empty")
    with pytest.raises(EotwinError, match="not in the metadata"):
        source.record("S2A_nope_1_2")


def _rss_file_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as fh:
        status = dict(line.split(":", 1) for line in fh)
    return int(status["RssFile"].split()[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_walking_and_reading_an_lmdb_keeps_few_of_its_pages_resident(tmp_path, monkeypatch):
    """py-lmdb touches every value's pages, even walking keys only: on one map a full BigEarthNet LMDB was
    resident whole before the first patch was read. Keys are walked in runs on fresh maps, and reads remap."""
    import lmdb

    from eotwin.ben.sources import lmdb_source

    env_dir = tmp_path / "db"
    value = np.random.default_rng(0).integers(0, 255, 200_000, dtype=np.uint8).tobytes()  # 200 kB a value
    with lmdb.open(str(env_dir), map_size=1 << 28) as env, env.begin(write=True) as txn:
        for i in range(300):  # a 60 MB database, in the page cache after writing
            txn.put(f"patch_{i:04d}".encode(), value)
    monkeypatch.setattr(lmdb_source, "KEYS_PER_MAP", 20)
    monkeypatch.setattr(lmdb_source, "REMAP_EVERY_BYTES", 4 * 200_000)
    source = lmdb_source.LmdbSource.__new__(lmdb_source.LmdbSource)
    source.env_dir, source._pid, source._keys = env_dir, -1, None
    before = _rss_file_kib()
    assert len(source.keys()) == 300
    after_keys = _rss_file_kib()
    for i in range(300):
        assert source.raw(f"patch_{i:04d}") == value
    after_reads = _rss_file_kib()
    source.close()
    # 60 MB of file; one run of keys or of reads is 4 MB at most (plus the kernel's neighbours)
    assert after_keys - before < 20_000, (before, after_keys)
    assert after_reads - before < 20_000, (before, after_reads)
