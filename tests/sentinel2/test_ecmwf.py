"""The ECMWF total ozone column of an L1C (AUX_ECMWFT GRIB) and the stack's OZONE tag, read into L1CProduct."""

from __future__ import annotations

import shutil
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from eotwin.errors import EotwinError
from eotwin.sentinel2.ecmwf import kg_m2_to_cm_atm, read_total_ozone
from eotwin.sentinel2.products import open_l1c
from tests.sentinel2.test_products import TL_0509, _stack, build_safe, zip_safe

eccodes = pytest.importorskip("eccodes")

AUX = str(Path(TL_0509).parent / "AUX_DATA" / "AUX_ECMWFT")


def grib_message(param_id: int, values: Sequence[float], edition: int = 1, step: int = 0) -> bytes:
    """One GRIB message made by ecCodes from its own sample: a 3 x 2 lat/lon grid of ``values``."""
    handle = eccodes.codes_grib_new_from_samples(f"regular_ll_sfc_grib{edition}")
    try:
        eccodes.codes_set(handle, "Ni", 3)
        eccodes.codes_set(handle, "Nj", 2)
        eccodes.codes_set(handle, "paramId", param_id)
        eccodes.codes_set(handle, "step", step)
        eccodes.codes_set_values(handle, np.asarray(values, dtype=np.float64))
        return eccodes.codes_get_message(handle)
    finally:
        eccodes.codes_release(handle)


TCO3 = [0.00630, 0.00636, 0.00640, 0.00644, 0.00648, 0.00654]  # kg m-2, mean 0.00642
# like a real AUX_ECMWFT: water vapour, sea-level pressure and ozone for the tile
AUX_ECMWFT = grib_message(137, [12.0] * 6) + grib_message(151, [101325.0] * 6) + grib_message(206, TCO3)


def test_conversion_from_kg_m2_to_cm_atm():
    assert kg_m2_to_cm_atm(2.1415e-5) == pytest.approx(0.001)  # one Dobson unit
    assert kg_m2_to_cm_atm(0.00642) == pytest.approx(0.29979, abs=1e-5)


@pytest.mark.parametrize("edition", [1, 2])
def test_reads_tco3_among_other_fields_from_bytes(edition):
    data = grib_message(137, [25.0] * 6, edition) + grib_message(206, TCO3, edition)
    assert read_total_ozone(data) == pytest.approx(0.29979, abs=1e-4)  # packing: ~1e-6 kg m-2


def test_reads_a_file_path(tmp_path):
    path = tmp_path / "AUX_ECMWFT"
    path.write_bytes(AUX_ECMWFT)
    assert read_total_ozone(path) == pytest.approx(read_total_ozone(AUX_ECMWFT))
    assert read_total_ozone(path) == pytest.approx(0.29979, abs=1e-4)


def test_the_mean_over_all_tco3_messages_and_steps():
    data = (
        grib_message(206, [0.0060] * 6, step=0)
        + grib_message(137, [5.0] * 6)
        + grib_message(206, [0.0070] * 6, step=3, edition=2)
    )
    assert read_total_ozone(data) == pytest.approx(kg_m2_to_cm_atm(0.0065), abs=1e-4)
    assert read_total_ozone(data) == pytest.approx(0.30353, abs=1e-4)


