"""``eotwin atmocorr evaluate PRED REF``: metrics and plots of an L2A-like product against a reference L2A."""

from __future__ import annotations

from pathlib import Path

import typer

from eotwin.cli import _common
from eotwin.cli.atmocorr import app


@app.command("evaluate")
def evaluate_command(
    prediction: Path = typer.Argument(..., help="L2A-like product: SAFE (folder/zip) or GeoTIFF stack (B01 ... B12)."),
    reference: Path = typer.Argument(..., help="Reference L2A: SAFE (folder/zip) or GeoTIFF stack, L2A convention."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for evaluation.json and evaluation.png."),
    l1c: Path | None = typer.Option(None, "--l1c", help="The L1C input, to report 'TOA left unchanged' too."),
    data_range: float = typer.Option(1.0, "--data-range", help="Reflectance range for PSNR and SSIM."),
) -> None:
    """Per-band RMSE, MAE, bias, R2, PSNR, SSIM and the spectral angle on valid (SCL clear) pixels."""
    from eotwin.atmocorr.evaluation.reference import evaluate_products

    report = evaluate_products(prediction, reference, output, l1c=l1c, data_range=data_range,
                               progress=_common.progress())
    m = report["corrected"]
    _common.out.print(f"{'band':5s} {'RMSE':>8s} {'MAE':>8s} {'bias':>8s} {'R2':>7s} {'PSNR dB':>8s} {'SSIM':>6s}")
    for band, v in m["bands"].items():
        r2 = f"{v['r2']:7.3f}" if v["r2"] is not None else "      -"
        psnr = f"{v['psnr_db']:8.2f}" if v["psnr_db"] is not None else "     inf"
        _common.out.print(f"{band:5s} {v['rmse']:8.4f} {v['mae']:8.4f} {v['bias']:+8.4f} {r2} {psnr} {v['ssim']:6.3f}")
    toa = report["toa_unchanged"]
    _common.say(f"mean RMSE {m['mean_rmse']:.4f}, SAM {m['sam_degrees']:.2f} deg over {m['pixels']} pixels"
                + (f" (TOA left unchanged: {toa['mean_rmse']:.4f})" if toa else ""))
    _common.out.print(f"report    {Path(output) / 'evaluation.json'}")
    _common.out.print(f"plot      {Path(output) / 'evaluation.png'}")
