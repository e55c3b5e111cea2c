"""``eotwin atmocorr evaluate PRED REF``: the same metrics as ``run --reference``, PSNR/SSIM, plots, errors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from eotwin.atmocorr.lut import DEFAULT_LUT_PATH
from eotwin.cli.main import run

LUT = Path(os.environ.get("EOTWIN_ATMOCORR_LUT", DEFAULT_LUT_PATH))


@pytest.fixture(scope="module")
def corrected(sample_scene, tmp_path_factory):
    from eotwin.atmocorr import pipeline
    from eotwin.atmocorr.sample_l1c import make_sample_l1c

    tmp = tmp_path_factory.mktemp("evaluate")
    made = make_sample_l1c(tmp / "in", sample_scene, lut_path=LUT)
    result = pipeline.run_correction(pipeline.make_options(input=made.l1c, output=tmp / "out", method="dos",
                                                           reference=made.truth, lut=LUT))
    return made, result


def test_evaluate_matches_the_run_metrics_and_adds_psnr_ssim(corrected, tmp_path):
    made, result = corrected
    out = tmp_path / "eval"
    assert run(["-q", "atmocorr", "evaluate", str(result.files["l2a"]), str(made.truth), "-o", str(out),
                "--l1c", str(made.l1c)]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert (out / "evaluation.png").stat().st_size > 10_000
    for band, expected in result.metrics["corrected"]["bands"].items():
        got = report["corrected"]["bands"][band]
        # the run scores the float result, evaluate the written product (DN: steps of 1e-4)
        assert got["rmse"] == pytest.approx(expected["rmse"], abs=1e-4)
        assert got["psnr_db"] == pytest.approx(10 * math.log10(1.0 / got["rmse"] ** 2))
        assert 0.0 < got["ssim"] < 1.0
    # the L1C read again by another reader: equal up to float32 conversion and summation order
    assert report["toa_unchanged"]["mean_rmse"] == pytest.approx(
        result.metrics["toa_unchanged"]["mean_rmse"], rel=1e-3)


def test_a_product_against_itself_is_perfect(corrected, tmp_path):
    made, _ = corrected
    assert run(["-q", "atmocorr", "evaluate", str(made.truth), str(made.truth), "-o", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "evaluation.json").read_text())
    for v in report["corrected"]["bands"].values():
        assert v["rmse"] == 0 and v["psnr_db"] is None and v["ssim"] == pytest.approx(1.0)
    assert report["toa_unchanged"] is None


def test_bad_input_is_one_line_and_writes_nothing(corrected, tmp_path, capsys):
    made, _ = corrected
    out = tmp_path / "eval"
    assert run(["atmocorr", "evaluate", str(tmp_path / "missing.tif"), str(made.truth), "-o", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing.tif" in err[0]
    assert run(["atmocorr", "evaluate", str(made.truth), str(made.truth), "-o", str(out),
                "--data-range", "0"]) != 0
    assert not out.exists() or not any(out.iterdir())


def test_memory_stays_per_block_on_a_larger_scene(tmp_path, monkeypatch):
    """The preview kept strided views of every block, and with them every whole block: a full tile ran out of
    2 GiB. numpy's allocations are traced by tracemalloc, so the peak of the block loop shows what is kept
    (the plot after it works on a bounded sample)."""
    import tracemalloc

    from eotwin.atmocorr.evaluation import reference as evaluation
    from eotwin.atmocorr.sample_l1c import make_sample_l1c

    made = make_sample_l1c(tmp_path / "in", size=1700, lut_path=LUT)
    monkeypatch.setattr(evaluation, "BLOCK_ROWS", 32)
    loop_peak = []
    write_png = evaluation._write_png

    def record_then_plot(*args, **kwargs):
        loop_peak.append(tracemalloc.get_traced_memory()[1])
        return write_png(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_write_png", record_then_plot)
    whole_stacks = 2 * 12 * 1700 * 1700 * 4  # prediction and reference as float32: 277 MB
    tracemalloc.start()
    try:
        evaluation.evaluate_products(made.truth, made.truth, tmp_path / "eval")
    finally:
        tracemalloc.stop()
    assert loop_peak[0] < 0.4 * whole_stacks, f"peak {loop_peak[0] / 2**20:.0f} MiB"