def _one_line_error(source, match: str, **kwargs) -> str:
    with pytest.raises(EotwinError, match=match) as info:
        read_total_ozone(source, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_grib_data_are_one_line_errors(tmp_path):
    _one_line_error(b"", "not a GRIB file")
    _one_line_error(b"<xml>not grib</xml>", "not a GRIB file")
    _one_line_error(AUX_ECMWFT[:60], "truncated or corrupt")
    _one_line_error(AUX_ECMWFT[:-10], "message 3 is truncated or corrupt")  # the ozone message cut short
    _one_line_error(b"GRIB" + b"\x00" * 200, "corrupt")
    third = AUX_ECMWFT.rfind(b"GRIB")
    garbled = bytearray(AUX_ECMWFT)
    garbled[third + 8 : third + 40] = b"\xff" * 32  # the ozone message's product definition
    _one_line_error(bytes(garbled), "no total column ozone|corrupt")
    _one_line_error(AUX_ECMWFT[:-4] + b"XXXX", "message 3 is truncated or corrupt")  # no end-of-message mark
    garbled = bytearray(AUX_ECMWFT)
    garbled[4:7] = (10**6).to_bytes(3, "big")  # the first message claims more bytes than there are
    _one_line_error(bytes(garbled), "message 1 is truncated or corrupt")
    _one_line_error(grib_message(137, [5.0] * 6), r"no total column ozone \(tco3, paramId 206\)")
    message = _one_line_error(grib_message(206, [0.03] * 6), "outside the physical range", name="AUX")
    assert message.startswith("AUX: total column ozone 1400.9 DU")
    with pytest.raises(EotwinError, match="cannot read"):
        read_total_ozone(tmp_path / "missing")


def test_missing_values_are_left_out_of_the_mean():
    handle = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
    try:
        eccodes.codes_set(handle, "Ni", 3)
        eccodes.codes_set(handle, "Nj", 2)
        eccodes.codes_set(handle, "paramId", 206)
        eccodes.codes_set(handle, "bitmapPresent", 1)
        missing = eccodes.codes_get(handle, "missingValue")
        eccodes.codes_set_values(handle, np.array([0.006, 0.007, missing, missing, 0.006, 0.007]))
        data = eccodes.codes_get_message(handle)
    finally:
        eccodes.codes_release(handle)
    assert read_total_ozone(data) == pytest.approx(kg_m2_to_cm_atm(0.0065), abs=1e-4)


# ----------------------------------------------------------------------------- through open_l1c
@pytest.fixture(scope="module")
def plain_safe(shared_fixtures, tmp_path_factory) -> Path:
    """A SAFE folder with real metadata and small bands, without AUX_ECMWFT."""
    return build_safe(shared_fixtures, tmp_path_factory.mktemp("safe"))


def _with_aux(plain_safe: Path, root: Path, aux: bytes) -> Path:
    safe = root / plain_safe.name
    shutil.copytree(plain_safe, safe)
    (safe / AUX).parent.mkdir(parents=True)
    (safe / AUX).write_bytes(aux)
    return safe


@pytest.mark.parametrize("as_zip", [False, True])
def test_safe_with_aux_ecmwft_gives_the_ozone(plain_safe, tmp_path, as_zip):
    safe = _with_aux(plain_safe, tmp_path, AUX_ECMWFT)
    path = zip_safe(safe, tmp_path / "product.zip") if as_zip else safe
    if as_zip:
        with zipfile.ZipFile(path) as zf:
            assert f"{safe.name}/{AUX}" in zf.namelist()
    product = open_l1c(path)
    assert product.ozone == pytest.approx(0.29979, abs=1e-4)
    assert product.ozone_source == "ECMWF AUX_ECMWFT"
    assert product.kind == ("SAFE zip" if as_zip else "SAFE")


def test_safe_without_aux_ecmwft_has_no_ozone(plain_safe):
    product = open_l1c(plain_safe)
    assert product.ozone is None and product.ozone_source is None


@pytest.mark.parametrize("as_zip", [False, True])
def test_corrupt_aux_ecmwft_is_a_one_line_error_naming_the_file(plain_safe, tmp_path, as_zip):
    safe = _with_aux(plain_safe, tmp_path, AUX_ECMWFT[:-10])
    path = zip_safe(safe, tmp_path / "product.zip") if as_zip else safe
    with pytest.raises(EotwinError, match="AUX_ECMWFT: GRIB message 3 is truncated or corrupt") as info:
        open_l1c(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


STACK_TAGS = {
    "SUN_ZENITH": 40,
    "SUN_AZIMUTH": 150,
    "VIEW_ZENITH": 5,
    "VIEW_AZIMUTH": 100,
    "SPACECRAFT": "S2A",
}


def test_stack_ozone_tag(tmp_path):
    product = open_l1c(_stack(tmp_path / "o.tif", tags={**STACK_TAGS, "OZONE": "0.285"}))
    assert (product.ozone, product.ozone_source) == (0.285, "OZONE tag")
    product = open_l1c(_stack(tmp_path / "n.tif", tags=STACK_TAGS))
    assert product.ozone is None and product.ozone_source is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("thick", "not a number"),
        ("285", r"outside \[0.05, 0.7\]"),
        ("0.01", "outside"),
        ("nan", "not finite"),
    ],
)
def test_bad_stack_ozone_tag_is_a_one_line_error(tmp_path, value, message):
    path = _stack(tmp_path / "s.tif", tags={**STACK_TAGS, "OZONE": value})
    with pytest.raises(EotwinError, match=f"tag OZONE.*{message}|{message}") as info:
        open_l1c(path)
    assert "\n" not in str(info.value) and "OZONE" in str(info.value)


def test_without_eccodes_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "eccodes", None)  # makes `import eccodes` raise ImportError
    message = _one_line_error(AUX_ECMWFT, "needs eccodes")
    assert "pip install 'eotwin[atmocorr]'" in message
