"""Fine-tuning on pairs (``eotwin atmocorr train --pairs``): pairs made with the 6S table where the true
atmosphere is known (the sample scene's surface under a hazy maritime atmosphere the committed model
misreads), so the test can check that the fine-tuned network's atmosphere moves towards the truth and
the BOA error drops; and that bad input is a one-line error with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import L2A_BANDS, S2_BANDS
from eotwin.sentinel2.radiometry import BOA_ADD_OFFSET, QUANTIFICATION, boa_to_dn

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

TRUE_ATMOSPHERE = {"aot": 0.55, "wv": 1.2, "o3": 0.30, "aerosol": "maritime"}
GEOMETRIES = {  # two pairs: the same air, different sun
    "pair_a": {"sun_zenith": 30.0, "sun_azimuth": 140.0, "view_zenith": 4.0, "view_azimuth": 100.0},
    "pair_b": {"sun_zenith": 42.0, "sun_azimuth": 160.0, "view_zenith": 8.0, "view_azimuth": 285.0},
}
SIZE = 96


def make_pair(root: Path, pair_id: str, scene, geometry: dict, atmosphere: dict = TRUE_ATMOSPHERE,
              with_scl: bool = True) -> Path:
    """``root/pair_id`` with l1c.tif (the 6S table's TOA of the scene's surface), l2a.tif (the surface
    itself + the scene's SCL) and pair.json."""
    from eotwin.atmocorr.sample_l1c import make_l1c_from_surface
    from eotwin.io.raster import write_geotiff
    from eotwin.sample.scene import scene_scl

    folder = root / pair_id
    sim = make_l1c_from_surface(root / f".{pair_id}-sim", scene.surface_reflectance, ~scene.nodata,
                                scene.image_grid, atmosphere=atmosphere, geometry=geometry, product_id=pair_id)
    folder.mkdir(parents=True)
    shutil.move(sim.l1c, folder / "l1c.tif")
    truth = boa_to_dn(scene.surface_reflectance[[S2_BANDS.index(b) for b in L2A_BANDS]], ~scene.nodata)
    stack, names = (np.concatenate([truth, scene_scl(scene)[None].astype(np.uint16)]), [*L2A_BANDS, "SCL"]) \
        if with_scl else (truth, list(L2A_BANDS))
    write_geotiff(folder / "l2a.tif", stack, scene.image_grid, nodata=0, descriptions=names,
                  tags={"BOA_ADD_OFFSET": BOA_ADD_OFFSET, "BOA_QUANTIFICATION_VALUE": int(QUANTIFICATION)})
    shutil.rmtree(root / f".{pair_id}-sim")
    (folder / "pair.json").write_text(json.dumps({"pair_id": pair_id, "source": "6S table test pair",
                                                  "atmosphere": atmosphere}))
    return folder


@pytest.fixture(scope="module")
def scene():
    from eotwin.sample.scene import make_scene

    return make_scene(size=SIZE, seed=3)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory, scene) -> Path:
    root = tmp_path_factory.mktemp("finetune_pairs")
    for pair_id, geometry in GEOMETRIES.items():
        make_pair(root, pair_id, scene, geometry)
    return root


def _onnx_atmosphere(model_path: Path, pair_folder: Path) -> np.ndarray:
    """The scene-mean atmosphere (aot, wv, o3, maritime) the exported ONNX model estimates on a pair's L1C."""
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel, block_angles
    from eotwin.atmocorr.realpairs import read_pair, read_reflectance
    from eotwin.geo.grid import Window
    from eotwin.sentinel2.products import open_l1c

    pair = read_pair(pair_folder)
    product = open_l1c(pair.l1c)
    toa = read_reflectance(pair)["toa"]
    model = OnnxModel(model_path, threads=1)
    angles = block_angles(product.angles, product.grid, Window(0, 0, *toa.shape[1:]), cell=model.cell)
    atm, _ = model.atmosphere(toa, angles, np.isfinite(toa).all(axis=0), sensor=product.spacecraft,
                              cell_angles=True)
    return atm.reshape(4, -1).mean(axis=1)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, pairs_dir):
    from eotwin.atmocorr.ai.finetune import FinetuneOptions, finetune

    out = tmp_path_factory.mktemp("finetuned") / "tuned.onnx"
    result = finetune(FinetuneOptions(pairs=pairs_dir, output=out, steps=40, lr=3e-3))
    return result


