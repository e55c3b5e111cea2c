"""Hypothesis over the parsers eotwin owns: whatever the bytes or text, only :class:`EotwinError` escapes.

Bounded (100 examples per parser, no deadline on a shared 2-core machine) so the whole file stays
well under a minute; each test also checks the good input still parses, so a parser that rejects
everything cannot pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eotwin.errors import EotwinError

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow], database=None)
SAFE = "safe/S2A_MSIL1C_20230216T044851_N0509_R076_T46UEU_20230216T00000.SAFE"
TILE = "GRANULE/L1C_T46UEU_A039970_20230216T045412/MTD_TL.xml"


class Tally:
    """Examples tried and refused by one parser; recorded in the junit XML for docs/reliability.md."""

    def __init__(self) -> None:
        self.examples = 0
        self.refused = 0

    def call(self, fn, *args, **kwargs):
        """Call ``fn``; any exception other than EotwinError fails the test (hypothesis shows the input)."""
        self.examples += 1
        try:
            return fn(*args, **kwargs)
        except EotwinError as exc:
            assert "\n" not in str(exc)
            self.refused += 1
            return None

    def record(self, record_property) -> None:
        if not self.examples:  # the test failed before fuzzing: its failure says why
            return
        record_property("fuzz_examples", self.examples)
        record_property("fuzz_refused", self.refused)


@pytest.fixture
def tally(record_property):
    t = Tally()
    yield t
    t.record(record_property)


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Real bytes cut, spliced, overwritten with noise or with XML-ish tokens."""
    tokens = st.sampled_from([b"<", b">", b"</", b"&amp;", b"&lol;", b"<!DOCTYPE x [<!ENTITY a 'b'>]>", b"\x00",
                              b"nan", b"-1e309", b"NaN", b"inf", b"", b"<![CDATA[", b"]]>", b"\xff\xfe", b"99"])
    n = len(data)

    @st.composite
    def mutate(draw) -> bytes:
        out = data
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(out)))
            j = min(len(out), i + draw(st.integers(0, 64)))
            piece = draw(st.one_of(tokens, st.binary(max_size=16)))
            out = out[:i] + piece + out[j:]
        return out[: draw(st.integers(n // 4, len(out)))] if draw(st.booleans()) else out

    return mutate()


# ----------------------------------------------------------------------------- MTD XML readers
@pytest.fixture(scope="module")
def product_xml(shared_fixtures) -> bytes:
    return (shared_fixtures / SAFE / "MTD_MSIL1C.xml").read_bytes()


@pytest.fixture(scope="module")
def tile_xml(shared_fixtures) -> bytes:
    return (shared_fixtures / SAFE / TILE).read_bytes()


def test_product_metadata_reader(product_xml, tally):
    from eotwin.sentinel2.metadata import parse_product_metadata

    assert parse_product_metadata(product_xml).level == "L1C"

    @FUZZ
    @given(data=_mutations(product_xml))
    def run(data: bytes) -> None:
        tally.call(parse_product_metadata, data, "MTD_MSIL1C.xml")

    run()


def test_tile_metadata_reader(tile_xml, tally):
    from eotwin.sentinel2.metadata import parse_tile_metadata

    assert parse_tile_metadata(tile_xml).angles.shape == (23, 23)

    @FUZZ
    @given(data=_mutations(tile_xml))
    def run(data: bytes) -> None:
        tally.call(parse_tile_metadata, data, "MTD_TL.xml")

    run()


def test_product_metadata_field_values(tally):
    """A well-formed document with any text in its numeric and name fields."""
    from xml.sax.saxutils import escape, quoteattr

    from eotwin.sentinel2.metadata import parse_product_metadata

    @FUZZ
    @given(value=st.one_of(st.text(max_size=20), st.sampled_from(["1e400", "nan", "-inf", "", " 3 ", "1,5"])),
           band=st.one_of(st.text(max_size=4), st.integers(-3, 20).map(str)),
           tag=st.sampled_from(["RADIO_ADD_OFFSET", "QUANTIFICATION_VALUE", "SPACECRAFT_NAME", "PROCESSING_BASELINE"]))
    def run(value: str, band: str, tag: str) -> None:
        value = "".join(ch for ch in value if ch.isprintable())
        band = "".join(ch for ch in band if ch.isprintable())
        fields = {"SPACECRAFT_NAME": "Sentinel-2A", "QUANTIFICATION_VALUE": "10000", "PROCESSING_BASELINE": "05.09"}
        fields[tag] = value
        body = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items() if k != "RADIO_ADD_OFFSET")
        offset = escape(value) if tag == "RADIO_ADD_OFFSET" else "-1000"
        doc = (f"<n1:Level-1C_User_Product xmlns:n1='x'>{body}"
               f"<RADIO_ADD_OFFSET band_id={quoteattr(band)}>{offset}</RADIO_ADD_OFFSET></n1:Level-1C_User_Product>")
        tally.call(parse_product_metadata, doc.encode(), "MTD_MSIL1C.xml")

    run()


# ----------------------------------------------------------------------------- the L1C-stack tag reader
@pytest.fixture(scope="module")
def tiny_stack(tmp_path_factory) -> Path:
    """A 4 x 4 L1C stack with every band and tag the reader needs."""
    import rasterio
    from affine import Affine

    from eotwin.sentinel2.bands import S2_BANDS

    path = tmp_path_factory.mktemp("stack") / "good.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=13, dtype="uint16", crs="EPSG:32632",
                       transform=Affine(10, 0, 300000, 0, -10, 5000000)) as ds:
        ds.write(np.full((13, 4, 4), 1200, dtype=np.uint16))
        for i, band in enumerate(S2_BANDS, start=1):
            ds.set_band_description(i, band)
        ds.update_tags(SUN_ZENITH="35", SUN_AZIMUTH="150", VIEW_ZENITH="5", VIEW_AZIMUTH="100",
                       SPACECRAFT="Sentinel-2A", RADIO_ADD_OFFSET="-1000", QUANTIFICATION_VALUE="10000", OZONE="0.3")
    return path


STACK_TAGS = ["SUN_ZENITH", "SUN_AZIMUTH", "VIEW_ZENITH", "VIEW_AZIMUTH", "SPACECRAFT", "RADIO_ADD_OFFSET",
              "QUANTIFICATION_VALUE", "OZONE"]
tag_text = st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr),
                     st.sampled_from(["90", "-0.0", "1e400", "Sentinel-2Z", "S2D", "Landsat-9", "0", "-5"]))


