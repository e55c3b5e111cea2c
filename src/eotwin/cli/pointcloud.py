"""``eotwin pointcloud``: build, inspect and mesh coloured point clouds from a DEM and an image."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from eotwin.cli import _common

app = typer.Typer(help="Coloured point clouds (X, Y, Z, RGB) from a Sentinel-2 image and a DEM.", no_args_is_help=True)


def _parse_classes(text: str) -> tuple[int, ...]:
    from eotwin.errors import EotwinError

    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise EotwinError(f"--mask-exclude must be comma-separated integers, got {text!r}") from None


def _parse_range(text: str) -> tuple[float, float]:
    from eotwin.errors import EotwinError

    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise EotwinError(f"--stretch-range must be LOW,HIGH reflectance, got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise EotwinError(f"--stretch-range needs finite numbers, got {text!r}")
    if not high > low:
        raise EotwinError(f"--stretch-range needs LOW < HIGH, got {text!r}")
    return (low, high)


@app.command("build")
def build(
    dem: str | None = typer.Option(None, "--dem", help="DEM raster (any GDAL-readable file; heights in metres)."),
    image: list[str] | None = typer.Option(None, "--image", help="Colour raster: RGB/TCI or multi-band L2A (B04, B03, B02 "
                                           "found by description); or give --image three times for single-band R, G, B files."),
    bbox: str | None = typer.Option(None, "--bbox", help="Live mode: MINLON,MINLAT,MAXLON,MAXLAT; Sentinel-2 from CDSE "
                                    "and the DEM from Earth Data Hub instead of --dem/--image."),
    date: str | None = typer.Option(None, "--date", help="Live mode: START or START/END (ISO dates)."),
    max_cloud: float = typer.Option(20.0, "--max-cloud", help="Live mode: maximum eo:cloud_cover of the items (%)."),
    collection: str = typer.Option("sentinel-2-l2a", "--collection", help="Live mode: STAC collection."),
    crs: str | None = typer.Option(None, "--crs", help="Live mode: output CRS (default: the UTM zone of the bbox centre)."),
    tile_size: float | None = typer.Option(None, "--tile-size", help="Live mode: split the bbox into tiles of this many "
                                           "metres, built as Dask tasks, one LAZ each plus a .vpc index."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address (default: a local cluster)."),
    workers: int = typer.Option(2, "--workers", help="Workers of the local Dask cluster."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Live mode: do not read or write the local cache."),
    stac_url: str | None = typer.Option(None, "--stac-url", help="STAC API (default CDSE, or $EOTWIN_STAC_URL)."),
    s3_endpoint: str | None = typer.Option(None, "--s3-endpoint", help="S3 endpoint host[:port] (default CDSE "
                                       "eodata; http:// for a plain-HTTP mirror)."),
    dem_url: str | None = typer.Option(None, "--dem-url", help="DEM Zarr store (default EDH GLO-30)."),
    s3_access_key: str | None = typer.Option(None, "--s3-access-key", help="CDSE S3 key (else $CDSE_S3_ACCESS_KEY or ~/.netrc)."),
    s3_secret_key_file: Path | None = typer.Option(None, "--s3-secret-key-file", help="File holding the CDSE S3 secret "
                                                   "(else $CDSE_S3_SECRET_KEY or ~/.netrc)."),
    edh_token_file: Path | None = typer.Option(None, "--edh-token-file", help="File holding the Earth Data Hub token "
                                               "(else $EDH_TOKEN or ~/.netrc)."),
    s3_secret_key: str | None = typer.Option(None, "--s3-secret-key", hidden=True),
    edh_token: str | None = typer.Option(None, "--edh-token", hidden=True),
    output: Path = typer.Option(..., "--output", "-o", help="Output file (.copc.laz, .laz, .las or .ply)."),
    sampled_fraction: float = typer.Option(1.0, "--sampled-fraction", "-f", help="Fraction of valid pixels kept, in (0, 1]: "
                                           "exactly round(F x valid) points, uniform, no duplicates."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling (same seed, same points)."),
    fmt: str | None = typer.Option(None, "--format", help="copc, laz, las or ply (default: from the output suffix; .copc.laz is copc)."),
    grid: str = typer.Option("image", "--grid", help="Output grid: 'image' (default) or 'dem'."),
    z_scale: float = typer.Option(1.0, "--z-scale", help="Vertical exaggeration applied to heights."),
    mask: str | None = typer.Option(None, "--mask", help="Class raster (e.g. Sentinel-2 SCL); excluded classes make no point."),
    mask_exclude: str = typer.Option("0,1,3,8,9,10", "--mask-exclude", help="Classes of --mask to drop "
                                     "(default: SCL no data, defective, cloud shadow, cloud medium/high, cirrus)."),
    stretch: str = typer.Option("fixed", "--stretch", help="Reflectance to 8-bit: 'fixed' (linear over --stretch-range) "
                                "or 'percentile' (2-98 % per band)."),
    stretch_range: str = typer.Option("0,0.3", "--stretch-range", help="Reflectance mapped to 0..255 by the fixed stretch."),
    scale: float | None = typer.Option(None, "--reflectance-scale", help="Override: reflectance = DN x scale + offset."),
    offset: float | None = typer.Option(None, "--reflectance-offset", help="Override the reflectance offset (e.g. -0.1 "
                                        "for L2A baseline 04.00+ bands without metadata)."),
    viewer: bool = typer.Option(True, "--viewer/--no-viewer", help="Write the offline HTML viewer next to the output."),
    preview: bool = typer.Option(True, "--preview/--no-preview", help="Write a PNG oblique preview next to the output."),
    block_rows: int = typer.Option(256, "--block-rows", min=1, help="Rows per streamed block (memory vs. speed)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (for scripts)."),
) -> None:
    """Build a georeferenced coloured point cloud: one point per valid pixel centre of the output grid."""
    from eotwin.errors import EotwinError
    from eotwin.pointcloud.pipeline import build_point_cloud, make_options

    common = dict(format=fmt, sampled_fraction=sampled_fraction, seed=seed, z_scale=z_scale,
                  stretch=stretch, stretch_range=_parse_range(stretch_range), viewer=viewer, preview=preview,
                  block_rows=block_rows)
    s3_secret_key, edh_token = _secrets_from_files(s3_secret_key, edh_token, s3_secret_key_file, edh_token_file)
    if bbox is not None:
        if dem or image:
            raise EotwinError("give either --bbox/--date (live mode) or --dem/--image (local files), not both")
        from eotwin.commands import PointcloudLiveOptions
        from eotwin.options import validated

        live = validated(PointcloudLiveOptions, bbox=bbox, date=date, max_cloud=max_cloud, collection=collection,
                         crs=crs, tile_size=tile_size, scheduler=scheduler, workers=workers, no_cache=no_cache,
                         stac_url=stac_url, s3_endpoint=s3_endpoint, dem_url=dem_url, s3_access_key=s3_access_key,
                         s3_secret_key_file=s3_secret_key_file, edh_token_file=edh_token_file,
                         s3_secret_key=s3_secret_key, edh_token=edh_token)
        _build_live(live, output, common, as_json)
        return
    if not dem or not image:
        raise EotwinError("--dem and --image are required (or use --bbox and --date for live data)")
    options = make_options(
        dem=dem, image=tuple(image), output=output, grid=grid, mask=mask, mask_exclude=_parse_classes(mask_exclude),
        reflectance_scale=scale, reflectance_offset=offset, **common,
    )
    result = build_point_cloud(options, progress=_common.progress())
    _report(result, as_json)


def _report(result, as_json: bool = False) -> None:
    if as_json:
        _common.out.print_json(json.dumps({
            "output": str(result.output), "count": int(result.count), "seconds": round(result.seconds, 3),
            "metadata": str(result.metadata) if result.metadata else None,
            "viewer": str(result.viewer) if result.viewer else None,
            "preview": str(result.preview) if result.preview else None,
        }))
        return
    rate = result.count / result.seconds if result.seconds else float("nan")
    _common.out.print(f"{result.count:,} points -> {result.output} ({result.seconds:.1f} s, {rate:,.0f} points/s)")
    for label, path in (("metadata", result.metadata), ("viewer", result.viewer), ("preview", result.preview)):
        if path:
            _common.out.print(f"{label:9s} {path}")


def _secrets_from_files(s3_secret_key, edh_token, s3_secret_key_file, edh_token_file) -> tuple[str | None, str | None]:
    from eotwin.io.remote.credentials import read_secret_file, refuse_secret_on_argv

    refuse_secret_on_argv(s3_secret_key, "--s3-secret-key", "$CDSE_S3_SECRET_KEY, --s3-secret-key-file or ~/.netrc")
    refuse_secret_on_argv(edh_token, "--edh-token", "$EDH_TOKEN, --edh-token-file or ~/.netrc")
    return (read_secret_file(s3_secret_key_file, "--s3-secret-key-file") if s3_secret_key_file else None,
            read_secret_file(edh_token_file, "--edh-token-file") if edh_token_file else None)


def _build_live(live, output: Path, common: dict, as_json: bool = False) -> None:
    """Live mode from :class:`eotwin.commands.PointcloudLiveOptions` (the model the DeltaTwin component fills too):
    request, endpoints, credentials and cache resolved here, then one build or a tiled one."""
    from eotwin.errors import EotwinError
    from eotwin.io.remote.access import RemoteAccess
    from eotwin.io.remote.cache import Cache, default_cache_dir
    from eotwin.io.remote.stac_api import parse_bbox, parse_date
    from eotwin.pointcloud.live_pipeline import LiveRequest, build_from_bbox

    if not live.date:
        raise EotwinError("--date is required with --bbox")
    request = LiveRequest(parse_bbox(live.bbox), parse_date(live.date), live.collection, live.max_cloud, live.crs)
    access = RemoteAccess.resolve(stac_url=live.stac_url, s3_endpoint=live.s3_endpoint, dem_url=live.dem_url,
                                  s3_access_key=live.s3_access_key, s3_secret_key=live.s3_secret_key,
                                  edh_token=live.edh_token)
    endpoints, credentials = access.endpoints, access.credentials
    _common.say(f"credentials: {credentials.source}")
    cache = Cache(default_cache_dir(), enabled=not live.no_cache)
    if live.tile_size:
        from eotwin.pointcloud.tiling import build_tiled

        result = build_tiled(request, output, live.tile_size, endpoints=endpoints, credentials=credentials,
                             cache=cache, scheduler=live.scheduler, workers=live.workers, progress=_common.progress(),
                             log=_common.say, **common)
        if as_json:
            _common.out.print_json(json.dumps({"output": str(result.vpc), "count": int(result.count),
                                               "tiles": [str(t) for t in result.tiles], "skipped": int(result.skipped),
                                               "planned": int(result.planned)}))
        else:
            _common.out.print(f"{result.count:,} points in {len(result.tiles)} tiles -> {result.vpc} "
                              f"({result.skipped} already done)")
        return
    result = build_from_bbox(request, output, endpoints=endpoints, credentials=credentials, cache=cache,
                             progress=_common.progress(), log=_common.say, **common)
    _report(result, as_json)


@app.command("info")
def info(
    file: Path = typer.Argument(..., help="A .copc.laz, .laz, .las or .ply point cloud."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Count, bounds, CRS, point format and colour range of a point cloud (like ``pdal info``)."""
    from eotwin.pointcloud.info import cloud_info

    summary = cloud_info(file)
    if as_json:
        _common.out.print_json(json.dumps(summary))
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    crs = summary["crs"]
    bounds = summary["bounds"]
    rows = [
        ("file", summary["file"]),
        ("format", f"{summary['format']} {summary['version']}, point format {summary['point_format']}"),
        ("points", f"{summary['count']:,}"),
        ("crs", f"{crs['name']} (EPSG:{crs['epsg']})" if crs["name"] else "none"),
        ("min x y z", " ".join(f"{v:.3f}" for v in bounds["min"]) if bounds else "-"),
        ("max x y z", " ".join(f"{v:.3f}" for v in bounds["max"]) if bounds else "-"),
        ("colour", (f"R {summary['colour']['min'][0]}..{summary['colour']['max'][0]}  G {summary['colour']['min'][1]}.."
                    f"{summary['colour']['max'][1]}  B {summary['colour']['min'][2]}..{summary['colour']['max'][2]}"
                    f" ({summary['colour']['bits']}-bit)") if summary["colour"] else "none"),
    ]
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", str(value))
    _common.out.print(table)


