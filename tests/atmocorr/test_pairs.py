"""``eotwin atmocorr pairs`` against loopback STAC API + S3 (moto) servers.

The world: an L1C and its L2A of one datatake of tile T46UEU. The L1C is a SAFE with the real MTD_MSIL1C.xml
(baseline 05.09) and MTD_TL.xml of that tile and random JP2 bands at their native resolutions in the tile's
corner, described by a copy of a real CDSE sentinel-2-l1c item; the L2A is a copy of a real CDSE sentinel-2-l2a
item (T31TEL) re-pointed at JP2 files whose DN are a known function of the L1C DN of the same place (per band
and resolution, as the real item lists them: B02_10m, B02_20m, ...), a known SCL pattern, and the real
MTD_MSIL2A.xml of a 05.09 product. The pair folder must hold exactly the L1C and L2A windows of the bbox.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from eotwin.atmocorr import pairs as pairs_mod
from eotwin.cli.main import run
from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import L2A_BANDS, NATIVE_RESOLUTION, S2_BANDS
from eotwin.sentinel2.metadata import parse_tile_metadata
from eotwin.sentinel2.products import open_l1c, open_l2a_reference
from eotwin.sentinel2.reading import BandReader
from tests.support.loopback import S3Server, StacApiServer
from tests.support.pairs_world import (
    ACCESS_KEY,
    EPSG,
    L1C_SAFE,
    L2A_ID,
    PAIR_ID,
    SECRET_KEY,
    TL,
    ULX,
    ULY,
    PairWorld,
    l2a_of,
    to_10m,
)

SIZE10 = 120  # 1.2 km of the tile's corner
NODATA60 = 2  # the first 2 x 2 pixels of 60 m (120 m) hold no data in every band


def l1c_dn(band: str) -> np.ndarray:
    """Random DN at the band's native resolution, 0 (no data) in the top-left 120 m."""
    res = NATIVE_RESOLUTION[band]
    n = SIZE10 * 10 // res
    rng = np.random.default_rng(S2_BANDS.index(band))
    dn = rng.integers(1000, 6000, size=(n, n)).astype(np.uint16)
    k = NODATA60 * 60 // res
    dn[:k, :k] = 0
    return dn


def scl_20m() -> np.ndarray:
    n = SIZE10 // 2
    rows, cols = np.indices((n, n))
    scl = (1 + (rows * 7 + cols * 3) % 11).astype(np.uint8)
    scl[: NODATA60 * 3, : NODATA60 * 3] = 0
    return scl


class World(PairWorld):
    """The test world: random DN with a no-data corner, the CLI run in this process."""

    def __init__(self, root: Path, shared: Path, s3: S3Server, stac: StacApiServer) -> None:
        super().__init__(root, shared, s3, stac, l1c_dn, scl_20m)

    def cli(self, *args: str) -> int:
        return run(["-q", "atmocorr", "pairs", *args, "--stac-url", self.stac.url,
                    "--s3-endpoint", f"http://{self.s3.endpoint}"])


@pytest.fixture(scope="module")
def world(shared_fixtures, tmp_path_factory):
    items: list[dict] = []
    with S3Server() as s3, StacApiServer(items) as stac:
        yield World(tmp_path_factory.mktemp("pairs"), shared_fixtures, s3, stac)


@pytest.fixture(autouse=True)
def _keys(monkeypatch, world):
    """Keys from the environment only (the command has no key options); faults never outlive a test."""
    monkeypatch.setenv("CDSE_S3_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("CDSE_S3_SECRET_KEY", SECRET_KEY)
    yield
    for server in (world.s3, world.stac):
        server.faults.pending.clear()


def _bbox() -> tuple[list[float], tuple[float, float, float, float]]:
    """A lon/lat bbox around a UTM rectangle inside the 1.2 km corner (not on any pixel edge), and the rectangle."""
    rect = (ULX + 73.0, ULY - 905.0, ULX + 771.0, ULY - 37.0)
    to_lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True)
    west, south, east, north = to_lonlat.transform_bounds(*rect)
    return [west, south, east, north], rect


