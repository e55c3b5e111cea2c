"""The AI's out-of-distribution score: deterministic, below the threshold on held-out scenes, above it on
foreign ones; beyond the threshold the pipeline corrects with 6s-ddv and records it, unless disabled."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from eotwin.atmocorr.ai import DEFAULT_MODEL_PATH, ood, synth
from eotwin.atmocorr.lut import DEFAULT_LUT_PATH, load_lut
from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import L2A_BANDS

LUT = Path(os.environ.get("EOTWIN_ATMOCORR_LUT", DEFAULT_LUT_PATH))

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def lut():
    return load_lut(LUT)


@pytest.fixture(scope="module")
def stats():
    return ood.load_statistics(ood.stats_path(DEFAULT_MODEL_PATH))


@pytest.fixture(scope="module")
def sample_l1c(sample_scene, tmp_path_factory):
    """The sample scene (procedural surfaces, the AI's known weak case) as an L1C stack made with 6S."""
    from eotwin.atmocorr.sample_l1c import make_sample_l1c

    return make_sample_l1c(tmp_path_factory.mktemp("ood_in"), sample_scene, lut_path=LUT)


def _score(toa: np.ndarray, atm: synth.Atmosphere, lut, stats) -> tuple[float, int]:
    angles = np.array([atm.sza, atm.vza, atm.raa], np.float32).reshape(3, 1, 1)
    return ood.scene_score(toa, angles, lut, atm.sensor, stats)


def _foreign(surface: np.ndarray, lut, seed: int) -> tuple[np.ndarray, synth.Atmosphere]:
    rng = np.random.default_rng(seed)
    atm = synth.sample_atmosphere(rng, lut)
    toa, _, _ = synth.simulate(surface, atm, lut, rng)
    return toa, atm


# ----------------------------------------------------------------------------- the statistics
def test_committed_statistics_belong_to_the_committed_model(stats):
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel

    model = OnnxModel(DEFAULT_MODEL_PATH, threads=1, lut_path=LUT)
    ood.check_config(stats, model.metadata["config"])
    assert ood.stale_note(stats, DEFAULT_MODEL_PATH) is None
    assert stats.mean.shape == stats.scale.shape == (stats.precision.shape[0],)
    # calibrated on held-out scenes alone: 1.25 x their highest score
    assert stats.threshold == pytest.approx(1.25 * stats.calibration["held_out_max"], abs=1e-3)
    assert stats.calibration["held_out_scenes"] >= 20 and stats.training["contexts"] >= 10_000


def test_distance_is_the_mahalanobis_distance_of_the_shrunk_correlation():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.1, 0.2, 0.3]])
    feats = (mix @ rng.standard_normal((3, 5000))) * np.array([[2.0], [0.5], [1.0]]) + np.array([[1.0], [-2.0], [0.0]])
    stats = ood.fit_from_features(feats, {"cell": 6, "out_stride": 4, "bright_toa": 0.3, "windows": [5, 17]})
    z = (feats - feats.mean(1, keepdims=True)) / feats.std(1, keepdims=True)
    corr = 0.95 * np.corrcoef(z) + 0.05 * np.eye(3)
    x = np.array([[3.0], [1.0], [-1.0]])
    zx = (x[:, 0] - feats.mean(1)) / feats.std(1)
    assert ood.distances(x, stats)[0] == pytest.approx(np.sqrt(zx @ np.linalg.inv(corr) @ zx / 3), rel=1e-9)
    assert ood.distances(feats.mean(1, keepdims=True), stats)[0] == pytest.approx(0.0, abs=1e-9)
    assert np.mean(ood.distances(feats, stats) ** 2) == pytest.approx(1.0, rel=0.1)  # about 1 for training data


def test_statistics_of_other_cells_or_features_are_refused(stats, tmp_path):
    other = copy.deepcopy(stats)
    other.config["cell"] = 3
    with pytest.raises(EotwinError, match="recompute"):
        ood.check_config(other, stats.config)
    data = stats.to_json() | {"features": "something-else"}
    (tmp_path / "s.ood.json").write_text(json.dumps(data))
    with pytest.raises(EotwinError, match="features"):
        ood.load_statistics(tmp_path / "s.ood.json")
    with pytest.raises(EotwinError, match="finite"):
        ood.calibrate_threshold(other, [0.4, math.inf])
    assert ood.calibrate_threshold(other, [0.3, 0.5]) == 0.625 and other.threshold == 0.625