@app.command("mesh")
def mesh(
    dem: str = typer.Option(..., "--dem", help="DEM raster."),
    image: list[str] = typer.Option(..., "--image", help="Colour raster (as for build)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output mesh (.ply; a .glb is written beside it)."),
    resolution: float | None = typer.Option(None, "--resolution", help="Mesh spacing in output-CRS units (default: image grid)."),
    triangles: int | None = typer.Option(None, "--triangles", help="Simplify to about this many triangles (Open3D)."),
    z_scale: float = typer.Option(1.0, "--z-scale", help="Vertical exaggeration."),
    mask: str | None = typer.Option(None, "--mask", help="Class raster; masked cells make no triangles."),
    glb: bool = typer.Option(True, "--glb/--no-glb", help="Also write glTF binary (GLB)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (counts, spacing, files) instead of text."),
) -> None:
    """A coloured terrain mesh (two triangles per grid cell), with normals; PLY and GLB with the CRS in a sidecar."""
    from eotwin.pointcloud.mesh_pipeline import build_mesh

    result = build_mesh(dem, tuple(image), output, resolution=resolution, target_triangles=triangles, z_scale=z_scale,
                        mask=mask, glb=glb, progress=_common.progress())
    if as_json:
        _common.out.print(json.dumps({
            "vertices": result.vertices, "triangles": result.triangles, "spacing": abs(result.grid.transform.a),
            "grid": [result.grid.height, result.grid.width], "coarsened_from": result.coarsened_from,
            "ply": str(result.ply) if result.ply else None, "glb": str(result.glb) if result.glb else None,
        }), soft_wrap=True)
        return
    _common.out.print(f"{result.vertices:,} vertices, {result.triangles:,} triangles")
    for path in (result.ply, result.glb):
        if path:
            _common.out.print(f"mesh      {path}")


