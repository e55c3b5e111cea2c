"""AI atmospheric correction: simulated data physics, network/ONNX equality, tiling, training, pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from eotwin.atmocorr.ai import synth
from eotwin.atmocorr.lut import DEFAULT_LUT_PATH, load_lut
from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import L2A_BANDS

LUT = Path(os.environ.get("EOTWIN_ATMOCORR_LUT", DEFAULT_LUT_PATH))
AI_MEAN_RMSE_BOUND = 0.006  # the committed model: mean over bands on two held-out scenes (measured 0.0026)

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def lut():
    return load_lut(LUT)


@pytest.fixture(scope="module")
def surfaces(ben_mock_dir):
    return synth.ben_surfaces(ben_mock_dir, synth.TRAIN_SPLITS)


@pytest.fixture(scope="module")
def random_model():
    """A network with non-trivial weights (the trained head starts at zero, which hides errors)."""
    from eotwin.atmocorr.ai.model import AtmoNet, ModelConfig

    torch.manual_seed(3)
    model = AtmoNet(ModelConfig(features=6, feature_hidden=8, hidden=12, windows=(3, 7), cell=3, out_stride=2,
                                hypotheses=2, attention=2, attention_values=2))
    with torch.no_grad():
        for p in model.head[-1].parameters():
            p.normal_(std=0.5)
    return model.eval()


@pytest.fixture(scope="module")
def random_onnx(random_model, tmp_path_factory):
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel, export_onnx

    path = export_onnx(random_model, tmp_path_factory.mktemp("onnx") / "m.onnx", {"version": "test"})
    return OnnxModel(path, threads=1, lut_path=LUT)


def _inputs(h=70, w=53, seed=0):
    rng = np.random.default_rng(seed)
    toa = (0.03 + 0.25 * rng.random((12, h, w))).astype(np.float32)
    angles = np.stack([np.full((h, w), 42.0), np.linspace(2, 10, w)[None].repeat(h, 0), np.full((h, w), 120.0)])
    valid = np.ones((h, w), bool)
    valid[5:15, 3:9] = False
    return toa, angles.astype(np.float32), valid


# ----------------------------------------------------------------------------- simulated data
def test_ben_surfaces_are_the_real_train_patches(surfaces, ben_mock_dir):
    test = synth.ben_surfaces(ben_mock_dir, synth.TEST_SPLITS)
    assert len(surfaces) == 12 and len(test) == 6 and not set(surfaces) & set(test)
    s = next(iter(surfaces.values()))
    assert s.shape == (12, 120, 120) and s.dtype == np.float32
    # L2A reflectance of vegetated Austria in June: NIR far above red
    assert 0.0 < np.median(s[L2A_BANDS.index("B04")]) < 0.1 < np.median(s[L2A_BANDS.index("B08")]) < 0.6


def test_builtin_spectra_are_physical():
    spectra = dict(zip(synth.BUILTIN_SPECTRA, synth.builtin_spectra(), strict=True))
    assert spectra["ClearWater"][L2A_BANDS.index("B11")] < 0.001  # water absorbs the SWIR
    veg = spectra["GreenVegetation"]
    assert veg[L2A_BANDS.index("B08")] > 3 * veg[L2A_BANDS.index("B04")]  # red edge
    assert np.all((synth.builtin_spectra() >= 0) & (synth.builtin_spectra() < 0.7))


def test_terms_per_pixel_equal_a_lookup_pixel_by_pixel(lut):
    rng = np.random.default_rng(1)
    atm = synth.sample_atmosphere(rng, lut)
    aot = rng.uniform(lut.axes["aot"][0], lut.axes["aot"][-1], size=(4, 5))
    path, gain, s_alb = synth.terms_per_pixel(atm, aot, lut)
    ref = lut.terms_for(atm.sensor, L2A_BANDS, atm.aerosol, aot, atm.sza, atm.vza, atm.raa, atm.wv, atm.o3)
    np.testing.assert_allclose(path, ref.path, atol=2e-6)
    np.testing.assert_allclose(gain, ref.tg * ref.t_down * ref.t_up, atol=2e-6)
    np.testing.assert_allclose(s_alb, ref.s_alb, atol=2e-6)


def test_simulated_toa_round_trips_through_the_oracle(lut, surfaces):
    """Without noise, inverting with the true per-pixel atmosphere gives back the surface (< 0.001)."""
    from eotwin.atmocorr import physics

    rng = np.random.default_rng(2)
    surface = synth.augment(next(iter(surfaces.values())), 64, rng)
    atm = synth.sample_atmosphere(rng, lut)
    toa, aot, _ = synth.simulate(surface, atm, lut, rng, noise=False)
    assert aot.std() > 0 or atm.aot_log_std == 0  # a field, not a constant
    assert np.abs(toa - surface).mean() > 0.005  # the atmosphere changes the signal
    boa = physics.lut_correction(toa, L2A_BANDS, lut, sensor=atm.sensor,
                                 atmosphere=physics.Atmosphere(aot, atm.wv, atm.o3, atm.aerosol), geometry=atm.geometry)
    assert np.abs(boa - surface).max() < 1e-3
    noisy = synth.add_noise(toa, rng)
    assert 0.0002 < np.std(noisy - toa) < 0.003 and np.allclose(noisy * 1e4, np.round(noisy * 1e4), atol=1e-2)


def test_sampled_atmospheres_stay_in_the_documented_ranges(lut):
    rng = np.random.default_rng(3)
    atms = [synth.sample_atmosphere(rng, lut) for _ in range(300)]
    for key in ("wv", "o3", "sza", "vza", "raa"):
        lo, hi = synth.SAMPLING[key]
        vals = np.array([getattr(a, key) for a in atms])
        assert vals.min() >= max(lo, lut.axes[key][0]) - 1e-6 and vals.max() <= min(hi, lut.axes[key][-1]) + 1e-6
    assert {a.aerosol for a in atms} == set(lut.aerosols) & {"continental", "maritime"}
    fields = np.stack([synth.smooth_field((64, 64), 20.0, rng) for _ in range(60)])
    assert 0.7 < np.sqrt(np.mean(fields**2)) < 1.3  # unit variance over realisations
    assert np.abs(np.diff(fields, axis=1)).mean() < 0.1  # smooth: neighbours nearly equal


def test_spectral_tilt_scales_whole_band_groups_within_their_ranges(surfaces):
    """Training patches get other vegetation colours: visible, NIR and SWIR each scaled as a group."""
    surface = next(iter(surfaces.values()))
    rng = np.random.default_rng(9)
    ratios = []
    for _ in range(200):
        tilted = synth.spectral_tilt(surface, rng, {"visible": 0.2, "nir": 0.1, "swir": 0.2})
        factor = tilted[:, 60, 60] / surface[:, 60, 60]
        np.testing.assert_allclose(factor[:4], factor[0], rtol=1e-6)  # B01-B04 together
        np.testing.assert_allclose(factor[5:10], factor[5], rtol=1e-6)  # the NIR plateau together
        assert factor[10] == pytest.approx(factor[11]) and factor[4] == pytest.approx(np.sqrt(factor[0]))
        assert np.exp(-0.2) - 1e-6 <= factor[0] <= np.exp(0.2) + 1e-6 and abs(np.log(factor[5])) <= 0.1 + 1e-6
        ratios.append(factor[3] / factor[11])
    assert min(ratios) < 0.75 and max(ratios) > 1.33  # red/SWIR ratios well beyond the training patches'


# ----------------------------------------------------------------------------- network, table layer, ONNX
def test_box_sum_matches_a_direct_window_sum():
    from eotwin.atmocorr.ai.model import box_sum

    x = torch.arange(5 * 7, dtype=torch.float64).reshape(1, 1, 5, 7)
    got = box_sum(x, 1)[0, 0].numpy()
    padded = np.pad(x[0, 0].numpy(), 1)
    expected = sum(padded[i : i + 5, j : j + 7] for i in range(3) for j in range(3))
    np.testing.assert_allclose(got, expected)


def test_box_sum_keeps_small_windows_exact_beside_large_running_totals():
    """A full tile's row holds 1830 cells: a float32 cumulative sum lost the small windows' sums
    after large values (found with attention weights up to e^12)."""
    from eotwin.atmocorr.ai.model import box_sum

    row = np.concatenate([np.full(1800, 1e5), np.full(40, 1e-3)]).astype(np.float32)
    got = box_sum(torch.from_numpy(row).view(1, 1, 1, -1), 2, wide=True)[0, 0, 0].numpy()
    np.testing.assert_allclose(got[-20:-3], np.full(17, 5e-3, np.float32), rtol=1e-4)
    assert got[1000] == pytest.approx(5e5, rel=1e-6)


def test_hypothesis_features_invert_under_both_aerosol_models(lut):
    """Level 2 carries the cells' B01/B02/B04/B12 inverted under continental and under maritime aerosol:
    at a high AOT the two differ (the aerosol's colour), each equal to the table inversion."""
    from eotwin.atmocorr import physics
    from eotwin.atmocorr.ai import cells as cellmath

    toa, _, valid = _inputs(24, 24, seed=2)
    angles = np.array([35.0, 4.0, 60.0], np.float32)[:, None, None]
    one, _, _ = cellmath.network_inputs(toa, valid, angles, lut, "S2B", cell=6, out_stride=4, bright_toa=0.3,
                                        hypotheses=1)
    two, _, _ = cellmath.network_inputs(toa, valid, angles, lut, "S2B", cell=6, out_stride=4, bright_toa=0.3)
    assert one.shape[0] == cellmath.n_cell_inputs(1) and two.shape[0] == cellmath.n_cell_inputs(2)
    n_aot = len(cellmath.HYPOTHESIS_AOT) * len(cellmath.HYPOTHESIS_BANDS)
    base = cellmath.N_BASE_INPUTS
    np.testing.assert_array_equal(two[: base + 2 * n_aot], one[: base + 2 * n_aot])  # continental first, as before
    maritime_means = two[base + 2 * n_aot : base + 3 * n_aot].reshape(4, 3, *two.shape[1:])
    b04, aot_05 = cellmath.HYPOTHESIS_BANDS.index("B04"), cellmath.HYPOTHESIS_AOT.index(0.5)
    cell_toa = two[L2A_BANDS.index("B04"), 1, 1]
    expected = physics.lut_correction(np.full((1, 1, 1), cell_toa, np.float32), ("B04",), lut, sensor="S2B",
                                      atmosphere=physics.Atmosphere(0.5, lut.wv_ref, lut.o3_ref, "maritime"),
                                      geometry=physics.Geometry(35.0, 4.0, 60.0))
    assert maritime_means[b04, aot_05, 1, 1] == pytest.approx(float(expected[0, 0, 0]), abs=2e-4)
    continental = one[base : base + n_aot].reshape(4, 3, *one.shape[1:])
    assert abs(maritime_means[b04, aot_05, 1, 1] - continental[b04, aot_05, 1, 1]) > 0.003


def test_cell_inputs_are_valid_pixel_means_and_minima():
    from eotwin.atmocorr.ai.cells import cell_angles, cell_inputs

    toa, angles, valid = _inputs(13, 8)
    toa[1, 0, 0] = 0.5  # bright B02: out of the context
    cells = cell_inputs(toa, valid, 3, 2, bright_toa=0.3)
    assert cells.shape == (25, 6, 4)  # 13 x 8 px padded to whole 6 x 6 atmosphere cells
    ok = valid.copy()
    ok[0, 0] = False
    block = (slice(0, 3), slice(0, 3))
    np.testing.assert_allclose(cells[:12, 0, 0], toa[:, block[0], block[1]][:, ok[block]].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(cells[12:24, 0, 0], toa[:, block[0], block[1]][:, ok[block]].min(axis=1))
    assert cells[24, 0, 0] == pytest.approx(8 / 9)
    assert cells[24, 2, 1] == 0 and cells[24, 4, 0] == pytest.approx(1 / 3)  # invalid block; partly padded cell
    assert cell_angles(angles, 3, 2).shape == (3, 6, 4)


def test_upsampling_equals_torch_bilinear():
    from eotwin.atmocorr.ai.cells import upsample_bilinear

    x = np.random.default_rng(1).random((2, 4, 5)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x)[None], scale_factor=6.0, mode="bilinear",
                                               align_corners=False)[0, :, :22, :29].numpy()
    np.testing.assert_allclose(upsample_bilinear(x, 6, 22, 29), expected, atol=1e-6)


def test_training_graph_equals_inference(random_model, random_onnx, lut):
    """What the network is trained through (torch: table layer, upsampling, inversion) is what
    ``eotwin atmocorr run`` computes (onnxruntime, SixSLut.terms_for, numpy)."""
    from eotwin.atmocorr.ai.cells import network_inputs
    from eotwin.atmocorr.ai.model import TableLayer, invert, scene_tables, tables_to_torch, upsample

    toa, _, valid = _inputs(66, 42, seed=8)
    valid[:] = True
    geometry = ("S2C", 51.0, 3.0, 75.0)
    angles = np.broadcast_to(np.array(geometry[1:], np.float32)[:, None, None], (3, 66, 42))
    boa, aot = random_onnx.predict(toa, angles, valid, sensor="S2C", aerosol="cells")  # training blends per cell
    c = random_model.config
    cells, cang, _ = network_inputs(toa, valid, angles[:, :1, :1], lut, "S2C", cell=c.cell, out_stride=c.out_stride,
                                    bright_toa=c.bright_toa)
    with torch.no_grad():
        atm = random_model(torch.from_numpy(cells)[None], torch.from_numpy(cang)[None])
        terms = TableLayer()(atm, tables_to_torch(scene_tables(lut, [geometry])))
        up = [upsample(t, c.out_stride, c.cell, 66, 42) for t in terms]
        expected = invert(torch.from_numpy(toa)[None], *up)[0].numpy()
    np.testing.assert_allclose(boa, expected, atol=2e-5)
    assert np.isfinite(aot).all() and np.ptp(expected) > 0.1


def test_table_layer_equals_the_lut_lookup(lut):
    """The torch table the network trains through gives what inference gets from SixSLut.terms_for."""
    from eotwin.atmocorr.ai.cells import table_terms
    from eotwin.atmocorr.ai.model import TableLayer, scene_tables, tables_to_torch

    rng = np.random.default_rng(4)
    geometry = ("S2B", 37.0, 6.5, 140.0)
    atm = np.stack([rng.uniform(0.01, 0.7, (3, 4)), rng.uniform(0.3, 4.8, (3, 4)), rng.uniform(0.26, 0.44, (3, 4)),
                    rng.uniform(0, 1, (3, 4))]).astype(np.float32)
    tables = tables_to_torch(scene_tables(lut, [geometry]))
    got = TableLayer()(torch.from_numpy(atm)[None], tables)
    angles = np.broadcast_to(np.array(geometry[1:], np.float32)[:, None, None], (3, 3, 4))
    expected = table_terms(lut, "S2B", atm, angles, L2A_BANDS)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g[0].numpy(), e, rtol=2e-5, atol=2e-6)


