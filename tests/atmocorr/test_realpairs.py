"""Real pairs: the sen2r Barbellino pairs as pair folders, EuroSAT patches as L1C stacks, the sun position
they need, and the benchmark's evaluation numbers recomputed independently from the fixture files."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio

from eotwin.atmocorr.realpairs import (
    BARBELLINO_BOA_BANDS,
    BARBELLINO_DIR,
    BARBELLINO_TOA_BANDS,
    TOA_METHOD,
    barbellino_pairs,
    eurosat_stacks,
    evaluate_pair,
    flat_terrain_mask,
    l1c_stack_bands,
    list_pairs,
    read_pair,
    vegetation_ndvi,
)
from eotwin.atmocorr.solar import sentinel2_overpass, sun_position
from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import L2A_BANDS
from eotwin.sentinel2.products import open_l1c, open_l2a_reference


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory, shared_fixtures) -> Path:
    out = tmp_path_factory.mktemp("pairs")
    barbellino_pairs(shared_fixtures, out)
    return out


def _tile_metadata(shared_fixtures: Path) -> list[tuple[datetime, float, float, float, float]]:
    """(sensing time, lat, lon of the tile centre, mean sun zenith, azimuth) of the real MTD_TL files."""
    from pyproj import Transformer

    rows = []
    paths = sorted((shared_fixtures / "safe").glob("*/GRANULE/*/MTD_TL.xml"))
    assert len(paths) >= 3
    for path in paths:
        text = path.read_text()
        sensing = re.search(r"<SENSING_TIME[^>]*>([^<]+)<", text).group(1)
        epsg = int(re.search(r"<HORIZONTAL_CS_CODE>EPSG:(\d+)<", text).group(1))
        ulx = float(re.search(r"<ULX>([^<]+)<", text).group(1))
        uly = float(re.search(r"<ULY>([^<]+)<", text).group(1))
        mean = re.search(r"<Mean_Sun_Angle>\s*<ZENITH_ANGLE[^>]*>([^<]+)</ZENITH_ANGLE>\s*"
                         r"<AZIMUTH_ANGLE[^>]*>([^<]+)<", text)
        lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(ulx + 54900, uly - 54900)
        when = datetime.fromisoformat(sensing.replace("Z", "+00:00"))
        rows.append((when, lat, lon, float(mean.group(1)), float(mean.group(2))))
    return rows


def test_sun_position_matches_the_spa_reference_value():
    # Reda & Andreas (2004), NREL SPA, worked example: 2003-10-17 12:30:30 MST (UTC-7), Golden, Colorado
    sun = sun_position(datetime(2003, 10, 17, 19, 30, 30, tzinfo=UTC), 39.742476, -105.1786, refraction=True)
    assert sun.zenith == pytest.approx(50.11162, abs=0.01)
    assert sun.azimuth == pytest.approx(194.34024, abs=0.01)
    geometric = sun_position(datetime(2003, 10, 17, 19, 30, 30, tzinfo=UTC), 39.742476, -105.1786)
    assert 0.01 < geometric.zenith - sun.zenith < 0.03  # refraction lifts the sun by about 0.02 deg at 50 deg


def test_sun_position_matches_real_tile_metadata(shared_fixtures):
    for when, lat, lon, zenith, azimuth in _tile_metadata(shared_fixtures):
        sun = sun_position(when, lat, lon)
        assert sun.zenith == pytest.approx(zenith, abs=0.05), when
        assert sun.azimuth == pytest.approx(azimuth, abs=0.1), when


def test_sentinel2_overpass_within_minutes_of_real_sensing_times(shared_fixtures):
    checked = 0
    for when, lat, lon, _, _ in _tile_metadata(shared_fixtures):
        if abs(lat) > 60:  # near the orbit's apex the model does not hold (and raises beyond 81 deg)
            continue
        estimate = sentinel2_overpass(when.date(), lat, lon)
        assert abs(estimate - when) < timedelta(minutes=10), (when, estimate)
        checked += 1
    assert checked >= 3
    with pytest.raises(EotwinError):
        sentinel2_overpass(date(2020, 1, 1), 85.0, 0.0)
    with pytest.raises(EotwinError, match="time zone"):
        sun_position(datetime(2020, 1, 1, 10), 45.0, 10.0)


def test_barbellino_pair_folders_open_with_the_readers(pairs_dir, shared_fixtures):
    pairs = list_pairs(pairs_dir)
    assert [p.pair_id for p in pairs] == ["barbellino_20170703", "barbellino_20190723"]
    src = shared_fixtures / BARBELLINO_DIR
    for pair in pairs:
        day = pair.pair_id.split("_")[1]
        l1c = open_l1c(pair.l1c)
        assert l1c.spacecraft == "S2A" and l1c.offsets["B04"] == 0.0 and l1c.quantification == 10000
        assert set(l1c.bands) == {*L2A_BANDS, "B10"}
        assert (l1c.grid.width, l1c.grid.height) == (24, 42)
        with rasterio.open(pair.l1c) as ds, rasterio.open(src / f"S2A1C_{day}_022_Barbellino_TOA_10.tif") as toa:
            names = list(ds.descriptions)
            raw = toa.read()
            for i, band in enumerate(BARBELLINO_TOA_BANDS):
                assert np.array_equal(ds.read(names.index(band) + 1), raw[i]), band
            assert np.array_equal(ds.read(names.index("B8A") + 1), raw[BARBELLINO_TOA_BANDS.index("B08")])
            tags = ds.tags()
        lat, lon = 46.066, 10.043
        when = datetime.fromisoformat(tags["DATETIME"].replace("Z", "+00:00"))
        assert float(tags["SUN_ZENITH"]) == pytest.approx(sun_position(when, lat, lon).zenith, abs=1e-3)
        assert 20 < float(tags["SUN_ZENITH"]) < 35 and 10 <= when.hour <= 10  # a July morning overpass at 46 N
        ref = open_l2a_reference(pair.l2a)
        assert set(ref.bands) == {*BARBELLINO_BOA_BANDS, "SCL"} and "B8A" not in ref.bands
        with rasterio.open(pair.l2a) as ds, rasterio.open(src / f"S2A2A_{day}_022_Barbellino_SCL_10.tif") as scl:
            names = list(ds.descriptions)
            expected = np.repeat(np.repeat(scl.read(1), 2, axis=0), 2, axis=1)  # the 20 m grid nests in the 10 m one
            assert np.array_equal(ds.read(names.index("SCL") + 1), expected)
        meta = json.loads((pair.path / "pair.json").read_text())
        assert meta["l1c_id"].startswith(f"S2A_MSIL1C_{day}") and meta["bbox"][1] < lat < meta["bbox"][3]
        assert any("B8A" in n for n in meta["notes"]) and any("sun zenith" in n for n in meta["notes"])
    assert not [p for p in pairs_dir.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_evaluation_numbers_recomputed_from_the_fixture_files(pairs_dir, shared_fixtures, tmp_path):
    pair = read_pair(pairs_dir / "barbellino_20170703")
    report = evaluate_pair(pair, ["6s-ddv"], tmp_path)
    src = shared_fixtures / BARBELLINO_DIR
    with rasterio.open(src / "S2A1C_20170703_022_Barbellino_TOA_10.tif") as ds:
        toa = ds.read().astype(np.float64) / 10000
    with rasterio.open(src / "S2A2A_20170703_022_Barbellino_BOA_10.tif") as ds:
        boa = ds.read().astype(np.float64) / 10000
    with rasterio.open(src / "S2A2A_20170703_022_Barbellino_SCL_10.tif") as ds:
        scl = np.repeat(np.repeat(ds.read(1), 2, axis=0), 2, axis=1)
    clear = np.isin(scl, (4, 5, 6, 7))
    with rasterio.open(report["methods"]["6s-ddv"]["l2a"]) as ds:
        corrected = (ds.read().astype(np.float64) - 1000) / 10000  # eotwin's L2A: BOA_ADD_OFFSET -1000
        out_names = list(ds.descriptions)
    toa_metrics = report["methods"][TOA_METHOD]["metrics"]
    ddv_metrics = report["methods"]["6s-ddv"]["metrics"]
    assert toa_metrics["pixels"] == ddv_metrics["pixels"] == int(clear.sum())
    assert set(toa_metrics["bands"]) == set(BARBELLINO_BOA_BANDS)  # B8A (filled from B08) is never scored
    for band in BARBELLINO_BOA_BANDS:
        ref = boa[BARBELLINO_BOA_BANDS.index(band)][clear]
        # TOA exactly; the corrected product as written (DN rounded to 1e-4, the run scores the floats)
        for pred, metrics, tol, spec_tol in ((toa[BARBELLINO_TOA_BANDS.index(band)][clear], toa_metrics, 1e-7, 0),
                                             (corrected[out_names.index(band)][clear], ddv_metrics, 5e-5, 0.01)):
            d = pred - ref
            assert metrics["bands"][band]["rmse"] == pytest.approx(np.sqrt(np.mean(d**2)), abs=tol), band
            assert metrics["bands"][band]["bias"] == pytest.approx(d.mean(), abs=tol), band
            spec = np.mean(np.abs(d) <= 0.005 + 0.05 * np.maximum(ref, 0) + 1e-6)  # ties at the limit count
            assert metrics["bands"][band]["within_spec"] == pytest.approx(spec, abs=spec_tol + 1e-12), band
    assert report["methods"]["6s-ddv"]["aot"] == pytest.approx(report["methods"]["6s-ddv"]["atmosphere"]["aot"])


def test_eurosat_patches_become_l1c_stacks(shared_fixtures, tmp_path):
    folders = eurosat_stacks(shared_fixtures, tmp_path)
    assert [f.name for f in folders] == ["AnnualCrop_1", "Pasture_300", "SeaLake_3000"]
    src = shared_fixtures / "s2img" / "rico-hdl" / "EuroSAT_MS" / "Pasture" / "Pasture_300.tif"
    with rasterio.open(src) as ds:
        raw = ds.read()
    l1c = open_l1c(folders[1] / "l1c.tif")
    assert set(l1c.bands) == {*L2A_BANDS, "B10"}
    with rasterio.open(folders[1] / "l1c.tif") as ds:
        names = list(ds.descriptions)
        assert np.array_equal(ds.read(names.index("B8A") + 1), raw[12])  # B8A is last inside EuroSAT's TIFFs
        assert np.array_equal(ds.read(names.index("B09") + 1), raw[8])
    notes = json.loads((folders[1] / "patch.json").read_text())["notes"]
    assert any("date unknown" in n for n in notes)


def test_pure_helpers_on_exact_values():
    with pytest.raises(EotwinError):
        l1c_stack_bands(np.ones((2, 3, 3), dtype=np.uint16), ("B02", "B03"))
    toa = np.full((12, 1, 3), 0.1, dtype=np.float32)
    boa = toa.copy()
    nir, red = L2A_BANDS.index("B08"), L2A_BANDS.index("B04")
    toa[nir], toa[red] = [[0.3, 0.3, 0.1]], [[0.1, 0.05, 0.1]]  # NDVI 0.5, 0.714, 0
    boa[nir], boa[red] = [[0.35, 0.35, 0.1]], [[0.05, 0.05, 0.1]]  # NDVI 0.75, 0.75
    result = vegetation_ndvi(toa, boa)
    assert result["pixels"] == 2
    assert result["toa"] == pytest.approx((0.5 + 0.25 / 0.35) / 2, rel=1e-6)
    assert result["corrected"] == pytest.approx(0.75, rel=1e-6)
    # the B12 gain of 8 pixels: 6 around 1.1 (flat), 2 re-lit by the terrain correction (1.5); one cloudy
    i = L2A_BANDS.index("B12")
    data = {"toa": np.full((12, 1, 8), 0.1), "ref": np.full((12, 1, 8), 0.11), "scl": np.full((1, 8), 4)}
    data["ref"][i, 0, 6:] = 0.15
    data["scl"][0, 0] = 9
    assert flat_terrain_mask(data, (4, 5, 6, 7)).tolist() == [[False, True, True, True, True, True, False, False]]


def test_read_pair_refuses_a_folder_without_its_files(tmp_path):
    (tmp_path / "p").mkdir()
    with pytest.raises(EotwinError, match="not a pair folder"):
        read_pair(tmp_path / "p")
    with pytest.raises(EotwinError, match="no pair folder"):
        list_pairs(tmp_path)


def test_methods_at_the_pairs_elevation(pairs_dir, tmp_path):
    """``<method>:elevation`` runs the method with the pair's ``elevation_m``; a pair without one is an error
    recorded for that method, not a crash."""
    pytest.importorskip("onnxruntime")
    pair = read_pair(pairs_dir / "barbellino_20190723")
    report = evaluate_pair(pair, ["ai:elevation", "6s-ddv:elevation"], tmp_path / "with")
    for method in ("ai:elevation", "6s-ddv:elevation"):
        assert report["methods"][method]["atmosphere"]["elevation"] == pair.meta["elevation_m"], method
    assert "ood_score" in report["methods"]["ai:elevation"]["atmosphere"]
    bare = dataclasses.replace(pair, meta={k: v for k, v in pair.meta.items() if k != "elevation_m"})
    report = evaluate_pair(bare, ["ai:elevation"], tmp_path / "without")
    assert "elevation_m" in report["methods"]["ai:elevation"]["error"]