def test_fit_statistics_from_training_scenes_by_source(lut, ben_mock_dir):
    """What the trainer calls after a retraining: its surfaces by source, drawn as training draws them."""
    surfaces = {"ben": list(synth.ben_surfaces(ben_mock_dir, synth.TRAIN_SPLITS).values())}
    config = {"cell": 6, "out_stride": 4, "bright_toa": 0.3, "hypotheses": 2, "windows": [5, 17]}
    fitted = ood.fit_statistics(surfaces, lut, config, scenes=4, seed=3, spectra=synth.builtin_spectra(), batch=2)
    assert fitted.training["contexts"] == 400 and fitted.training["surfaces"] == {"ben": 12}
    assert fitted.mean.size == 104 and np.allclose(fitted.precision, fitted.precision.T)
    assert fitted.config == ood.model_cell_config(config) and math.isinf(fitted.threshold)  # not calibrated yet
    again = ood.fit_statistics(surfaces, lut, config, scenes=4, seed=3, spectra=synth.builtin_spectra(), batch=2)
    assert np.array_equal(again.precision, fitted.precision)


# ----------------------------------------------------------------------------- scores
def test_score_is_deterministic(lut, stats, ben_mock_dir, tmp_path):
    from eotwin.atmocorr.evaluation import heldout

    (scene,) = heldout.make_test_scenes(lut, 1, seed=5151, ben_dir=ben_mock_dir)
    first = _score(scene.toa, scene.atmosphere, lut, stats)
    reloaded = ood.load_statistics(ood.write_statistics(tmp_path / "copy.ood.json", stats))
    assert _score(scene.toa.copy(), scene.atmosphere, lut, reloaded) == first
    assert first[1] == 150  # every atmosphere cell of the 240 x 360 px mosaic


def test_held_out_scenes_score_below_the_threshold(lut, stats, ben_mock_dir):
    """BigEarthNet test-split patches under held-out atmospheres (a seed used neither in calibration nor in
    the benchmark): in distribution."""
    from eotwin.atmocorr.evaluation import heldout

    scenes = heldout.make_test_scenes(lut, 3, seed=6060, ben_dir=ben_mock_dir)
    scores = [_score(s.toa, s.atmosphere, lut, stats)[0] for s in scenes]
    assert max(scores) < stats.threshold, scores
    # a scene smaller than the network's context window (24 x 42 px, the size of the real Barbellino pairs)
    # is scored on the cells it has, not declared empty
    tiny = [_score(s.toa[:, :24, :42], s.atmosphere, lut, stats) for s in scenes]
    assert all(cells == 2 and score < stats.threshold for score, cells in tiny), tiny


def test_water_and_desert_scenes_score_above_the_threshold(lut, stats, shared_fixtures):
    """Real L2A surfaces the network never saw, through the 6S table: open sea (North Sea, Hydro patch;
    offset -1000 per its README) and the Sahara tile (100 m; bands on the B02 grid)."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(shared_fixtures / "ac" / "l2a_hydro_water" / "patch_1000.tif") as ds:
        sea = ((ds.read().astype(np.float32) - 1000.0) / 10000.0)[:, :240, :240]
    desert_dir = shared_fixtures / "ac" / "l2a_desert_T29RKH_20200219_riotilerpds"
    bands = []
    for band in L2A_BANDS:  # DN / 10000, no offset (baseline 02.14)
        with rasterio.open(desert_dir / f"{band}.tif") as ds:
            bands.append(ds.read(1, out_shape=(1098, 1098), resampling=Resampling.bilinear)[400:640, 300:540])
    desert = np.stack(bands).astype(np.float32) / 10000.0
    for surface, seed in ((sea, 1), (desert, 2)):
        toa, atm = _foreign(surface, lut, seed)
        score, cells = _score(toa, atm, lut, stats)
        assert cells > 50 and score > 1.3 * stats.threshold, (seed, score)


def test_the_sample_scene_is_out_of_distribution(lut, stats, sample_scene):
    """The AI's known weak case (procedural surfaces, read as maritime aerosol) lies beyond the threshold."""
    from eotwin.atmocorr.physics import relative_azimuth
    from eotwin.atmocorr.sample_l1c import DEFAULT_GEOMETRY as geo
    from eotwin.atmocorr.sample_l1c import simulate_toa
    from eotwin.sentinel2.bands import S2_BANDS

    surface = sample_scene.surface_reflectance[[S2_BANDS.index(b) for b in L2A_BANDS]].astype(np.float32)
    toa = simulate_toa(surface, lut, sensor="S2A", aerosol="continental", aot=0.2, wv=1.5, o3=0.33, bands=L2A_BANDS,
                       **geo)
    toa[:, sample_scene.nodata] = np.nan
    atm = synth.Atmosphere("S2A", "continental", 0.2, 1.5, 0.33, geo["sun_zenith"], geo["view_zenith"],
                           float(relative_azimuth(geo["sun_azimuth"], geo["view_azimuth"])))
    assert _score(toa, atm, lut, stats)[0] > stats.threshold