def test_onnx_equals_torch(random_model, random_onnx, lut):
    from eotwin.atmocorr.ai.cells import N_CELL_INPUTS, network_inputs

    toa, angles, valid = _inputs()
    cells, cang, _ = network_inputs(toa, valid, angles, lut, "S2A", cell=3, out_stride=2, bright_toa=0.3)
    assert cells.shape[0] == N_CELL_INPUTS
    with torch.no_grad():
        atm = random_model(torch.from_numpy(cells)[None], torch.from_numpy(cang)[None])[0].numpy()
    got, _ = random_onnx.atmosphere(toa, angles, valid, sensor="S2A")
    np.testing.assert_allclose(got, atm, rtol=1e-5, atol=1e-6)
    assert np.ptp(got[0]) > 1e-3  # the AOT varies: not a constant


def test_blocks_with_overlap_equal_one_pass(random_onnx, lut):
    toa, angles, valid = _inputs(150, 61, seed=5)
    # per-cell aerosol: a block's own scene-wide choice would differ (the pipeline fixes one per scene)
    whole_boa, whole_aot = random_onnx.predict(toa, angles, valid, sensor="S2A", aerosol="cells")
    assert whole_boa.shape == (12, 150, 61) and whole_aot.shape == (150, 61)
    assert np.isnan(whole_boa[:, 6, 4]).all() and np.isfinite(whole_boa[:, valid]).all()
    stride, overlap = random_onnx.stride, random_onnx.overlap
    for start in (stride * 4, stride * 9):  # a block of rows starting on a whole atmosphere cell
        r0 = start - overlap
        boa, aot = random_onnx.predict(toa[:, r0:], angles[:, r0:], valid[r0:], sensor="S2A", aerosol="cells")
        np.testing.assert_allclose(boa[:, overlap:], whole_boa[:, start:], atol=2e-6)
        np.testing.assert_allclose(aot[overlap:], whole_aot[start:], rtol=2e-6)
    # the surface is the table inversion with the model's own atmosphere: check one pixel against terms_for
    atm, atm_angles = random_onnx.atmosphere(toa, angles, valid, sensor="S2A")
    t = lut.terms_for("S2A", L2A_BANDS, "continental", float(whole_aot[30, 30]), 42.0, float(angles[1, 30, 30]),
                      120.0, 2.0, 0.35)
    assert t.path.shape == (12,) and atm.shape[0] == 4 and atm_angles.shape[0] == 3


