import json

from eotwin.cli.main import run

PATCH = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88"


def _info(capsys, path, *extra, patch=PATCH):
    assert run(["ben", "info", str(path), "--patch", patch, *extra]) == 0
    return capsys.readouterr().out


def test_info_is_identical_for_lmdb_geotiff_and_encoded_store(capsys, tmp_path, ben_mock_dir, ben_geotiff_dir):
    """The acceptance check of S1 + S2: LMDB, its GeoTIFF export (both BigEarthNet-S1 and -S2 folders) and the store
    encoded from that export give byte-identical `ben info --json` for every one of the 24 patches."""
    store = tmp_path / "store"
    assert run(["-q", "ben", "encode", str(ben_geotiff_dir), "-o", str(store), "-j", "2"]) == 0
    capsys.readouterr()
    assert json.loads((store / "eotwin_store.json").read_text())["bands"][:2] == ["VV", "VH"]
    s1_folders = sorted(p.name for p in (ben_geotiff_dir / "BigEarthNet-S1").glob("*/*") if p.is_dir())
    assert len(s1_folders) == 24
    patches = sorted(p.name for p in (ben_geotiff_dir / "BigEarthNet-S2").glob("*/*") if p.is_dir())
    assert len(patches) == 24
    for patch in patches[::6]:  # 4 through the CLI (all 24 compared through patch_info in test_ben_sources_store)
        outputs = [_info(capsys, p, "--json", patch=patch) for p in (ben_mock_dir, ben_geotiff_dir, store)]
        assert outputs[0] == outputs[1] == outputs[2], patch
    info = json.loads(_info(capsys, ben_mock_dir, "--json"))
    assert info["labels"] == ["Pastures", "Broad-leaved forest", "Coniferous forest", "Mixed forest", "Inland waters"]
    assert info["split"] == "train" and info["country"] == "Austria"
    assert info["s1_name"] == "S1B_IW_GRDH_1SDV_20170612T165809_33UUP_37_88"
    bands = {row["band"]: row for row in info["bands"]}
    assert [row["band"] for row in info["bands"]][:3] == ["VV", "VH", "B01"]
    b01 = bands["B01"]
    assert (b01["shape"], b01["dtype"], b01["min"], b01["max"]) == ([20, 20], "uint16", 202, 1056)
    for band in ("VV", "VH"):
        assert (bands[band]["shape"], bands[band]["dtype"]) == ([120, 120], "float32")
    assert bands["VV"]["mean"] == -9.5088 and bands["VH"]["mean"] == -15.3832  # dB, read from the wheel's LMDB
    tables = [_info(capsys, p) for p in (ben_mock_dir, ben_geotiff_dir, store)]
    assert tables[0] == tables[1] == tables[2]


def test_cli_errors_are_one_line(capsys, tmp_path, ben_mock_dir):
    assert run(["ben", "info", str(ben_mock_dir), "--patch", "nope"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "nope" in err and "Traceback" not in err
    assert run(["ben", "encode", str(ben_mock_dir), "-o", str(tmp_path / "s"), "--bands", "B10"]) == 2
    assert "unknown band" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert run(["ben", "encode", str(ben_mock_dir), "-o", str(tmp_path / "s"), "--limit", "0"]) == 2
    assert "limit" in capsys.readouterr().err