def _bbox_arg(rect: tuple[float, float, float, float] | None = None) -> str:
    if rect is None:
        return ",".join(f"{v:.7f}" for v in _bbox()[0])
    return ",".join(f"{v:.7f}" for v in Transformer.from_crs(EPSG, 4326, always_xy=True).transform_bounds(*rect))


def _no_staging(parent: Path) -> None:
    assert not [p for p in parent.iterdir() if ".part-" in p.name]


def test_pair_folder_holds_the_same_windows_of_the_l1c_and_its_l2a(world, tmp_path, capsys, shared_fixtures):
    l1c, l2a = world.publish()
    lonely = copy.deepcopy(l1c) | {"id": "S2A_MSIL1C_20230219T045851_N0509_R119_T46UEU_20230219T070000"}
    lonely["properties"] = l1c["properties"] | {"datetime": "2023-02-19T04:58:51.024Z",
                                                 "eopf:datatake_id": "GS2A_20230219T045851_040013_N05.09"}
    other_tile = copy.deepcopy(l2a) | {"id": L2A_ID.replace("T46UEU", "T46UEV")}
    other_tile["properties"] = l2a["properties"] | {"grid:code": "MGRS-46UEV"}
    world.stac.items[:] = [l1c, lonely, l2a, other_tile]
    out = tmp_path / "pairs"
    code = world.cli("--bbox", _bbox_arg(), "--date", "2023-02-15/2023-02-20", "-o", str(out), "--json")
    printed = capsys.readouterr()
    assert code == 0, printed.err
    listed = json.loads(printed.out)
    assert [p["pair_id"] for p in listed] == [PAIR_ID]
    assert listed[0]["l1c_id"] == l1c["id"] and listed[0]["l2a_id"] == L2A_ID
    folder = Path(listed[0]["path"])
    assert folder == out / PAIR_ID and sorted(p.name for p in folder.iterdir()) == ["l1c.tif", "l2a.tif", "pair.json"]
    _no_staging(tmp_path)
    for path in folder.iterdir():
        assert ACCESS_KEY.encode() not in path.read_bytes() and SECRET_KEY.encode() not in path.read_bytes()
    assert SECRET_KEY not in printed.out + printed.err

    # the grid: the tile's own 10 m grid, covering the rectangle, widened to whole 60 m pixels of the tile
    product = open_l1c(folder / "l1c.tif")
    grid = product.grid
    rect = _bbox()[1]
    left, bottom, right, top = grid.bounds
    assert grid.crs.to_epsg() == EPSG and grid.res == (10.0, 10.0)
    assert (left - ULX) % 60 == 0 and (ULY - top) % 60 == 0 and grid.width % 6 == 0 and grid.height % 6 == 0
    assert left <= rect[0] and right >= rect[2] and top >= rect[3] and bottom <= rect[1]
    assert right - rect[2] < 60 + 20 and rect[0] - left < 60 + 20  # the lon/lat box adds a few metres only
    r0, c0 = round((ULY - top) / 10), round((left - ULX) / 10)
    window = (slice(r0, r0 + grid.height), slice(c0, c0 + grid.width))
    assert r0 < NODATA60 * 6 and c0 < NODATA60 * 6  # the window includes part of the no-data corner

    # the L1C stack: as open_l1c reads it, exactly the L1C's DN of that place (coarse bands replicated)
    assert product.kind == "stack" and product.product_id == l1c["id"] and product.spacecraft == "S2A"
    assert product.quantification == 10000.0 and {product.offsets[b] for b in S2_BANDS} == {-1000.0}
    assert product.processing_baseline == "05.09" and product.datetime.startswith("2023-02-16T04:48:51")
    assert sorted(product.bands) == sorted(S2_BANDS)  # B10 included
    with BandReader(product.bands, grid) as reader:
        l1c_read = reader.read(S2_BANDS)
    expected_l1c = {b: to_10m(l1c_dn(b), NATIVE_RESOLUTION[b])[window] for b in S2_BANDS}
    for k, band in enumerate(S2_BANDS):
        expected = expected_l1c[band].astype(np.float32)
        expected[expected == 0] = np.nan
        np.testing.assert_array_equal(l1c_read[k], expected, err_msg=band)

    # the angles: the scene means of the real MTD_TL.xml grids over the window (bilinear per pixel, as SAFE)
    tile = parse_tile_metadata((shared_fixtures / "safe" / L1C_SAFE / TL).read_bytes())
    xs = left + 5 + 10 * np.arange(grid.width)
    ys = top - 5 - 10 * np.arange(grid.height)
    u, v = (xs - tile.angles.x0) / tile.angles.step, (tile.angles.y0 - ys) / tile.angles.step
    sza = tile.angles.sun_zenith
    per_pixel = ((1 - v)[:, None] * ((1 - u) * sza[0, 0] + u * sza[0, 1])
                 + v[:, None] * ((1 - u) * sza[1, 0] + u * sza[1, 1]))
    with rasterio.open(folder / "l1c.tif") as ds:
        tags = ds.tags()
        assert ds.nodata == 0 and ds.dtypes[0] == "uint16"
    assert float(tags["SUN_ZENITH"]) == pytest.approx(per_pixel.mean(), abs=1e-4)
    assert abs(float(tags["SUN_ZENITH"]) - tile.mean_sun[0]) < 3  # the tile's mean, a few km away
    assert 0 < float(tags["VIEW_ZENITH"]) < 13 and 0 <= float(tags["VIEW_AZIMUTH"]) < 360
    assert product.angles.sun_zenith[0, 0] == pytest.approx(float(tags["SUN_ZENITH"]))

    # the L2A stack: the L2A bands of the same place (the finest asset of each band) and SCL, on the same grid
    reference = open_l2a_reference(folder / "l2a.tif")
    assert reference.quantification == 10000.0 and {reference.offsets[b] for b in L2A_BANDS} == {-1000.0}
    assert sorted(reference.bands) == sorted([*L2A_BANDS, "SCL"])
    with rasterio.open(folder / "l2a.tif") as ds:
        assert ds.transform == grid.transform and ds.crs.to_epsg() == EPSG and ds.shape == grid.shape
        assert ds.nodata == 0 and ds.tags()["BOA_ADD_OFFSET"] == "-1000"
    with BandReader(reference.bands, grid, categorical=("SCL",)) as reader:
        l2a_read = reader.read([*L2A_BANDS, "SCL"])
    for k, band in enumerate(L2A_BANDS):
        expected = l2a_of(expected_l1c[band], band).astype(np.float32)
        expected[expected == 0] = np.nan
        np.testing.assert_array_equal(l2a_read[k], expected, err_msg=band)
    expected_scl = to_10m(scl_20m(), 20)[window].astype(np.float32)
    expected_scl[expected_scl == 0] = np.nan
    np.testing.assert_array_equal(l2a_read[-1], expected_scl)
    assert np.isnan(l2a_read[:, 0, 0]).all() and np.isfinite(l2a_read[:, -1, -1]).all()

    # pair.json: the agreed keys, and every approximation named
    meta = json.loads((folder / "pair.json").read_text())
    assert {"pair_id", "source", "l1c_id", "l2a_id", "datetime", "bbox", "notes"} <= set(meta)
    assert (meta["pair_id"], meta["l1c_id"], meta["l2a_id"]) == (PAIR_ID, l1c["id"], L2A_ID)
    assert meta["datetime"] == l1c["properties"]["datetime"] and meta["bbox"] == pytest.approx(_bbox()[0], abs=1e-6)
    assert world.stac.url in meta["source"]
    notes = " | ".join(meta["notes"])
    for words in ("nearest", "angles: means over the window", "no OZONE", "60 m pixels", "B01 at 20 m",
                  "SCL at 20 m", "lacks data"):
        assert words in notes, words
    valid = np.isfinite(l1c_read).all(axis=0) & np.isfinite(l2a_read).all(axis=0)
    assert listed[0]["valid_fraction"] == pytest.approx(valid.mean(), abs=1e-6) and 0.9 < valid.mean() < 1


