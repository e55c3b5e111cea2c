"""Untrusted containers declare sizes: a zip bomb or a GRIB header asking for 10^9 values is refused unread."""

from __future__ import annotations

import zipfile

import pytest

from eotwin.errors import EotwinError
from eotwin.sentinel2 import ecmwf
from eotwin.sentinel2.ecmwf import read_total_ozone
from eotwin.sentinel2.products import open_l1c
from eotwin.sentinel2.safe import MAX_METADATA_BYTES, SafeArchive
from tests.sentinel2.test_ecmwf import TCO3, grib_message
from tests.sentinel2.test_products import TL_0509, build_safe


def test_a_zip_bomb_in_place_of_mtd_tl_is_refused_before_inflating(shared_fixtures, tmp_path):
    safe = build_safe(shared_fixtures, tmp_path / "f")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(safe.rglob("*")):
            arcname = p.relative_to(safe.parent).as_posix()
            if p.is_file() and arcname.endswith(TL_0509):
                zf.writestr(arcname, b"<" + b" " * (MAX_METADATA_BYTES + 1))  # deflates to ~70 KB
            else:
                zf.write(p, arcname)
    assert bomb.stat().st_size < 8 * 2**20
    with pytest.raises(EotwinError, match=r"declares .* bytes, more than"):
        open_l1c(bomb)


def test_an_oversized_metadata_file_in_a_folder_is_refused(tmp_path):
    root = tmp_path / "S2A_MSIL1C_X.SAFE"
    root.mkdir()
    (root / "MTD_MSIL1C.xml").write_bytes(b"<x/>")
    big = root / "big.xml"
    with big.open("wb") as fh:
        fh.truncate(MAX_METADATA_BYTES + 1)  # sparse: no disk used
    with pytest.raises(EotwinError, match="more than"):
        SafeArchive(root).read_bytes("big.xml")


def test_a_grib_message_declaring_too_many_values_is_refused(monkeypatch):
    message = grib_message(206, TCO3)  # 6 values
    monkeypatch.setattr(ecmwf, "MAX_GRIB_POINTS", 5)
    with pytest.raises(EotwinError, match="declares 6 values"):
        read_total_ozone(message)
    monkeypatch.setattr(ecmwf, "MAX_GRIB_POINTS", 6)
    assert read_total_ozone(message) > 0
