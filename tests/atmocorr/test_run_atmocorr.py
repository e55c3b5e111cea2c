"""``eotwin atmocorr run`` end to end: known atmospheres recovered, product conventions, bad input, CLI."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio

from eotwin.atmocorr import correctors, pipeline
from eotwin.atmocorr.lut import DEFAULT_LUT_PATH, load_lut
from eotwin.atmocorr.sample_l1c import make_sample_l1c
from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import L2A_BANDS, S2_BANDS
from eotwin.sentinel2.radiometry import dn_to_boa

# the committed table; EOTWIN_ATMOCORR_LUT points the tests at a regenerated one
LUT = Path(os.environ.get("EOTWIN_ATMOCORR_LUT", DEFAULT_LUT_PATH))
ATMOSPHERE = {"aot": 0.2, "wv": 1.5, "o3": 0.33, "aerosol": "continental"}
GEOMETRY = {"sun_zenith": 35.0, "sun_azimuth": 150.0, "view_zenith": 5.0, "view_azimuth": 105.0}


@pytest.fixture(scope="module")
def sample(sample_scene, tmp_path_factory):
    return make_sample_l1c(
        tmp_path_factory.mktemp("l1c"), sample_scene, atmosphere=ATMOSPHERE, geometry=GEOMETRY, lut_path=LUT
    )


def _run(input_path: Path, output: Path, **kwargs) -> pipeline.RunResult:
    return pipeline.run_correction(pipeline.make_options(input=input_path, output=output, lut=LUT, **kwargs))


def _boa(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return dn_to_boa(ds.read())


def test_known_atmosphere_is_recovered_and_the_product_follows_the_l2a_convention(sample, tmp_path):
    result = _run(sample.l1c, tmp_path / "out", method="6s-ddv", aot=0.2, wv=1.5, ozone=0.33)
    assert result.atmosphere["ozone_source"] == "given"
    assert set(result.files) == {"l2a", "tci", "tci_png", "item"}
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask
    truth = sample.surface[[S2_BANDS.index(b) for b in L2A_BANDS]]
    boa = _boa(result.files["l2a"])
    valid = sample.valid
    err = np.abs(boa[:, valid] - truth[:, valid])
    assert (
        err.max() < 0.001
    )  # the 6S-table inversion is the exact inverse of the forward model (+ DN rounding)
    assert np.isnan(boa[:, ~valid]).all()  # no data stays no data (DN 0)
    with rasterio.open(result.files["l2a"]) as ds:
        assert ds.descriptions == L2A_BANDS and ds.dtypes[0] == "uint16" and ds.nodata == 0
        assert ds.tags()["BOA_ADD_OFFSET"] == "-1000" and ds.tags()["BOA_QUANTIFICATION_VALUE"] == "10000"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.crs.to_epsg() == 32632 and ds.transform == sample_grid_transform(sample)
        dn = ds.read(3)
    np.testing.assert_array_equal(dn[valid], np.clip(np.rint(boa[2][valid] * 10000 + 1000), 1, 65535))
    with rasterio.open(result.files["tci"]) as ds:
        assert ds.count == 3 and ds.dtypes[0] == "uint8"
        assert (ds.read(1)[~valid] == 0).all() and (ds.read(1)[valid] > 0).all()
    assert result.files["tci_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    item = json.loads(result.files["item"].read_text())
    assert item["type"] == "Feature" and item["properties"]["proj:epsg"] == 32632
    assert item["properties"]["eotwin:atmosphere"]["aot"] == 0.2
    assert item["properties"]["platform"] == "sentinel-2a"
    assert [b["name"] for b in item["assets"]["l2a"]["eo:bands"]] == list(L2A_BANDS)
    assert item["assets"]["l2a"]["raster:bands"][0]["offset"] == pytest.approx(-0.1)
    assert item["assets"]["l2a"]["href"] == "l2a.tif"
    lon0, lat0, lon1, lat1 = item["bbox"]
    assert 7.2 < lon0 < lon1 < 7.4 and 45.6 < lat0 < lat1 < 45.8  # the sample valley near Aosta


def sample_grid_transform(sample) -> rasterio.Affine:
    with rasterio.open(sample.l1c) as ds:
        return ds.transform


def test_block_size_does_not_change_the_result(sample, tmp_path):
    a = _run(sample.l1c, tmp_path / "a", method="6s-ddv", aot=0.3, wv=1.2, block_rows=7)
    b = _run(sample.l1c, tmp_path / "b", method="6s-ddv", aot=0.3, wv=1.2)
    with rasterio.open(a.files["l2a"]) as da, rasterio.open(b.files["l2a"]) as db:
        np.testing.assert_array_equal(da.read(), db.read())


def test_ddv_estimates_the_atmosphere_and_beats_toa_against_the_reference(sample, tmp_path):
    result = _run(sample.l1c, tmp_path / "ddv", method="6s-ddv", reference=sample.truth)
    atm = result.atmosphere
    assert atm["aot_source"] == "ddv" and atm["ddv_pixels"] > 0
    # the sample's vegetation is redder and bluer than Kaufman's ratios: the two AOTs bracket the truth
    assert atm["ddv_aot_red"] < 0.2 < atm["ddv_aot_blue"] and atm["ddv_excluded"]["cloud"] > 0
    assert (atm["aerosol"], atm["aerosol_source"]) == ("continental", "blue/red DDV agreement")
    assert atm["wv_edge"] == "none" and atm["wv_pixels_above_table"] == 0 and "warning" not in atm
    with rasterio.open(result.files["l2a"]) as ds:
        tags = ds.tags()
    assert tags["ATMOCORR_AEROSOL"] == "continental" and tags["ATMOCORR_WV_EDGE"] == "none"
    assert int(tags["ATMOCORR_DDV_PIXELS"]) == atm["ddv_pixels"]
    assert (atm["ozone"], atm["ozone_source"]) == (0.33, "OZONE tag")  # no --ozone: the product's own
    assert abs(atm["aot"] - 0.2) < 0.05 and abs(atm["wv"] - 1.5) < 0.3
    metrics = json.loads(result.files["evaluation"].read_text())
    assert metrics == result.metrics
    corrected, toa = metrics["corrected"], metrics["toa_unchanged"]
    assert corrected["pixels"] == int(sample.valid.sum())
    for band in L2A_BANDS:
        assert corrected["bands"][band]["rmse"] < toa["bands"][band]["rmse"], band
    assert corrected["mean_rmse"] < 0.01 < toa["mean_rmse"]
    assert result.files["evaluation_png"].stat().st_size > 10_000


def test_metrics_are_exact_on_a_known_difference(sample, tmp_path):
    """Reference = the output itself, B05 shifted by +0.01: RMSE = 0.01 and bias = -0.01 there."""
    out = _run(sample.l1c, tmp_path / "o", method="6s-ddv", aot=0.2, wv=1.5)
    ref = tmp_path / "ref.tif"
    with rasterio.open(out.files["l2a"]) as ds:
        data, profile, tags = ds.read(), ds.profile, ds.tags()
        descriptions = ds.descriptions
    valid = data[0] > 0
    data[4][valid] += 100  # B05 + 0.01 reflectance
    profile.update(driver="GTiff")
    with rasterio.open(ref, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    again = _run(sample.l1c, tmp_path / "again", method="6s-ddv", aot=0.2, wv=1.5, reference=ref)
    bands = again.metrics["corrected"]["bands"]
    assert bands["B05"]["rmse"] == pytest.approx(0.01, abs=1e-6)
    assert bands["B05"]["bias"] == pytest.approx(-0.01, abs=1e-6)
    # elsewhere only the output's DN rounding (uniform, +-0.5e-4: RMSE 0.5e-4 / sqrt(3))
    assert bands["B02"]["rmse"] == pytest.approx(0.5e-4 / np.sqrt(3), rel=0.05)
    assert bands["B02"]["r2"] == pytest.approx(1.0, abs=1e-6)


def test_water_vapour_beyond_the_table_is_flagged_in_the_run_info_and_tags(sample, tmp_path):
    """The sample stack with B09 darkened (far more absorption at 945 nm than the table's 5 g/cm2 gives)."""
    wet = tmp_path / "wet.tif"
    with rasterio.open(sample.l1c) as ds:
        data, profile, tags, descriptions = ds.read(), ds.profile, ds.tags(), ds.descriptions
    offset = int(tags.get("RADIO_ADD_OFFSET", 0))
    b09 = descriptions.index("B09")
    valid = data[b09] > 0
    toa_dn = data[b09][valid].astype(np.int64) + offset
    data[b09][valid] = np.clip(np.rint(toa_dn * 0.3) - offset, 1, None).astype(data.dtype)
    with rasterio.open(wet, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    result = _run(wet, tmp_path / "out", method="6s-ddv", aot=0.2)
    atm = result.atmosphere
    assert atm["wv"] == pytest.approx(5.0, abs=1e-4) and atm["wv_edge"] == "upper"
    assert atm["wv_pixels_above_table"] > 0.9 * atm["wv_pixels"] and atm["wv_pixels_below_table"] == 0
    assert atm["warning"].startswith("water vapour clamped to the 6S table's upper edge (5 g/cm2)")
    with rasterio.open(result.files["l2a"]) as ds:
        tags = ds.tags()
    assert tags["ATMOCORR_WV_EDGE"] == "upper" and tags["ATMOCORR_WARNING"] == atm["warning"]
    assert int(tags["ATMOCORR_WV_PIXELS_ABOVE_TABLE"]) == atm["wv_pixels_above_table"]


def test_dos_reads_the_dark_object_as_an_aot_and_is_within_the_no_correction_error_in_every_band(sample, tmp_path):
    result = _run(sample.l1c, tmp_path / "dos", method="dos", reference=sample.truth)
    atm = result.atmosphere
    assert atm["aot_source"] == "dark object" and atm["aerosol"] == "continental"
    assert 0.15 < atm["aot"] < 0.3  # the scene was made with 0.2
    corrected, toa = result.metrics["corrected"]["bands"], result.metrics["toa_unchanged"]["bands"]
    for band in L2A_BANDS:
        assert abs(corrected[band]["bias"]) < abs(toa[band]["bias"]), band
        assert corrected[band]["rmse"] < toa[band]["rmse"], band
    with rasterio.open(result.files["l2a"]) as ds:
        assert ds.tags()["ATMOCORR_AOT_SOURCE"] == "dark object"


def _ai_model_ready() -> bool:
    if importlib.util.find_spec("eotwin.atmocorr.ai") is None:
        return False
    return bool(getattr(importlib.import_module("eotwin.atmocorr.ai"), "model_available", lambda: False)())


@pytest.mark.parametrize(
    ("given", "method", "source"),
    [
        ({}, "ai", "default"),
        ({"method": "dos"}, "dos", "--method"),
        ({"aot": 0.2}, "6s-ddv", "--aot given"),
        ({"wv": 1.5, "dem": "dem.tif"}, "6s-ddv", "--wv given"),
        ({"elevation": 300.0}, "ai", "default"),  # every method takes the ground's height
        ({"dem": "dem.tif"}, "ai", "default"),
        ({"aerosol": "maritime"}, "6s-ddv", "--aerosol maritime given"),
    ],
)
def test_method_choice_and_its_reason(tmp_path, given, method, source):
    """The default is ai; options only a physical inversion takes choose 6s-ddv instead of failing."""
    options = pipeline.make_options(input=tmp_path / "in.tif", output=tmp_path / "out", **given)
    chosen, why = correctors.choose_method(options)
    assert chosen == method
    assert why.startswith(source)


def test_method_and_its_source_in_the_product(sample, tmp_path):
    """A run without --method records the default and why; --aot records that it chose 6s-ddv."""
    result = pipeline.run_correction(pipeline.make_options(input=sample.l1c, output=tmp_path / "given",
                                                           aot=0.2, lut=LUT))
    with rasterio.open(result.files["l2a"]) as ds:
        tags = ds.tags()
    assert tags["ATMOCORR_METHOD"] == "6s-ddv"
    assert tags["ATMOCORR_METHOD_SOURCE"].startswith("--aot given")
    item = json.loads(result.files["item"].read_text())
    assert item["properties"]["eotwin:atmosphere"]["method_source"].startswith("--aot given")


def test_bad_input_leaves_no_output(sample, tmp_path):
    bad = tmp_path / "bad.tif"
    with rasterio.open(sample.l1c) as ds:
        profile, data = ds.profile, ds.read(list(range(1, 12)))  # drop B11 and B12
        descriptions, tags = ds.descriptions[:11], ds.tags()
    profile.update(count=11)
    with rasterio.open(bad, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(EotwinError, match="lacks bands B11, B12"):
        _run(bad, work / "out", method="6s-ddv")
    # a failure after the staging folder exists (the reference shares no pixel) leaves nothing either
    elsewhere = tmp_path / "elsewhere.tif"
    with rasterio.open(sample.truth) as ds:
        profile, data, tags = ds.profile, ds.read(), ds.tags()
        descriptions = ds.descriptions
    profile.update(transform=rasterio.Affine(10, 0, 100000, 0, -10, 1000000))
    with rasterio.open(elsewhere, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    with pytest.raises(EotwinError, match="no valid pixel shared"):
        _run(sample.l1c, work / "out", method="6s-ddv", aot=0.2, wv=1.5, reference=elsewhere)
    assert list(work.iterdir()) == []
    with pytest.raises(EotwinError, match="unknown method"):
        _run(sample.l1c, work / "out", method="magic")
    with pytest.raises(EotwinError, match="resolution"):
        pipeline.make_options(input=sample.l1c, output=work / "out", resolution=60)
    with pytest.raises(EotwinError, match="only apply to --method 6s-ddv"):
        _run(sample.l1c, work / "out", method="dos", aot=0.1)
    assert list(work.iterdir()) == []


def test_rerun_into_an_existing_folder_replaces_the_files(sample, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _run(sample.l1c, out, method="6s-ddv", aot=0.2, wv=1.5)
    _run(sample.l1c, out, method="6s-ddv", aot=0.25, wv=1.5)
    assert (out / "keep.txt").read_text() == "mine"
    assert json.loads((out / "item.json").read_text())["properties"]["eotwin:atmosphere"]["aot"] == 0.25
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.part-")]


def test_cli_run_and_sample_l1c(tmp_path, capsys):
    from eotwin.cli.main import run

    made = tmp_path / "s"
    assert run(["-q", "atmocorr", "sample-l1c", "-o", str(made), "--size", "48", "--lut", str(LUT)]) == 0
    code = run(
        [
            "-q",
            "atmocorr",
            "run",
            str(made / "l1c_stack.tif"),
            "-o",
            str(tmp_path / "o"),
            "--method",
            "6s-ddv",
            "--aot",
            "0.2",
            "--wv",
            "1.5",
            "--reference",
            str(made / "l2a_truth.tif"),
            "--lut",
            str(LUT),
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "B8A" in printed.out and (tmp_path / "o" / "evaluation.json").is_file()
    mean_rmse = json.loads((tmp_path / "o" / "evaluation.json").read_text())["corrected"]["mean_rmse"]
    assert mean_rmse < 0.001
    code = run(["atmocorr", "run", str(tmp_path / "nothing.tif"), "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code != 0 and "no such file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_sample_l1c_is_the_6s_forward_model(sample):
    """The simulated DN decode to the 6S forward model of the surface (DN rounding only)."""
    from eotwin.atmocorr.sample_l1c import simulate_toa

    with rasterio.open(sample.l1c) as ds:
        assert ds.descriptions == S2_BANDS and ds.tags()["RADIO_ADD_OFFSET"] == "-1000"
        dn = ds.read(window=((0, 20), (100, 140))).astype(np.float64)
    toa = simulate_toa(
        sample.surface[:, 0:20, 100:140],
        load_lut(LUT),
        sensor="S2A",
        aerosol="continental",
        aot=0.2,
        wv=1.5,
        o3=0.33,
        **GEOMETRY,
    )
    np.testing.assert_allclose((dn - 1000) / 10000, toa, atol=0.5e-4 + 1e-7)


def test_demo_step_writes_its_figures_and_evaluation(tmp_path, monkeypatch):
    from eotwin.atmocorr import lut as lut_module
    from eotwin.atmocorr.demo import atmocorr_demo
    from eotwin.progress import NullProgress
    from eotwin.report.demo import DemoContext

    monkeypatch.setattr(lut_module, "DEFAULT_LUT_PATH", LUT)
    context = DemoContext(tmp_path, sample=None, progress=NullProgress())  # the step makes its own L1C
    artifacts = atmocorr_demo(context)
    images = [a for a in artifacts if a.kind == "image"]
    assert len(images) >= 3
    for art in artifacts:
        assert (tmp_path / art.path).is_file(), art.path
    evaluation = json.loads((tmp_path / "atmocorr" / "6s-ddv" / "evaluation.json").read_text())
    assert evaluation["corrected"]["mean_rmse"] < evaluation["toa_unchanged"]["mean_rmse"]
    assert "6s-ddv estimated AOT" in context.notes[0]
    # ai as the default runs it (with its OOD fallback) beside the network alone
    as_run = json.loads((tmp_path / "atmocorr" / "ai" / "item.json").read_text())["properties"]
    network = json.loads((tmp_path / "atmocorr" / "ai-network" / "item.json").read_text())["properties"]
    assert network["eotwin:method"] == "ai" and network["eotwin:atmosphere"]["fallback"] != "none"
    assert network["eotwin:atmosphere"]["fallback"].startswith("disabled")  # the sample scene is beyond it
    assert as_run["eotwin:method"] == "6s-ddv" and as_run["eotwin:atmosphere"]["fallback"].startswith("6s-ddv:")
    # the same side by side on a real surface (Major-TOM T48QUE) under a maritime atmosphere
    titles = [a.title for a in images]
    assert any("Major-TOM" in t for t in titles) and "Major-TOM cell T48QUE" in context.notes[1]
    real = json.loads((tmp_path / "atmocorr" / "majortom_6s-ddv" / "evaluation.json").read_text())
    assert real["corrected"]["mean_rmse"] < real["toa_unchanged"]["mean_rmse"]


def test_scene_sample_of_a_stack_is_an_even_decimation_read_in_blocks(sample):
    from eotwin.sentinel2.products import open_l1c
    from eotwin.sentinel2.reading import BandReader, read_toa

    product = open_l1c(sample.l1c)
    with BandReader(product.bands, product.grid) as reader:
        got = pipeline.read_scene_sample(reader, product, max_side=50, block_rows=30)  # step 4, blocks of 28 rows
        full = read_toa(reader, product, L2A_BANDS)[:, ::4, ::4]
    valid = np.isfinite(full).all(axis=0)
    np.testing.assert_array_equal(got.toa[:, 0, :], full[:, valid])
    assert got.angles["sun_zenith"] == pytest.approx(35.0)


def test_reference_l2a_safe_with_scl_masks_cloudy_pixels(sample, shared_fixtures, tmp_path):
    """A reference L2A SAFE (real N04.00 MTD_MSIL2A.xml; bands JP2 at 10 and 20 m; SCL flags clouds)."""
    import shutil

    from eotwin.sentinel2.metadata import parse_product_metadata

    name = "S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE"
    safe = tmp_path / name
    safe.mkdir()
    shutil.copyfile(shared_fixtures / "safe" / name / "MTD_MSIL2A.xml", safe / "MTD_MSIL2A.xml")
    meta = parse_product_metadata((safe / "MTD_MSIL2A.xml").read_bytes())
    with rasterio.open(sample.truth) as ds:
        truth_dn, transform, crs = ds.read(), ds.transform, ds.crs
    n = truth_dn.shape[1]
    scl20 = np.full((n // 2, n // 2), 4, dtype=np.uint8)
    scl20[:20] = 9  # cloud, high probability: the first 40 rows at 10 m leave the evaluation
    for (band, res), rel in meta.image_files.items():
        if res == 60 or (res == 20 and (band, 10) in meta.image_files) or band in ("TCI", "AOT", "WVP"):
            continue
        if band == "SCL":
            data = scl20
        else:
            dn = truth_dn[L2A_BANDS.index(band)].astype(np.float64)
            data = dn if res == 10 else dn.reshape(n // 2, 2, n // 2, 2).mean(axis=(1, 3))
            data = np.rint(data).astype(np.uint16)
        path = safe / (rel + ".jp2")
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", driver="JP2OpenJPEG", width=data.shape[1], height=data.shape[0], count=1,
                           dtype=data.dtype.name, crs=crs, QUALITY=100, REVERSIBLE="YES",
                           transform=rasterio.Affine(res, 0, transform.c, 0, -res, transform.f)) as dst:
            dst.write(data[None])
    result = _run(sample.l1c, tmp_path / "out", method="6s-ddv", aot=0.2, wv=1.5, reference=safe)
    metrics = result.metrics
    assert metrics["valid_pixels"].startswith("finite in both, SCL in 4,5,6,7")
    assert metrics["corrected"]["pixels"] == int(sample.valid[40:].sum())
    for band in ("B02", "B03", "B04", "B08"):  # 10 m reference bands: the exact surface
        assert metrics["corrected"]["bands"][band]["rmse"] < 0.001


def test_ozone_comes_from_the_user_then_the_product_then_the_fallback():
    """``--ozone`` wins; else the product's own (ECMWF in a SAFE, the OZONE tag of a stack); else the
    climatology (6s-ddv) or nothing, which lets the AI use its network's estimate."""
    from types import SimpleNamespace

    from eotwin.atmocorr.correctors import resolve_ozone
    from eotwin.atmocorr.lut import load_lut

    carries = SimpleNamespace(ozone=0.29, ozone_source="ECMWF AUX_ECMWFT")
    bare = SimpleNamespace(ozone=None, ozone_source=None)
    table = load_lut(LUT)  # ozone axis 0.25-0.45 cm-atm
    assert resolve_ozone(0.4, carries, fallback=0.33, lut=table) == (0.4, "given")
    assert resolve_ozone(None, carries, fallback=0.33, lut=table) == (0.29, "ECMWF AUX_ECMWFT")
    assert resolve_ozone(None, bare, fallback=0.33, lut=table) == (0.33, "climatology")
    assert resolve_ozone(None, bare, fallback=None, lut=table) == (None, "network estimate")
    # an ozone-hole column from the product is clamped to the table, and says so; a given one is an error
    hole = SimpleNamespace(ozone=0.15, ozone_source="ECMWF AUX_ECMWFT")
    value, source = resolve_ozone(None, hole, fallback=0.33, lut=table)
    assert value == 0.25 and "0.150 clamped" in source
    with pytest.raises(EotwinError, match="outside the 6S table"):
        resolve_ozone(0.6, carries, fallback=0.33, lut=table)