def test_finetuning_moves_the_atmosphere_towards_the_truth_and_lowers_the_boa_error(finetuned, pairs_dir):
    from eotwin.atmocorr.ai import DEFAULT_MODEL_PATH

    summary = finetuned.summary
    assert finetuned.onnx_path.is_file() and finetuned.weights_path.is_file()
    for pair_id in GEOMETRIES:
        s = summary["pairs"][pair_id]
        before, after = s["before"], s["after"]
        assert after["mean_rmse"] < 0.6 * before["mean_rmse"], (pair_id, before["mean_rmse"], after["mean_rmse"])
        assert after["loss"] < before["loss"]
        assert after["within_spec"] > before["within_spec"]
        # the exported ONNX model, run as inference runs it, reads more of the true haze than the committed one
        init = _onnx_atmosphere(DEFAULT_MODEL_PATH, pairs_dir / pair_id)
        tuned = _onnx_atmosphere(finetuned.onnx_path, pairs_dir / pair_id)
        truth_aot = TRUE_ATMOSPHERE["aot"]
        assert abs(tuned[0] - truth_aot) < 0.7 * abs(init[0] - truth_aot), (pair_id, init[0], tuned[0])
        assert init[3] < 0.3 < 0.6 < tuned[3], (pair_id, init[3], tuned[3])  # and now says "maritime"
        assert tuned[0] == pytest.approx(after["atmosphere"]["aot"], rel=0.02)  # ONNX = torch graph


def test_finetuned_model_records_its_pairs_and_loads_as_a_model(finetuned):
    from eotwin.atmocorr.ai.onnx_infer import OnnxModel
    from eotwin.atmocorr.ai.train import load_torch_model

    meta = OnnxModel(finetuned.onnx_path, threads=1).metadata
    assert meta["fine_tuned"]["pairs"] == sorted(GEOMETRIES)
    assert meta["fine_tuned"]["steps"] == 40
    _, record = load_torch_model(finetuned.weights_path)
    assert record["fine_tuned"]["pairs"] == sorted(GEOMETRIES)
    assert record["fine_tuned"]["per_pair"]["pair_a"]["after"] == finetuned.summary["pairs"]["pair_a"]["after"]