def test_a_known_ozone_replaces_the_networks_estimate(random_onnx, lut):
    """``ozone`` (ECMWF's, from the L1C) overrides the network's ozone only: the AOT and water vapour stay,
    the surface changes where ozone absorbs (the Chappuis band: B03, B04), not in the SWIR."""
    toa, angles, valid = _inputs()
    own, _ = random_onnx.atmosphere(toa, angles, valid, sensor="S2A")
    given, _ = random_onnx.atmosphere(toa, angles, valid, sensor="S2A", ozone=0.41)
    np.testing.assert_array_equal(given[2], np.float32(0.41))
    np.testing.assert_array_equal(given[[0, 1, 3]], own[[0, 1, 3]])
    boa_own, aot_own = random_onnx.predict(toa, angles, valid, sensor="S2A")
    boa_low, aot_low = random_onnx.predict(toa, angles, valid, sensor="S2A", ozone=0.26)
    boa_high, _ = random_onnx.predict(toa, angles, valid, sensor="S2A", ozone=0.44)
    np.testing.assert_array_equal(aot_low, aot_own)
    b03, b12 = L2A_BANDS.index("B03"), L2A_BANDS.index("B12")
    step = np.nanmean(boa_high - boa_low, axis=(1, 2))
    assert step[b03] > 1e-3 and abs(step[b12]) < 1e-5  # more ozone absorbed: a brighter surface in green
    with pytest.raises(EotwinError, match="outside the 6S table") as info:
        random_onnx.atmosphere(toa, angles, valid, sensor="S2A", ozone=0.9)
    assert "\n" not in str(info.value)


