"""``eotwin atmocorr pairs``: real L1C/L2A pairs of one datatake from the CDSE STAC API, as pair folders."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from eotwin.cli import _common
from eotwin.cli.atmocorr import app


@app.command("pairs")
def pairs_command(
    bbox: str = typer.Option(..., "--bbox", help="MINLON,MINLAT,MAXLON,MAXLAT (WGS 84) of the window to read."),
    date: str = typer.Option(..., "--date", help="START or START/END (ISO dates) of the acquisitions."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder of pair folders (<pair_id>/l1c.tif, l2a.tif, "
                                "pair.json); created if needed, a pair folder of the same id is replaced."),
    max_cloud: float | None = typer.Option(20.0, "--max-cloud", help="Maximum eo:cloud_cover of the L1C items (%)."),
    max_pairs: int = typer.Option(5, "--max-pairs", min=1, help="Write at most this many pairs (least cloudy first, "
                                  "then newest)."),
    stac_url: str | None = typer.Option(None, "--stac-url", help="STAC API (default CDSE, or $EOTWIN_STAC_URL)."),
    s3_endpoint: str | None = typer.Option(None, "--s3-endpoint", help="S3 endpoint host[:port] (default CDSE "
                                           "eodata; http:// for a plain-HTTP mirror). Keys: $CDSE_S3_ACCESS_KEY and "
                                           "$CDSE_S3_SECRET_KEY, or ~/.netrc."),
    as_json: bool = typer.Option(False, "--json", help="Print the pairs written as JSON (for scripts)."),
) -> None:
    """Find L1C and L2A items of the same datatake and tile, read the bbox window of both, write pair folders."""
    from eotwin.atmocorr.pairs import PairRequest, make_pairs
    from eotwin.io.remote.access import RemoteAccess
    from eotwin.io.remote.stac_api import parse_bbox, parse_date

    request = PairRequest(parse_bbox(bbox), parse_date(date), max_cloud, max_pairs)
    access = RemoteAccess.resolve(stac_url=stac_url, s3_endpoint=s3_endpoint)
    _common.say(f"credentials: {access.credentials.source}")
    results = make_pairs(request, output, access, progress=_common.progress(), log=_common.say)
    if as_json:
        _common.out.print_json(json.dumps([r.as_dict() for r in results]))
        return
    for r in results:
        _common.out.print(f"{r.pair_id}  {r.width} x {r.height} px, {r.valid_fraction:.1%} valid  {r.path}")