def test_l1c_stack_tag_reader(tiny_stack, tmp_path, tally):
    import shutil

    import rasterio

    from eotwin.sentinel2.products import open_l1c

    assert open_l1c(tiny_stack).spacecraft == "S2A"

    @FUZZ
    @given(tags=st.dictionaries(st.sampled_from(STACK_TAGS), tag_text, min_size=1, max_size=4),
           names=st.lists(st.one_of(st.sampled_from(["B01", "b8a", "B13", "B8", "SCL", "", "B04"]), st.text(max_size=4)),
                          max_size=3))
    def run(tags: dict[str, str], names: list[str]) -> None:
        path = tmp_path / "fuzzed.tif"
        shutil.copyfile(tiny_stack, path)
        with rasterio.open(path, "r+") as ds:
            ds.update_tags(**tags)
            for i, name in enumerate(names, start=1):
                ds.set_band_description(i, name)
        tally.call(open_l1c, path)

    run()


# ----------------------------------------------------------------------------- DeltaTwin manifest / workflow
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=12)


def test_deltatwin_manifest_and_workflow_model(tmp_path, tally):
    import copy

    import yaml

    from eotwin.deltatwin.manifest import load_component
    from eotwin.deltatwin.validate import validate_component
    from tests.deltatwin.conftest import ECHO_MANIFEST, ECHO_WORKFLOW

    def write(manifest: object, workflow: object, raw: bytes | None = None) -> Path:
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
        (tmp_path / "workflow.yml").write_bytes(raw if raw is not None else yaml.safe_dump(workflow).encode())
        return tmp_path

    assert load_component(write(ECHO_MANIFEST, ECHO_WORKFLOW)).manifest.name == "tiny-echo"

    keys = ["name", "inputs", "outputs", "models", "deltaVersion", "license", "dependencies"]

    @FUZZ
    @given(where=st.sampled_from(["manifest", "workflow", "raw"]), key=st.sampled_from([*keys, "nodes", "edges"]),
           value=json_values, raw=st.binary(max_size=80))
    def run(where: str, key: str, value: object, raw: bytes) -> None:
        manifest, workflow = copy.deepcopy(ECHO_MANIFEST), copy.deepcopy(ECHO_WORKFLOW)
        if where == "manifest":
            manifest[key if key in keys else "name"] = value
        elif where == "workflow":
            workflow[key if key in ("nodes", "edges") else "nodes"] = value
        folder = write(manifest, workflow, raw if where == "raw" else None)
        tally.call(load_component, folder)
        tally.call(validate_component, folder)

    run()