def test_ozone_comes_from_the_l1c_aux_ecmwft(world, tmp_path, capsys):
    """The GRIB beside MTD_TL.xml (as in every L1C SAFE in CDSE's S3) gives the OZONE tag open_l1c reads."""
    pytest.importorskip("eccodes")
    from tests.sentinel2.test_ecmwf import grib_message

    tco3 = [0.00630, 0.00636, 0.00640, 0.00644, 0.00648, 0.00654]  # kg m-2: mean 299.8 DU
    l1c, l2a = world.publish(aux_ecmwft=grib_message(137, [12.0] * 6) + grib_message(206, tco3))
    world.stac.items[:] = [l1c, l2a]
    out = tmp_path / "pairs"
    assert world.cli("--bbox", _bbox_arg(), "--date", "2023-02-16", "-o", str(out)) == 0, capsys.readouterr().err
    product = open_l1c(out / PAIR_ID / "l1c.tif")
    assert product.ozone == pytest.approx(0.29979, abs=1e-4) and product.ozone_source == "OZONE tag"
    notes = json.loads((out / PAIR_ID / "pair.json").read_text())["notes"]
    assert any("AUX_ECMWFT" in n and n.startswith("OZONE") for n in notes)


def test_cams_forecast_comes_from_the_l1c_aux_camsfo(world, tmp_path, capsys):
    """The CAMS GRIB beside MTD_TL.xml (baseline 04.00 on) gives CAMS_* tags open_l1c reads back."""
    pytest.importorskip("eccodes")
    from eotwin.sentinel2.cams import read_cams
    from tests.sentinel2.test_cams import MARINE

    l1c, l2a = world.publish(aux_camsfo=MARINE)
    world.stac.items[:] = [l1c, l2a]
    out = tmp_path / "pairs"
    assert world.cli("--bbox", _bbox_arg(), "--date", "2023-02-16", "-o", str(out)) == 0, capsys.readouterr().err
    cams = open_l1c(out / PAIR_ID / "l1c.tif").cams
    expected = read_cams(MARINE)
    assert cams.aod550 == pytest.approx(expected.aod550, abs=1e-5) and cams.aerosol_model == "maritime"
    assert cams.species == pytest.approx(expected.species, abs=1e-5)
    assert cams.surface_height_m == pytest.approx(expected.surface_height_m, abs=0.1)
    notes = json.loads((out / PAIR_ID / "pair.json").read_text())["notes"]
    assert any(n.startswith("CAMS_*") and "AUX_CAMSFO" in n for n in notes)