def test_cli_json_summary(tmp_path, pairs_dir, capsys):
    from eotwin.cli.main import run

    out = tmp_path / "m" / "cli.onnx"
    code = run(["-q", "atmocorr", "train", "--pairs", str(pairs_dir), "-o", str(out), "--steps", "2", "--json"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    summary = json.loads(printed.out)
    assert summary["steps"] == 2 and sorted(summary["pairs"]) == sorted(GEOMETRIES)
    assert summary["pairs"]["pair_a"]["before"]["mean_rmse"] > 0
    assert Path(summary["onnx"]).is_file() and Path(summary["weights"]).is_file()


def _invoke_bad(tmp_path: Path, pairs: Path, capsys) -> tuple[int, str, Path]:
    """Exit code, stderr (stripped) and the output folder of a fine-tuning that must fail."""
    from eotwin.cli.main import run

    out = tmp_path / "out"
    capsys.readouterr()
    code = run(["-q", "atmocorr", "train", "--pairs", str(pairs), "-o", str(out / "m.onnx"), "--steps", "1"])
    return code, capsys.readouterr().err.strip(), out


def test_empty_dir_is_a_one_line_error_with_nothing_written(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output, out = _invoke_bad(tmp_path, empty, capsys)
    assert code != 0 and output.startswith("error: ") and len(output.splitlines()) == 1 and "Traceback" not in output
    assert not out.exists()


def test_pair_without_scl_is_a_one_line_error_with_nothing_written(tmp_path, scene, capsys):
    make_pair(tmp_path / "pairs", "no_scl", scene, GEOMETRIES["pair_a"], with_scl=False)
    code, output, out = _invoke_bad(tmp_path, tmp_path / "pairs", capsys)
    assert code != 0 and output.startswith("error: ") and len(output.splitlines()) == 1
    assert "SCL" in output
    assert not out.exists()


def test_pair_with_missing_bands_is_a_one_line_error_with_nothing_written(tmp_path, scene, capsys):
    import rasterio

    folder = make_pair(tmp_path / "pairs", "few_bands", scene, GEOMETRIES["pair_a"])
    with rasterio.open(folder / "l1c.tif") as src:  # the L1C without B11 and B12
        keep = [i for i, d in enumerate(src.descriptions, 1) if d not in ("B11", "B12")]
        data, profile, tags = src.read(keep), src.profile, src.tags()
        names = [src.descriptions[i - 1] for i in keep]
    profile.update(count=len(keep))
    (folder / "l1c.tif").unlink()
    with rasterio.open(folder / "l1c.tif", "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = tuple(names)
        dst.update_tags(**tags)
    code, output, out = _invoke_bad(tmp_path, tmp_path / "pairs", capsys)
    assert code != 0 and output.startswith("error: ") and len(output.splitlines()) == 1
    assert "B11" in output
    assert not out.exists()


def test_the_committed_model_is_never_the_output(pairs_dir):
    from eotwin.atmocorr.ai import DEFAULT_MODEL_PATH
    from eotwin.atmocorr.ai.finetune import FinetuneOptions, finetune

    before = DEFAULT_MODEL_PATH.stat().st_mtime_ns
    with pytest.raises(EotwinError, match="committed model"):
        finetune(FinetuneOptions(pairs=pairs_dir, output=DEFAULT_MODEL_PATH, steps=1))
    assert DEFAULT_MODEL_PATH.stat().st_mtime_ns == before


def test_a_pair_too_large_to_hold_is_read_as_windows_of_the_same_pixels(pairs_dir, monkeypatch):
    """A full-tile pair (``atmocorr pairs`` over a whole tile) cannot be held whole in 2 GiB: above the size
    limit the pair becomes windows spread over it, each its own scene, with the pixels of that place."""
    from eotwin.atmocorr.ai import finetune as ft
    from eotwin.atmocorr.ai.train import load_torch_model
    from eotwin.atmocorr.lut import load_lut
    from eotwin.atmocorr.realpairs import read_pair

    lut, config = load_lut(None), load_torch_model()[0].config.to_dict()
    pair = read_pair(pairs_dir / "pair_a")
    (whole,) = ft.load_pair(pair, lut, config)
    monkeypatch.setattr(ft, "WHOLE_PAIR_MAX_PIXELS", 60 * 60)
    monkeypatch.setattr(ft, "PAIR_WINDOW_PX", 48)
    monkeypatch.setattr(ft, "PAIR_WINDOWS_PER_SIDE", 2)
    monkeypatch.setattr(ft, "PAIR_WINDOW_ALIGN", 16)
    parts = ft.load_pair(pair, lut, config)
    windows = ft.pair_windows(SIZE, SIZE)
    assert [(w.row_off, w.col_off, w.height, w.width) for w in windows] == [(0, 0, 48, 48), (0, 48, 48, 48),
                                                                              (48, 0, 48, 48), (48, 48, 48, 48)]
    assert [p.pair_id for p in parts] == [f"pair_a window {w.row_off},{w.col_off}" for w in windows]
    for part, w in zip(parts, windows, strict=True):
        rows, cols = slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width)
        np.testing.assert_array_equal(part.batch["toa"][0], whole.batch["toa"][0][:, rows, cols])
        np.testing.assert_array_equal(part.ref, whole.ref[:, rows, cols])
        np.testing.assert_array_equal(part.mask, whole.mask[:, rows, cols])
        assert part.batch["cells"].shape[-2:] == (48 // config["cell"], 48 // config["cell"])
    monkeypatch.setattr(ft, "MIN_CLEAR_PIXELS", 48 * 48 + 1)  # no window has enough clear pixels
    with pytest.raises(EotwinError, match=r"clear pixels .* in any of its 4 windows"):
        ft.load_pair(pair, lut, config)


def test_the_loss_on_every_kth_pixel_is_the_training_graph_at_those_pixels(pairs_dir, monkeypatch):
    """Large scenes keep every k-th pixel for the loss: the BOA there is exactly the full-resolution
    inversion's (``train.forward``) at those pixels, so the loss is a regular sample of the same loss."""
    import torch

    from eotwin.atmocorr.ai import finetune as ft
    from eotwin.atmocorr.ai.train import forward as train_forward
    from eotwin.atmocorr.ai.train import load_torch_model
    from eotwin.atmocorr.lut import load_lut
    from eotwin.atmocorr.realpairs import read_pair

    model = load_torch_model()[0].eval()
    lut, config = load_lut(None), model.config.to_dict()
    pair = read_pair(pairs_dir / "pair_b")
    (whole,) = ft.load_pair(pair, lut, config)
    monkeypatch.setattr(ft, "LOSS_MAX_PIXELS", 40 * 40)
    (sampled,) = ft.load_pair(pair, lut, config)
    assert whole.step == 1 and sampled.step == 3 and sampled.shape == whole.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(sampled.mask, whole.mask[:, ::3, ::3])
    tensors = lambda p: {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in p.batch.items()}  # noqa: E731
    with torch.no_grad():
        _, boa_full = train_forward(ft._with_ozone(model, pair_ozone := whole.ozone, torch), tensors(whole), torch)
        atm, boa = train_forward(ft._with_ozone(model, sampled.ozone, torch), tensors(sampled), torch,
                                 shape=sampled.shape, step=sampled.step)
    assert pair_ozone is None or np.allclose(atm[:, 2].numpy(), pair_ozone)
    assert boa.shape[-2:] == (32, 32)
    np.testing.assert_allclose(boa.numpy(), boa_full[..., ::3, ::3].numpy(), rtol=1e-6, atol=1e-7)