def test_a_scene_without_usable_cells_scores_infinite(lut, stats):
    toa = np.full((12, 96, 96), 0.5, np.float32)  # all brighter than the network's bright-TOA cut (cloud, snow)
    atm = synth.Atmosphere("S2A", "continental", 0.1, 1.0, 0.33, 30.0, 5.0, 90.0)
    assert _score(toa, atm, lut, stats) == (math.inf, 0)


# ----------------------------------------------------------------------------- the pipeline
def test_pipeline_falls_back_to_ddv_and_says_so(sample_l1c, stats, lut, tmp_path, caplog):
    import rasterio

    from eotwin.atmocorr import pipeline

    with caplog.at_level(logging.WARNING, logger="eotwin.atmocorr.ai.corrector"):
        result = pipeline.run_correction(pipeline.make_options(input=sample_l1c.l1c, output=tmp_path / "ai",
                                                               method="ai", lut=LUT))
    ddv = pipeline.run_correction(pipeline.make_options(input=sample_l1c.l1c, output=tmp_path / "ddv",
                                                        method="6s-ddv", lut=LUT))
    info = result.atmosphere
    assert result.method == "6s-ddv" and "aot" not in result.files
    assert info["ood_threshold"] == stats.threshold and info["ood_score"] > stats.threshold
    # the sample scene's AOT comes from dense vegetation: beyond the threshold the network's scene AOT replaces
    # it, the DDV's aerosol model and water vapour stay, and the DDV's AOT is kept in the run info
    assert info["fallback"].startswith("6s-ddv:") and info["aot_source"].startswith("network scene mean")
    assert info["ddv_aot"] == ddv.atmosphere["aot"] and info["aot"] != ddv.atmosphere["aot"]
    assert info["aerosol"] == ddv.atmosphere["aerosol"] and info["wv"] == ddv.atmosphere["wv"]
    assert info["wv_source"] == ddv.atmosphere["wv_source"] and info["aerosol_source"] == ddv.atmosphere["aerosol_source"]
    assert [r.levelno for r in caplog.records if r.name == "eotwin.atmocorr.ai.corrector"] == [logging.WARNING]
    given = pipeline.run_correction(pipeline.make_options(  # 6s-ddv told that atmosphere: the same product
        input=sample_l1c.l1c, output=tmp_path / "given", method="6s-ddv", lut=LUT, aot=info["aot"], wv=info["wv"],
        aerosol=info["aerosol"]))
    with rasterio.open(result.files["l2a"]) as ds, rasterio.open(given.files["l2a"]) as ref:
        tags = ds.tags()
        assert np.abs(ds.read().astype(np.int32) - ref.read().astype(np.int32)).max() <= 1  # AOT rounded in the info
    assert tags["ATMOCORR_METHOD"] == "6s-ddv" and tags["ATMOCORR_FALLBACK"] == info["fallback"]
    assert float(tags["ATMOCORR_OOD_SCORE"]) == info["ood_score"]
    assert float(tags["ATMOCORR_OOD_THRESHOLD"]) == stats.threshold
    item = json.loads(result.files["item"].read_text())["properties"]
    assert item["eotwin:method"] == "6s-ddv" and item["eotwin:atmosphere"]["fallback"] == info["fallback"]
    # the score is the stack's own: the pipeline's overview is the whole scene here (step 1)
    with rasterio.open(sample_l1c.l1c) as ds:
        dn = ds.read([list(ds.descriptions).index(b) + 1 for b in L2A_BANDS]).astype(np.float32)
    toa = np.where(dn > 0, (dn - 1000.0) / 10000.0, np.nan)
    a = result.product.angles.means()
    from eotwin.atmocorr.physics import relative_azimuth

    angles = np.array([a["sun_zenith"], a["view_zenith"], relative_azimuth(a["sun_azimuth"], a["view_azimuth"])],
                      np.float32).reshape(3, 1, 1)
    assert info["ood_scored_on"] == "the whole scene"
    assert ood.scene_score(toa, angles, lut, "S2A", stats)[0] == pytest.approx(info["ood_score"], abs=1e-4)
    # and the AOT is the network's mean over the scored scene
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel

    network_aot = OnnxModel(None, lut_path=LUT).predict(toa, angles, sensor="S2A")[1]
    assert np.nanmean(network_aot) == pytest.approx(info["aot"], abs=1e-4)