def test_a_second_run_replaces_its_pair_and_keeps_the_others(world, tmp_path, capsys):
    l1c, l2a = world.publish()
    world.stac.items[:] = [l1c, l2a]
    out = tmp_path / "pairs"
    (out / "other_pair").mkdir(parents=True)
    (out / "other_pair" / "pair.json").write_text("{}")
    assert world.cli("--bbox", _bbox_arg(), "--date", "2023-02-16", "-o", str(out)) == 0
    first = (out / PAIR_ID / "l2a.tif").read_bytes()
    assert world.cli("--bbox", _bbox_arg(), "--date", "2023-02-16", "-o", str(out), "--max-pairs", "1") == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["other_pair", PAIR_ID])
    assert (out / PAIR_ID / "l2a.tif").read_bytes() == first
    _no_staging(tmp_path)
    capsys.readouterr()


def test_transient_faults_are_retried(world, tmp_path, capsys):
    """503s on the STAC search, an L1C band (GDAL), the tile metadata and the L2A metadata (requests) change
    nothing: the same pair as a clean run (fresh prefixes for both, as GDAL caches per path)."""
    l1c, l2a = world.publish()
    world.stac.items[:] = [l1c, l2a]
    assert world.cli("--bbox", _bbox_arg(), "--date", "2023-02-16", "-o", str(tmp_path / "clean")) == 0
    l1c, l2a = world.publish()
    world.stac.items[:] = [l1c, l2a]
    s3_before, stac_before = world.s3.faults.injected, world.stac.faults.injected
    world.stac.faults.add("status", 503, times=1)
    for where in ("_B03.jp2", "MTD_TL.xml", "MTD_MSIL2A.xml", "_SCL_20m.jp2"):
        world.s3.faults.add("status", 503, times=1, path_contains=where)
    code = world.cli("--bbox", _bbox_arg(), "--date", "2023-02-16", "-o", str(tmp_path / "faulty"))
    assert code == 0, capsys.readouterr().err
    assert world.s3.faults.injected - s3_before == 4 and world.stac.faults.injected - stac_before == 1
    for name in ("l1c.tif", "l2a.tif"):
        with rasterio.open(tmp_path / "clean" / PAIR_ID / name) as a, rasterio.open(tmp_path / "faulty" / PAIR_ID / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.tags() == b.tags() and a.transform == b.transform
    capsys.readouterr()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert SECRET_KEY not in err and ACCESS_KEY not in err
    return err


def test_bad_requests_are_one_line_errors_and_leave_nothing(world, tmp_path, capsys):
    l1c, l2a = world.publish()
    lonely = copy.deepcopy(l1c) | {"id": "S2A_MSIL1C_20230219T045851_N0509_R119_T46UEU_20230219T070000"}
    lonely["properties"] = l1c["properties"] | {"datetime": "2023-02-19T04:58:51.024Z",
                                                 "eopf:datatake_id": "GS2A_20230219T045851_040013_N05.09"}
    world.stac.items[:] = [l1c, l2a, lonely]
    out = tmp_path / "out"
    cases = [
        (("--bbox", _bbox_arg(), "--date", "2023-02-19"), "none has a sentinel-2-l2a item of the same datatake"),
        (("--bbox", _bbox_arg(), "--date", "2023-03-01"), "no sentinel-2-l1c items"),
        (("--bbox", "91,48,90,49", "--date", "2023-02-16"), "--bbox"),
        (("--bbox", _bbox_arg(), "--date", "2023-02-30"), "--date"),
        (("--bbox", "10,40,10.1,40.1", "--date", "2023-02-16"), "no sentinel-2-l1c items"),
        # inside the tile's no-data corner: both windows hold only DN 0
        (("--bbox", _bbox_arg((ULX + 10, ULY - 50, ULX + 50, ULY - 10)), "--date", "2023-02-16"), "holds no data"),
    ]
    for args, expected in cases:
        assert world.cli(*args, "-o", str(out)) != 0
        assert expected in _one_line_error(capsys), args
        assert not out.exists()
        _no_staging(tmp_path)


def test_l2a_item_whose_datatake_differs_is_no_partner(world, tmp_path, capsys):
    l1c, l2a = world.publish()
    l2a["properties"]["eopf:datatake_id"] = "GS2A_20230216T044851_039971_N05.09"
    world.stac.items[:] = [l1c, l2a]
    assert world.cli("--bbox", _bbox_arg(), "--date", "2023-02-16", "-o", str(tmp_path / "out")) != 0
    assert "none has a sentinel-2-l2a item" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("where", "expected"), [
    ("MTD_TL.xml", "MTD_TL.xml: access denied: check the S3 keys (HTTP 403)"),
    ("_B11_20m.jp2", "access denied: check the S3 keys (HTTP 403)"),
])
def test_denied_reads_fail_in_one_line_and_leave_the_output_as_it_was(world, tmp_path, capsys, where, expected):
    l1c, l2a = world.publish()
    world.stac.items[:] = [l1c, l2a]
    out = tmp_path / "pairs"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    world.s3.faults.add("status", 403, times=100, path_contains=where)
    assert world.cli("--bbox", _bbox_arg(), "--date", "2023-02-16", "-o", str(out)) != 0
    assert expected in _one_line_error(capsys)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    _no_staging(tmp_path)