# ----------------------------------------------------------------------------- BigEarthNet LMDB patch decoder
def test_ben_patch_decoder(ben_mock_dir, tally):
    import lmdb

    from eotwin.ben.sources.lmdb_source import decode_patch

    env = lmdb.open(str(ben_mock_dir / "BigEarthNet-V2-LMDB"), readonly=True, lock=False)
    with env.begin() as txn:
        key, good = next((bytes(k), bytes(v)) for k, v in txn.cursor() if k.startswith(b"S2"))
    env.close()
    assert decode_patch(good, key.decode(), "lmdb", ("B02", "B05"))["B05"].shape == (60, 60)

    @FUZZ
    @given(data=_mutations(good[:4096]) | _mutations(good))
    def run(data: bytes) -> None:
        tally.call(decode_patch, data, key.decode(), "lmdb", None)

    run()


# ----------------------------------------------------------------------------- command-line value parsers
def test_bbox_parser(tally):
    from eotwin.io.remote.stac_api import parse_bbox

    assert parse_bbox("7,45,8,46") == (7, 45, 8, 46)

    @FUZZ
    @given(text=st.one_of(st.text(max_size=40),
                          st.lists(st.one_of(st.floats(), st.integers(-1000, 1000)), max_size=5).map(
                              lambda v: ",".join(map(str, v))),
                          st.lists(st.floats(-200, 200), min_size=4, max_size=4).map(lambda v: ",".join(map(str, v)))))
    def run(text: str) -> None:
        box = tally.call(parse_bbox, text)
        if box is not None:
            w, s, e, n = box
            assert -180 <= w < e <= 180 and -90 <= s < n <= 90

    run()


def test_date_parser(tally):
    from eotwin.io.remote.stac_api import parse_date

    assert parse_date("2024-06-01/2024-06-30") == "2024-06-01T00:00:00Z/2024-06-30T23:59:59Z"

    @FUZZ
    @given(text=st.one_of(st.text(max_size=30), st.dates().map(str),
                          st.tuples(st.dates(), st.dates()).map(lambda p: f"{p[0]}/{p[1]}")))
    def run(text: str) -> None:
        tally.call(parse_date, text)

    run()


def test_stretch_range_parser(tally):
    from eotwin.cli.pointcloud import _parse_range

    assert _parse_range("0,0.3") == (0.0, 0.3)

    @FUZZ
    @given(text=st.one_of(st.text(max_size=20), st.tuples(st.floats(), st.floats()).map(lambda p: f"{p[0]},{p[1]}")))
    def run(text: str) -> None:
        value = tally.call(_parse_range, text)
        if value is not None:
            assert np.isfinite(value).all() and value[0] < value[1]

    run()
