import json

from eotwin.cli.main import run

PATCH = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88"


def _info(capsys, path, *extra):
    assert run(["ben", "info", str(path), "--patch", PATCH, *extra]) == 0
    return capsys.readouterr().out


def test_info_is_identical_for_lmdb_geotiff_and_encoded_store(capsys, tmp_path, ben_mock_dir, ben_geotiff_dir):
    store = tmp_path / "store"
    assert run(["-q", "ben", "encode", str(ben_geotiff_dir), "-o", str(store), "-j", "2"]) == 0
    assert "24 patches" in capsys.readouterr().out
    outputs = [_info(capsys, p, "--json") for p in (ben_mock_dir, ben_geotiff_dir, store)]
    assert outputs[0] == outputs[1] == outputs[2]
    info = json.loads(outputs[0])
    assert info["labels"] == ["Pastures", "Broad-leaved forest", "Coniferous forest", "Mixed forest", "Inland waters"]
    assert info["split"] == "train" and info["country"] == "Austria"
    b01 = info["bands"][0]
    assert (b01["band"], b01["shape"], b01["dtype"], b01["min"], b01["max"]) == ("B01", [20, 20], "uint16", 202, 1056)
    tables = [_info(capsys, p) for p in (ben_mock_dir, ben_geotiff_dir, store)]
    assert tables[0] == tables[1] == tables[2] and "B8A       60x60  uint16" in tables[0]


def test_cli_errors_are_one_line(capsys, tmp_path, ben_mock_dir):
    assert run(["ben", "info", str(ben_mock_dir), "--patch", "nope"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "nope" in err and "Traceback" not in err
    assert run(["ben", "encode", str(ben_mock_dir), "-o", str(tmp_path / "s"), "--bands", "B10"]) == 2
    assert "unknown band" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert run(["ben", "encode", str(ben_mock_dir), "-o", str(tmp_path / "s"), "--limit", "0"]) == 2
    assert "limit" in capsys.readouterr().err