def test_real_cdse_items_of_one_datatake_pair_up(shared_fixtures):
    """The real L1C and L2A items of datatake GS2C_20250710T104041_004411_N05.11 (tile 31TEL) are one pair."""
    path = shared_fixtures / "cdse/emanuel-gf_DestinE_ESA_DeltaTwin/STAC_data_query/models/stac_items.json"
    real = json.loads(path.read_text())
    pairs, unpaired = pairs_mod.match_pairs([real["L1C"]], [real["L2A"]])
    assert [p.pair_id for p in pairs] == ["S2C_T31TEL_20250710T104041"] and not unpaired
    assert pairs[0].l2a["id"] == real["L2A"]["id"] and pairs[0].notes == ()
    # an older L2A of the same datatake processed with another baseline loses to the one of the L1C's baseline
    older = copy.deepcopy(real["L2A"]) | {"id": real["L2A"]["id"].replace("N0511", "N0500")}
    older["properties"] = real["L2A"]["properties"] | {"processing:version": "05.00"}
    pairs, _ = pairs_mod.match_pairs([real["L1C"]], [older, real["L2A"]])
    assert pairs[0].l2a["id"] == real["L2A"]["id"] and "2 L2A products" in pairs[0].notes[0]
    pairs, _ = pairs_mod.match_pairs([real["L1C"]], [older])
    assert "baseline 05.00" in pairs[0].notes[-1]
    # another tile, another spacecraft or another sensing time: no partner
    for change in ({"grid:code": "MGRS-31TEM"}, {"platform": "sentinel-2a"}, {"eopf:datatake_id": "GS2C_X"}):
        other = copy.deepcopy(real["L2A"])
        other["properties"] = other["properties"] | change
        if "platform" in change:
            other["id"] = other["id"].replace("S2C_", "S2A_")
        pairs, unpaired = pairs_mod.match_pairs([real["L1C"]], [other])
        assert not pairs and [u["id"] for u in unpaired] == [real["L1C"]["id"]], change
    with pytest.raises(EotwinError, match="spacecraft"):
        pairs_mod.match_pairs([real["L1C"] | {"properties": real["L1C"]["properties"] | {"platform": "landsat-9"}}],
                              [])


