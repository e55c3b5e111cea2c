"""``eotwin atmocorr run`` (L1C product -> L2A-like product) and ``eotwin atmocorr sample-l1c``."""

from __future__ import annotations

from pathlib import Path

import typer

from eotwin.cli import _common
from eotwin.cli.atmocorr import app


@app.command("run")
def run_command(
    input_path: str | None = typer.Argument(None, metavar="INPUT", help="Sentinel-2 L1C SAFE folder or zip; an L1C "
                                            "GeoTIFF stack (bands named B01..B12, B8A in the descriptions; tags "
                                            "RADIO_ADD_OFFSET, SUN_ZENITH, SUN_AZIMUTH, VIEW_ZENITH, VIEW_AZIMUTH, "
                                            "SPACECRAFT); or a CDSE STAC L1C item (a .json file or an http(s) URL)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (l2a.tif, tci.tif, tci.png, item.json)."),
    resolution: int | None = typer.Option(None, "--resolution", help="Output grid: 10 or 20 m (default: 10 m for "
                                          "SAFE, the stack's own grid for stacks)."),
    method: str | None = typer.Option(None, "--method", help="6s-ddv (6S inversion, AOT from dark dense vegetation), "
                                      "dos (dark object subtraction) or ai (network, default; falls back to 6s-ddv "
                                      "on scenes unlike its training ones). --aot, --wv or --aerosol without "
                                      "--method choose 6s-ddv."),
    reference: Path | None = typer.Option(None, "--reference", help="Reference L2A (SAFE, zip or stack with "
                                          "BOA_ADD_OFFSET): writes evaluation.json and evaluation.png."),
    aerosol: str = typer.Option("auto", "--aerosol", help="6S aerosol model: auto (6s-ddv picks continental or "
                                "maritime per scene from its dark pixels), continental or maritime."),
    aot: float | None = typer.Option(None, "--aot", help="6s-ddv: use this AOT at 550 nm instead of estimating it."),
    aot_map: bool = typer.Option(True, "--aot-map/--no-aot-map", help="6s-ddv: AOT per 3 km cell from the dark "
                                 "pixels, smoothed (as sen2cor), where they cover the scene; else one AOT per scene."),
    wv: float | None = typer.Option(None, "--wv", help="6s-ddv: use this water vapour (g/cm2) instead of B09/B8A."),
    ozone: float | None = typer.Option(None, "--ozone", help="Total ozone column (cm-atm) when known, e.g. ECMWF's "
                                       "from the L1C's auxiliary data (as sen2cor uses it); default: 0.33 "
                                       "(climatology) for 6s-ddv, the network's own estimate for ai."),
    lut: Path | None = typer.Option(None, "--lut", help="6S look-up table (default: the committed one)."),
    elevation: float | None = typer.Option(None, "--elevation", help="Ground height (m) of the whole scene, every "
                                           "method: less air, less Rayleigh scattering above high ground."),
    dem: Path | None = typer.Option(None, "--dem", help="DEM (GeoTIFF, metres, any CRS): the air above each pixel "
                                    "and the illumination of slopes, as sen2cor's terrain correction (ai: its scene "
                                    "atmosphere, inverted per pixel by 6S with the DEM)."),
    model: Path | None = typer.Option(None, "--model", help="ai: model file (default: the committed one)."),
    ood_threshold: float | None = typer.Option(None, "--ood-threshold", help="ai: out-of-distribution score above "
                                               "which the scene is corrected with 6s-ddv instead (default: the "
                                               "threshold calibrated with the model)."),
    ood_fallback: bool = typer.Option(True, "--ood-fallback/--no-ood-fallback", help="ai: fall back to 6s-ddv on "
                                      "scenes beyond the threshold (--no-ood-fallback keeps the AI result and only "
                                      "records the score)."),
    block_rows: int | None = typer.Option(None, "--block-rows", help="Rows per block (default: 256-row tiles within a 512 MB working budget)."),
    item_id: str | None = typer.Option(None, "--item-id", help="Instead of INPUT: the id of a sentinel-2-l1c item "
                                       "in the STAC API (--stac-url)."),
    stac_url: str | None = typer.Option(None, "--stac-url", help="STAC API (default CDSE, or $EOTWIN_STAC_URL)."),
    s3_endpoint: str | None = typer.Option(None, "--s3-endpoint", help="S3 endpoint host[:port] (default CDSE "
                                           "eodata; http:// for a plain-HTTP mirror)."),
    s3_access_key: str | None = typer.Option(None, "--s3-access-key", help="CDSE S3 key (else $CDSE_S3_ACCESS_KEY "
                                             "or ~/.netrc)."),
    s3_secret_key_file: Path | None = typer.Option(None, "--s3-secret-key-file", help="File holding the CDSE S3 "
                                                   "secret (else $CDSE_S3_SECRET_KEY or ~/.netrc)."),
    s3_secret_key: str | None = typer.Option(None, "--s3-secret-key", hidden=True),
) -> None:
    """Atmospheric correction of a Sentinel-2 L1C product into an L2A-like product (DN = BOA x 10000 + 1000)."""
    from eotwin.atmocorr.pipeline import make_options, run_correction
    from eotwin.io.remote.credentials import read_secret_file, refuse_secret_on_argv

    refuse_secret_on_argv(s3_secret_key, "--s3-secret-key", "$CDSE_S3_SECRET_KEY, --s3-secret-key-file or ~/.netrc")
    s3_secret_key = read_secret_file(s3_secret_key_file, "--s3-secret-key-file") if s3_secret_key_file else None

    options = make_options(input=input_path, output=output, resolution=resolution, method=method,
                           reference=reference, aerosol=aerosol, aot=aot, aot_map=aot_map, wv=wv, ozone=ozone, lut=lut, model=model, elevation=elevation, dem=dem,
                           ood_threshold=ood_threshold, ood_fallback=ood_fallback,
                           block_rows=block_rows, item_id=item_id, stac_url=stac_url, s3_endpoint=s3_endpoint,
                           s3_access_key=s3_access_key, s3_secret_key=s3_secret_key)
    result = run_correction(options, progress=_common.progress())
    atm = ", ".join(f"{k}={v}" for k, v in result.atmosphere.items() if isinstance(v, int | float | str))
    _common.say(f"{result.product.kind} {result.product.product_id}: {result.product.grid.width} x "
                f"{result.product.grid.height} px at {result.product.resolution:g} m, {result.method} ({atm})")
    _common.say(f"{result.megapixels:.2f} Mpx in {result.seconds:.1f} s "
                f"({result.megapixels / max(result.seconds, 1e-9):.2f} Mpx/s)")
    if result.metrics:
        c, t = result.metrics["corrected"], result.metrics["toa_unchanged"]
        _common.out.print(f"{'band':5s} {'RMSE':>8s} {'MAE':>8s} {'bias':>8s}   {'TOA RMSE':>8s}")
        for band, m in c["bands"].items():
            _common.out.print(f"{band:5s} {m['rmse']:8.4f} {m['mae']:8.4f} {m['bias']:+8.4f}   "
                              f"{t['bands'][band]['rmse']:8.4f}")
        _common.out.print(f"mean  {c['mean_rmse']:8.4f} (TOA unchanged {t['mean_rmse']:.4f}), "
                          f"SAM {c['sam_degrees']:.2f} deg over {c['pixels']} px")
    for key, path in result.files.items():
        _common.out.print(f"{key:15s} {path}")