@app.command("serve")
def serve(
    target: Path = typer.Argument(..., help="A .copc.laz file, or a tiled run's folder (or its .vpc index)."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Port on 127.0.0.1 (default 0: any free port)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser; just print the URL."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line (url, port, clouds) once listening."),
) -> None:
    """Serve COPC clouds on 127.0.0.1 with HTTP range requests and a streaming viewer (level of detail first).

    Ctrl-C (or SIGTERM) stops the server.
    """
    import sys

    from eotwin.pointcloud.serve import CloudServer, clouds_to_serve, open_browser

    clouds, title = clouds_to_serve(target)
    with CloudServer(clouds, port=port, title=title) as server:
        if as_json:
            payload = {"url": server.url, "port": server.port, "stats": server.url + "api/stats",
                       "clouds": [{"name": c.name, "path": str(c.path), "size": c.size} for c in clouds]}
            _common.out.print(json.dumps(payload), soft_wrap=True)
        else:
            total = sum(c.size for c in clouds)
            _common.out.print(f"serving {len(clouds)} COPC file(s), {total / 1e6:,.1f} MB, at {server.url} (Ctrl-C stops)")
        sys.stdout.flush()
        if not no_browser and not open_browser(server.url):
            _common.say(f"no browser could be opened: open {server.url} yourself")
        server.serve_forever()