def test_pairs_and_fine_tuning_on_them_run_within_2_gib(world, tmp_path):
    """The sample-sized memory check of ``atmocorr pairs`` and ``atmocorr train --pairs`` (the real CLI in a
    child process under the 2 GiB limit; benchmarks/memory.py runs both on a whole tile)."""
    import os
    import sys

    from tests.support.memlimit import DEFAULT_LIMIT, run_under_memory_limit

    l1c, l2a = world.publish()
    world.stac.items[:] = [l1c, l2a]
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    out = tmp_path / "pairs"
    fetched = run_under_memory_limit(
        [sys.executable, "-m", "eotwin", "-q", "atmocorr", "pairs", "--bbox", _bbox_arg(), "--date", "2023-02-16",
         "-o", str(out), "--stac-url", world.stac.url, "--s3-endpoint", f"http://{world.s3.endpoint}"],
        env=env, timeout_s=300)
    assert fetched.ok, fetched.stderr[-500:]
    assert 0 < fetched.peak_rss_bytes < DEFAULT_LIMIT and (out / PAIR_ID / "l2a.tif").is_file()
    tuned = tmp_path / "tuned.onnx"
    trained = run_under_memory_limit(  # torch maps ~3 GiB of CUDA libraries: resident memory only
        [sys.executable, "-m", "eotwin", "-q", "atmocorr", "train", "--pairs", str(out), "-o", str(tuned),
         "--steps", "2", "--json"], env=env, timeout_s=300, address_space=False)
    assert trained.ok, trained.stderr[-500:]
    assert 0 < trained.peak_rss_bytes < DEFAULT_LIMIT and tuned.is_file()
    assert json.loads(trained.stdout)["steps"] == 2