def test_only_a_dense_vegetation_aot_is_replaced_by_the_network():
    """Dark water (black NIR/SWIR, no surface ratio) and the default (no dark pixel) stay; any DDV AOT, capped
    or not, is replaced."""
    from eotwin.atmocorr.retrieval import network_aot_replaces, scene_mean_aot

    assert network_aot_replaces("ddv") and network_aot_replaces("ddv, capped by the darkest pixels")
    assert not network_aot_replaces("dark water (no DDV: too few dark pixels: 0 < 82)")
    assert not network_aot_replaces("default (too few dark pixels: 0 < 82)")
    assert not network_aot_replaces("dark object") and not network_aot_replaces("given")
    assert scene_mean_aot([np.array([[0.1, np.nan]]), np.array([0.3])]) == pytest.approx(0.2)
    assert math.isnan(scene_mean_aot([np.full((2, 2), np.nan)]))


def test_disabled_fallback_keeps_the_ai_result(sample_l1c, stats, tmp_path):
    """``--no-ood-fallback`` through the CLI: the AI's product, with the score and the decision recorded."""
    import rasterio

    from eotwin.cli.main import run

    out = tmp_path / "ai"
    code = run(["-q", "atmocorr", "run", str(sample_l1c.l1c), "-o", str(out), "--method", "ai", "--lut", str(LUT),
                "--no-ood-fallback"])
    assert code == 0
    with rasterio.open(out / "l2a.tif") as ds:
        tags = ds.tags()
    assert tags["ATMOCORR_METHOD"] == "ai" and (out / "aot.tif").is_file()
    assert float(tags["ATMOCORR_OOD_SCORE"]) > float(tags["ATMOCORR_OOD_THRESHOLD"]) == stats.threshold
    assert tags["ATMOCORR_FALLBACK"].startswith("disabled")
    # the AI's product, so the scene's aerosol choice too (it was missing on this path)
    assert tags["ATMOCORR_AEROSOL_SOURCE"].startswith("network, scene mean P(maritime)")


def test_threshold_option_and_a_model_without_statistics(sample_l1c, tmp_path):
    import rasterio

    from eotwin.atmocorr import correctors, pipeline

    high = pipeline.run_correction(pipeline.make_options(input=sample_l1c.l1c, output=tmp_path / "high",
                                                         method="ai", lut=LUT, ood_threshold=50.0))
    assert high.method == "ai" and high.atmosphere["fallback"] == "none" and high.atmosphere["ood_threshold"] == 50.0
    with rasterio.open(high.files["l2a"]) as ds:
        assert float(ds.tags()["ATMOCORR_OOD_THRESHOLD"]) == 50.0 and ds.tags()["ATMOCORR_FALLBACK"] == "none"
    # a model without statistics beside it (one trained with `eotwin atmocorr train`): the AI runs, and says so
    model = tmp_path / "mine.onnx"
    shutil.copyfile(DEFAULT_MODEL_PATH, model)
    mine = pipeline.run_correction(pipeline.make_options(input=sample_l1c.l1c, output=tmp_path / "mine",
                                                         method="ai", lut=LUT, model=model))
    assert mine.method == "ai" and mine.atmosphere["ood_score"].startswith("unavailable")
    assert mine.atmosphere["fallback"] == "none"
    with pytest.raises(EotwinError, match="--ood-threshold"):
        correctors.make_corrector(pipeline.make_options(input=sample_l1c.l1c, output=tmp_path / "x",
                                                      method="6s-ddv", ood_threshold=1.0))
    with pytest.raises(EotwinError, match="ood_threshold"):
        pipeline.make_options(input=sample_l1c.l1c, output=tmp_path / "x", method="ai", ood_threshold=-1.0)