def test_prediction_needs_the_twelve_bands(random_onnx):
    toa, angles, valid = _inputs()
    with pytest.raises(EotwinError, match="12"):
        random_onnx.predict(toa[:11], angles, valid, sensor="S2A")


def test_a_missing_foreign_or_old_model_is_a_one_line_error(tmp_path):
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel

    with pytest.raises(EotwinError, match="not found"):
        OnnxModel(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(EotwinError, match="cannot load") as info:
        OnnxModel(bad)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- training
def test_a_short_training_lowers_the_error_and_exports(tmp_path, ben_mock_dir):
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.ai.train import TrainOptions, load_torch_model, train

    options = TrainOptions(output=tmp_path / "m.onnx", steps=30, batch=2, layout=(1, 1), windows=(3, 5), features=4,
                           hidden=8, lr=1e-2, lut=LUT, ben_dir=ben_mock_dir, threads=1, workers=0)
    result = train(options)
    assert result.onnx_path.is_file() and result.weights_path.is_file() and result.steps == 30
    model, record = load_torch_model(result.weights_path)
    hist = record["history"]
    assert record["train_sources"] == ["ben"] and list(record["train_patches"]) == ["ben"]
    assert record["train_patches"]["ben"] and not any("_26_57" in p for p in record["train_patches"]["ben"])  # test split out
    assert np.isfinite(result.final_loss) and hist[-1]["step"] == 30
    assert record["validation"]["boa_rmse"] < record["validation_initial"]["boa_rmse"]
    onnx_model = OnnxModel(result.onnx_path, threads=1, lut_path=LUT)
    assert onnx_model.stride == 24 and onnx_model.overlap == 8 * 6 and onnx_model.metadata["steps"] == 30
    toa, angles, valid = _inputs(48, 48)
    from eotwin.atmocorr.ai.cells import network_inputs

    cells, cang, _ = network_inputs(toa, valid, angles, onnx_model.lut, "S2B", cell=6, out_stride=4, bright_toa=0.3)
    with torch.no_grad():
        atm = model(torch.from_numpy(cells)[None], torch.from_numpy(cang)[None])[0].numpy()
    got = onnx_model.atmosphere(toa, angles, valid, sensor="S2B")[0]
    np.testing.assert_allclose(got, atm, rtol=1e-5, atol=1e-6)


def test_training_options_are_checked(tmp_path):
    from eotwin.atmocorr.ai.train import TrainOptions, train

    with pytest.raises(EotwinError, match="odd"):
        train(TrainOptions(output=tmp_path / "m.onnx", steps=1, windows=(8,), lut=LUT))
    assert not (tmp_path / "m.onnx").exists()


def test_cli_train_rejects_bad_options_in_one_line(tmp_path, capsys):
    from eotwin.cli.main import run

    for args, expected in ((["--workers", "-1"], "workers"), (["--mosaic", "2by2"], "--mosaic"),
                           (["--windows", "5;17"], "--windows")):
        code = run(["-q", "atmocorr", "train", "-o", str(tmp_path / "m.onnx"), "--lut", str(LUT), *args])
        err = capsys.readouterr().err.strip()
        assert code != 0 and expected in err and "\n" not in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------------- pipeline
def test_pipeline_ai_blocks_equal_one_pass_and_write_an_aot_map(random_onnx, sample_scene, tmp_path):
    """Row blocks that do not start on whole cells still give exactly the one-block result."""
    import rasterio

    from eotwin.atmocorr import pipeline
    from eotwin.atmocorr.sample_l1c import make_sample_l1c

    made = make_sample_l1c(tmp_path / "in", sample_scene, lut_path=LUT, ozone_tag=False)
    runs = {}
    for rows in (13, 10_000):
        options = pipeline.make_options(input=made.l1c, output=tmp_path / f"out{rows}", method="ai",
                                        model=random_onnx.path, block_rows=rows, lut=LUT)
        result = pipeline.run_correction(options)
        assert result.method == "ai" and "aot" in result.files
        with rasterio.open(result.files["l2a"]) as ds, rasterio.open(result.files["aot"]) as aot:
            runs[rows] = (ds.read(), aot.read(1))
    for k in (0, 1):  # equal up to float32 rounding (summation order), which flips a DN in ~1e-5 of values
        diff = np.abs(runs[13][k].astype(np.int64) - runs[10_000][k])
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-4
    assert (runs[13][1][made.valid] > 0).all()
    with rasterio.open(result.files["l2a"]) as ds:
        assert ds.tags()["ATMOCORR_OZONE"] == "network estimate"
    given = pipeline.run_correction(pipeline.make_options(input=made.l1c, output=tmp_path / "o3", method="ai",
                                                          model=random_onnx.path, lut=LUT, ozone=0.3))
    with rasterio.open(given.files["l2a"]) as ds:
        assert float(ds.tags()["ATMOCORR_OZONE"]) == 0.3 and ds.tags()["ATMOCORR_OZONE_SOURCE"] == "given"
        assert not np.array_equal(ds.read(L2A_BANDS.index("B03") + 1), runs[10_000][0][L2A_BANDS.index("B03")])
    # a product that carries its ozone (the stack's OZONE tag, ECMWF's in a SAFE) needs no --ozone
    tagged = make_sample_l1c(tmp_path / "tagged", sample_scene, lut_path=LUT, atmosphere={"o3": 0.3})
    own = pipeline.run_correction(pipeline.make_options(input=tagged.l1c, output=tmp_path / "tag", method="ai",
                                                        model=random_onnx.path, lut=LUT))
    assert (own.atmosphere["ozone"], own.atmosphere["ozone_source"]) == (0.3, "OZONE tag")


def test_pipeline_ai_computes_each_atmosphere_row_once(random_onnx, sample_scene, tmp_path, monkeypatch):
    """Small row blocks: the network's inputs and its atmosphere are computed once per atmosphere row (the
    blocks' context rows are kept, not recomputed), and the run still equals one pass (test above)."""
    from eotwin.atmocorr import pipeline
    from eotwin.atmocorr.ai import cells as cellmath
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.sample_l1c import make_sample_l1c

    made = make_sample_l1c(tmp_path / "in", sample_scene, lut_path=LUT, ozone_tag=False)
    seen = {"network": 0, "inputs": 0, "scene": 0}
    network, inputs = OnnxModel.network, cellmath.network_inputs

    def counting_network(self, cells, per_cell, ozone=None, maritime=None):
        # the scene's aerosol choice looks at the whole (small) scene once, before the blocks; the blocks'
        # atmosphere carries that choice
        seen["network" if maritime is not None else "scene"] += cells.shape[1]
        return network(self, cells, per_cell, ozone, maritime)

    def counting_inputs(toa, *args, **kwargs):
        seen["inputs"] += toa.shape[1]
        return inputs(toa, *args, **kwargs)

    monkeypatch.setattr(OnnxModel, "network", counting_network)
    monkeypatch.setattr(cellmath, "network_inputs", counting_inputs)
    options = pipeline.make_options(input=made.l1c, output=tmp_path / "out", method="ai", model=random_onnx.path,
                                    block_rows=13, lut=LUT, ood_fallback=False)
    pipeline.run_correction(options)
    height = made.valid.shape[0]
    cell_rows = -(-height // (random_onnx.stride)) * random_onnx.out_stride
    blocks = -(-height // 13)
    context_cells = 2 * max(random_onnx.metadata["config"]["windows"]) // 2  # both sides, whole atmosphere rows
    context_cells = -(-context_cells // (2 * random_onnx.out_stride)) * 2 * random_onnx.out_stride
    assert seen["inputs"] == height + height  # every pixel row once, and once in the scene's aerosol choice
    assert seen["scene"] == cell_rows
    # network rows: each atmosphere row once, plus the context of each call (blocks with overlap: many times more)
    assert cell_rows <= seen["network"] <= cell_rows + blocks * context_cells, (seen, cell_rows)
    per_block_before = blocks * (13 + 2 * random_onnx.overlap + random_onnx.stride) // random_onnx.cell
    assert seen["network"] < 0.6 * per_block_before


def test_default_method_is_the_ai_with_its_fallback():
    """Issue 13: the default is the winner of the leave-one-source-out evaluation, ``ai`` as the pipeline
    runs it (the network, or 6s-ddv beyond its OOD threshold); the committed model must be there."""
    from eotwin.atmocorr import correctors

    assert ai_model_available_for_tests()
    assert correctors.default_method() == "ai"


def ai_model_available_for_tests() -> bool:
    import eotwin.atmocorr.ai as ai

    return bool(ai.model_available())


# ----------------------------------------------------------------------------- the committed model
def test_committed_model_corrects_a_held_out_scene(lut, ben_mock_dir):
    """Held-out surfaces under a held-out atmosphere: far better than TOA, near the 6S oracle.

    (DOS is no longer a low bar here: read through the 6S table it scores 0.0010 on these two scenes
    against the AI's 0.0024, as measured when it changed; see docs/atmocorr-ai.md.)"""
    from eotwin.atmocorr.ai import DEFAULT_MODEL_PATH
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.evaluation import heldout

    model = OnnxModel(DEFAULT_MODEL_PATH, threads=1)
    assert DEFAULT_MODEL_PATH.stat().st_size + DEFAULT_MODEL_PATH.with_suffix(".pt").stat().st_size < 5 * 2**20
    scenes = heldout.make_test_scenes(lut, 2, seed=4242, ben_dir=ben_mock_dir)
    rmse = {m: [] for m in ("ai", "dos", "none", "6s-oracle")}
    for scene in scenes:
        for method in rmse:
            boa = heldout.correct_scene(method, scene, lut, model)
            rmse[method].append(np.sqrt(np.nanmean((boa - scene.boa) ** 2, axis=(1, 2))))
    mean = {m: float(np.mean(v)) for m, v in rmse.items()}
    assert mean["ai"] < 0.2 * mean["none"] and mean["dos"] < 0.2 * mean["none"]
    assert mean["6s-oracle"] < mean["ai"] < AI_MEAN_RMSE_BOUND


def test_evaluation_report_and_picture(ben_mock_dir, tmp_path):
    """The held-out evaluation writes its JSON and PNG, scores every method and records the AI's atmosphere."""
    import json

    from eotwin.atmocorr.evaluation import heldout

    report = heldout.evaluate(heldout.EvaluateOptions(output=tmp_path, scenes=1, seed=77, ben_dir=ben_mock_dir))
    saved = json.loads((tmp_path / "evaluation_ai.json").read_text())
    assert (tmp_path / "evaluation_ai.png").stat().st_size > 10_000
    assert set(saved["methods"]) == set(heldout.METHODS)
    oracle, none = (saved["methods"][m]["table"]["mean_rmse"] for m in ("6s-oracle", "none"))
    assert oracle < 0.3 * none
    (row,) = saved["ai_atmosphere"]
    assert row["aerosol"] in ("continental", "maritime") and 0.0 <= row["ai_p_maritime"] <= 1.0
    assert row["ai_aot"] > 0 and abs(row["ai_wv"] - row["wv"]) < 1.0  # water vapour is the easy part
    assert "of 1 scenes" in heldout.aerosol_type_summary(report)
    assert 0.25 <= row["ai_o3"] <= 0.45 and "RMSE" in heldout.ozone_summary(report)
    assert set(saved["acceptance"]) - {"source"} == set(L2A_BANDS)
    b03 = saved["acceptance"]["B03"]
    ai_own, ddv_clim = (saved["methods"][m]["table"]["bands"]["B03"]["rmse"]
                        for m in ("ai-own-ozone", "6s-ddv-climatology-ozone"))
    assert b03["beats_ddv_without_ozone"] == (ai_own < ddv_clim)
    # the two pairs differ only in the ozone they are given
    assert saved["methods"]["ai"]["table"]["bands"]["B12"]["rmse"] == pytest.approx(
        saved["methods"]["ai-own-ozone"]["table"]["bands"]["B12"]["rmse"], rel=1e-3)


def test_run_with_the_committed_ai_model(sample_scene, tmp_path):
    """``eotwin atmocorr run --method ai`` beats TOA-left-unchanged on the sample scene, whose surfaces
    (procedural, not BigEarthNet) the model never saw."""
    from eotwin.atmocorr import pipeline
    from eotwin.atmocorr.sample_l1c import make_sample_l1c

    made = make_sample_l1c(tmp_path / "in", sample_scene, lut_path=LUT)
    # the scene is out of the model's distribution (OOD score above the threshold, tests/atmocorr/test_ood.py):
    # without --no-ood-fallback the run would correct it with 6s-ddv; here the AI's own result is measured
    result = pipeline.run_correction(pipeline.make_options(input=made.l1c, output=tmp_path / "out",
                                                           reference=made.truth, lut=LUT, method="ai",
                                                           ood_fallback=False))
    assert result.method == "ai" and result.files["aot"].is_file()
    m = result.metrics
    # measured 0.0126 vs 0.054 (6S + DDV: 0.0026): a third of this scene is brighter than any training
    # surface, so the gain is smaller than on BigEarthNet surfaces (0.003 vs 0.05)
    assert m["corrected"]["mean_rmse"] < 0.6 * m["toa_unchanged"]["mean_rmse"]


# ----------------------------------------------------------------------------- one aerosol model per scene
def test_scene_maritime_weights_cells_by_their_valid_share_and_snaps_when_clear():
    from eotwin.atmocorr.ai.cells import SCENE_AEROSOL_SNAP, scene_maritime

    lo, hi = SCENE_AEROSOL_SNAP
    p = np.array([[0.9, 0.1], [0.5, 0.5]])
    assert scene_maritime(p, np.array([[1.0, 0.0], [0.0, 0.0]])) == (0.9, 1.0)  # only the first cell has pixels
    assert scene_maritime(p, np.array([[0.0, 1.0], [0.0, 0.0]])) == (0.1, 0.0)
    mean, used = scene_maritime(p, np.array([[1.0, 1.0], [0.5, 0.5]]))
    assert mean == pytest.approx(0.5) and used == pytest.approx(0.5)  # unsure: the blend of the scene mean
    assert scene_maritime(np.full((1, 1), hi), np.ones((1, 1)))[1] == hi  # the limits themselves stay a blend
    assert scene_maritime(np.full((1, 1), lo), np.ones((1, 1)))[1] == lo
    assert all(np.isnan(scene_maritime(p, np.zeros((2, 2)))))


def test_prediction_uses_one_aerosol_choice_for_the_scene(random_onnx, lut):
    """``predict`` (as ``eotwin atmocorr run``) inverts every cell with the scene's choice; "cells" keeps the
    network's P per cell; the AOT is the network's either way."""
    from eotwin.atmocorr.ai.cells import ATMOSPHERE, scene_maritime

    toa, angles, valid = _inputs(66, 42, seed=3)
    atm, atm_angles, weights = random_onnx._atmosphere_and_weights(toa, angles, valid, sensor="S2A")
    k = ATMOSPHERE.index("maritime")
    assert np.ptp(atm[k]) > 1e-3  # the network's P varies over the cells
    mean, used = scene_maritime(atm[k], weights)
    assert weights.max() == 1.0 and weights.min() < 1.0  # the invalid block lowers its cells' weight
    boa, aot = random_onnx.predict(toa, angles, valid, sensor="S2A")
    per_cell, aot_cells = random_onnx.predict(toa, angles, valid, sensor="S2A", aerosol="cells")
    fixed = atm.copy()
    fixed[k] = used
    expected, _ = random_onnx.invert_rows(toa, fixed, atm_angles, row0=0, atm_row0=0, atm_rows=atm.shape[1],
                                          sensor="S2A", valid=valid)
    np.testing.assert_allclose(boa, expected, atol=1e-6, equal_nan=True)
    assert np.nanmax(np.abs(boa - per_cell)) > 1e-4
    np.testing.assert_array_equal(aot, aot_cells)
    assert random_onnx.scene_maritime([np.where(valid, toa, np.nan)], angles, sensor="S2A") == pytest.approx(
        (mean, used), abs=1e-6)
    with pytest.raises(EotwinError, match="aerosol"):
        random_onnx.predict(toa, angles, valid, sensor="S2A", aerosol="pixel")


def test_pipeline_records_the_scene_aerosol_choice_and_applies_it(lut, ben_mock_dir, tmp_path):
    """An in-distribution scene (held-out BigEarthNet patches): the run info says which model the network
    chose and from what P; the product equals ``predict`` on the whole scene."""
    import rasterio

    from eotwin.atmocorr import pipeline
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.evaluation import heldout
    from eotwin.atmocorr.sample_l1c import l1c_stack_tags
    from eotwin.geo.grid import Grid
    from eotwin.io.raster import write_geotiff
    from eotwin.sentinel2.bands import S2_BANDS
    from eotwin.sentinel2.radiometry import QUANTIFICATION, RADIO_ADD_OFFSET

    scene = heldout.make_test_scenes(lut, 1, seed=4343, ben_dir=ben_mock_dir)[0]
    atm = scene.atmosphere
    h, w = scene.toa.shape[1:]
    full = np.full((len(S2_BANDS), h, w), 0.01, np.float64)
    for i, band in enumerate(L2A_BANDS):
        full[S2_BANDS.index(band)] = scene.toa[i]
    dn = np.clip(np.round(full * QUANTIFICATION - RADIO_ADD_OFFSET), 1, 65535).astype(np.uint16)
    from affine import Affine

    grid = Grid(Affine(10.0, 0, 500000.0, 0, -10.0, 5100000.0), w, h, "EPSG:32632")
    geometry = {"sun_zenith": atm.sza, "sun_azimuth": 150.0, "view_zenith": atm.vza,
                "view_azimuth": (150.0 - atm.raa) % 360.0}
    write_geotiff(tmp_path / "l1c.tif", dn, grid, nodata=0, descriptions=list(S2_BANDS),
                  tags=l1c_stack_tags("EOTWIN_AEROSOL_TEST_L1C", f"Sentinel-2{atm.sensor[-1]}", geometry,
                                      {"aot": atm.aot, "wv": atm.wv, "o3": atm.o3, "aerosol": atm.aerosol},
                                      "test_ai.py"))
    result = pipeline.run_correction(pipeline.make_options(input=tmp_path / "l1c.tif", output=tmp_path / "out",
                                                           lut=LUT))
    info = result.atmosphere
    assert result.method == "ai" and info["fallback"] == "none", info
    assert info["aerosol_source"].startswith("network, scene mean P(maritime)")
    model = OnnxModel(lut_path=LUT)
    with rasterio.open(tmp_path / "l1c.tif") as ds:
        toa = (ds.read([S2_BANDS.index(b) + 1 for b in L2A_BANDS]).astype(np.float32) + RADIO_ADD_OFFSET) / QUANTIFICATION
    angles = heldout.scene_angles(scene)
    mean, used = model.scene_maritime([toa], angles, sensor=atm.sensor, ozone=atm.o3)
    assert info["maritime_probability"] == pytest.approx(mean, abs=1e-4)
    assert info["aerosol"] == ("maritime" if used == 1.0 else "continental" if used == 0.0
                               else f"blend, P(maritime) {used:.3f}")
    expected, _ = model.predict(toa, angles, sensor=atm.sensor, ozone=atm.o3)
    with rasterio.open(result.files["l2a"]) as ds:
        got = (ds.read([list(ds.descriptions).index(b) + 1 for b in L2A_BANDS]).astype(np.float32) - 1000) / 10000
    assert np.abs(got - expected).max() < 2e-4  # DN rounding