@app.command("sample-l1c")
def sample_l1c_command(
    output: Path = typer.Option(Path("sample_l1c"), "--output", "-o", help="Folder for l1c_stack.tif and l2a_truth.tif."),
    size: int = typer.Option(600, min=32, max=20000, help="Pixels per side of the 10 m sample grid."),
    seed: int = typer.Option(42, help="Seed of the sample scene."),
    aot: float = typer.Option(0.2, help="AOT at 550 nm of the simulated atmosphere."),
    wv: float = typer.Option(1.5, help="Water vapour (g/cm2)."),
    ozone: float = typer.Option(0.33, help="Ozone (cm-atm)."),
    aerosol: str = typer.Option("continental", help="6S aerosol model: continental or maritime."),
    sun_zenith: float = typer.Option(35.0, help="Sun zenith angle (degrees)."),
    view_zenith: float = typer.Option(5.0, help="View zenith angle (degrees)."),
    spacecraft: str = typer.Option("Sentinel-2A", help="Sentinel-2A, Sentinel-2B or Sentinel-2C."),
    lut: Path | None = typer.Option(None, "--lut", help="6S look-up table (default: the committed one)."),
) -> None:
    """Write the sample scene as an L1C stack made with the 6S table (known atmosphere) and its true surface."""
    from eotwin.atmocorr.sample_l1c import write_sample_l1c

    l1c, truth = write_sample_l1c(output, size=size, seed=seed, spacecraft=spacecraft,
                                  atmosphere={"aot": aot, "wv": wv, "o3": ozone, "aerosol": aerosol},
                                  geometry={"sun_zenith": sun_zenith, "view_zenith": view_zenith}, lut_path=lut,
                                  progress=_common.progress())
    _common.out.print(f"l1c       {l1c}")
    _common.out.print(f"truth     {truth}")