def test_large_scenes_are_scored_on_full_resolution_windows(sample_l1c, tmp_path, monkeypatch):
    """Beyond the overview's size the score reads full-resolution windows (a decimated view would make
    every scene look foreign); a window as large as the scene gives the whole-scene score."""
    import functools

    from eotwin.atmocorr import pipeline

    whole = pipeline.run_correction(pipeline.make_options(input=sample_l1c.l1c, output=tmp_path / "whole",
                                                          method="ai", lut=LUT, ood_fallback=False))
    monkeypatch.setattr(pipeline, "read_scene_sample",
                        functools.partial(pipeline.read_scene_sample, max_side=100))  # a decimated overview
    windowed = pipeline.run_correction(pipeline.make_options(input=sample_l1c.l1c, output=tmp_path / "win",
                                                             method="ai", lut=LUT, ood_fallback=False))
    assert windowed.atmosphere["ood_scored_on"] == "1 windows of 200 x 200 px"
    assert windowed.atmosphere["ood_score"] == whole.atmosphere["ood_score"]
    assert windowed.atmosphere["ood_cells"] == whole.atmosphere["ood_cells"] > 0


def test_windows_spread_over_a_tile_on_whole_tiles():
    windows = ood.sample_windows(10980, 10980)
    assert len(windows) == 9 and all(h == w == 512 for _, _, h, w in windows)
    assert all(r % 256 == 0 and c % 256 == 0 and r + 512 <= 10980 and c + 512 <= 10980 for r, c, _, _ in windows)
    rows = sorted({r for r, _, _, _ in windows})
    assert rows[0] < 10980 / 3 < rows[1] < 2 * 10980 / 3 < rows[2]
    assert ood.sample_windows(200, 900) == [(0, 0, 200, 512), (0, 256, 200, 512)]


def test_decimation_raises_the_score_of_held_out_scenes(lut, stats, ben_mock_dir):
    """Why the windows: the same held-out scene, every 3rd pixel, scores far higher (cells cover 9x the ground)."""
    from eotwin.atmocorr.evaluation import heldout

    (scene,) = heldout.make_test_scenes(lut, 1, seed=7070, ben_dir=ben_mock_dir)
    full = _score(scene.toa, scene.atmosphere, lut, stats)[0]
    assert _score(scene.toa[:, ::3, ::3], scene.atmosphere, lut, stats)[0] > 1.4 * full


def test_a_fallback_that_cannot_run_keeps_the_ai_and_says_so(sample_l1c, tmp_path):
    """Beyond the threshold, when 6s-ddv itself fails on the scene (here: its table is missing), the AI's
    result is kept and the run info says why: never a silent substitution."""
    from eotwin.atmocorr.ai.corrector import AiCorrector
    from eotwin.atmocorr.correctors import SixSCorrector
    from eotwin.atmocorr.pipeline import read_scene_sample
    from eotwin.sentinel2.products import open_l1c
    from eotwin.sentinel2.reading import BandReader

    product = open_l1c(sample_l1c.l1c)
    with BandReader({b: product.bands[b] for b in L2A_BANDS}, product.grid) as reader:
        sample = read_scene_sample(reader, product)
        corrector = AiCorrector(lut_path=LUT, fallback=lambda: SixSCorrector(lut_path=tmp_path / "missing.npz"))
        info = corrector.prepare(product, sample)
    assert corrector.name == "ai" and corrector.gives_aot_map
    assert info["fallback"].startswith("failed: 6s-ddv") and info["ood_score"] > info["ood_threshold"]


def test_statistics_of_another_model_file_are_used_and_noted(sample_l1c, stats, tmp_path):
    """A retrained model with the same cells: the score still says "unlike the old training scenes", and the
    run info says the statistics are another model's (refit them)."""
    from eotwin.atmocorr.ai.corrector import AiCorrector
    from eotwin.atmocorr.pipeline import read_scene_sample
    from eotwin.sentinel2.products import open_l1c
    from eotwin.sentinel2.reading import BandReader

    model = tmp_path / "retrained.onnx"
    shutil.copyfile(DEFAULT_MODEL_PATH, model)
    other = copy.deepcopy(stats)
    other.training["model_sha256"] = "0" * 64
    ood.write_statistics(ood.stats_path(model), other)
    product = open_l1c(sample_l1c.l1c)
    with BandReader({b: product.bands[b] for b in L2A_BANDS}, product.grid) as reader:
        info = AiCorrector(model_path=model, lut_path=LUT, ood_fallback=False).prepare(
            product, read_scene_sample(reader, product))
    assert info["ood_statistics"].startswith("computed for another model file")
    assert info["ood_score"] > info["ood_threshold"] == stats.threshold
    assert info["fallback"].startswith("disabled")
