"""A live-data world built from the sample scene: CDSE-like STAC items, S2 assets in S3, an EDH-like Zarr DEM.

Items are copies of a real CDSE L2A item (``template``) with their ids, footprints, dates, cloud
cover and asset hrefs replaced; assets are real JP2 (lossless) and GeoTIFF files; the DEM store is
a Zarr (v2 format) with variable ``dsm`` on a descending latitude axis and fill value 0, like
Earth Data Hub's GLO-30.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.enums import Resampling
from rasterio.warp import reproject

from eotwin.geo.grid import Grid, Window
from eotwin.io.raster import write_geotiff
from eotwin.sample.scene import SampleScene, make_scene, observed_reflectance, scene_scl
from eotwin.sentinel2.bands import S2_BANDS
from eotwin.sentinel2.radiometry import boa_to_dn as reflectance_to_l2a_dn

BUCKET = "eodata"


@dataclass
class LiveWorld:
    scene: SampleScene
    items: list[dict]
    files: dict[str, Path]  # s3 key -> local file
    zarr_root: Path  # directory served over HTTP; the store is zarr_root / "GLO-30-v0.zarr"
    tiles: dict[str, Grid] = field(default_factory=dict)

    def upload(self, s3_client) -> None:
        s3_client.create_bucket(Bucket=BUCKET)
        for key, path in self.files.items():
            s3_client.upload_file(str(path), BUCKET, key)


def _footprint(grid: Grid) -> tuple[list[float], dict]:
    to_lonlat = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    left, bottom, right, top = grid.bounds
    xs = np.concatenate([np.linspace(left, right, 11), np.full(11, right), np.linspace(right, left, 11), np.full(11, left)])
    ys = np.concatenate([np.full(11, top), np.linspace(top, bottom, 11), np.full(11, bottom), np.linspace(bottom, top, 11)])
    lon, lat = to_lonlat.transform(xs, ys)
    ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)] + [[float(lon[0]), float(lat[0])]]
    return [float(min(lon)), float(min(lat)), float(max(lon)), float(max(lat))], {"type": "Polygon", "coordinates": [ring]}


def _warp(data: np.ndarray, src: Grid, dst: Grid, nodata, resampling=Resampling.nearest) -> np.ndarray:
    out = np.full((data.shape[0], *dst.shape), nodata, dtype=data.dtype)
    for band in range(data.shape[0]):
        reproject(data[band], out[band], src_transform=src.transform, src_crs=src.crs.to_wkt(), src_nodata=nodata,
                  dst_transform=dst.transform, dst_crs=dst.crs.to_wkt(), dst_nodata=nodata, resampling=resampling)
    return out


def build_world(root: Path, template: dict, size: int = 240, seed: int = 5, second_zone: bool = False,
                dim_names: tuple[str, str] = ("lat", "lon")) -> LiveWorld:
    """Two overlapping tiles over the sample scene (the second in UTM 31N when ``second_zone``) and the DEM."""
    root.mkdir(parents=True, exist_ok=True)
    scene = make_scene(size=size, seed=seed)
    grid = scene.image_grid
    refl = observed_reflectance(scene)
    dn = reflectance_to_l2a_dn(refl[[S2_BANDS.index(b) for b in ("B02", "B03", "B04")]])
    dn[:, scene.nodata] = 0
    scl = scene_scl(scene)[None]
    half, overlap = size // 2, size // 8
    tiles = {
        "T32TMR": (grid.window_grid(Window(0, 0, size, half + overlap)), False),
        "T32TNR": (grid.window_grid(Window(0, half - overlap, size, size - half + overlap)), second_zone),
    }
    items, files, tile_grids = [], {}, {}
    for n, (tile, (tile_grid, other_zone)) in enumerate(tiles.items()):
        r0 = round((grid.transform.f - tile_grid.transform.f) / 10)
        c0 = round((tile_grid.transform.c - grid.transform.c) / 10)
        tile_dn = dn[:, r0:r0 + tile_grid.height, c0:c0 + tile_grid.width]
        tile_scl = scl[:, r0:r0 + tile_grid.height, c0:c0 + tile_grid.width]
        if other_zone:  # the same ground, delivered in the neighbouring UTM zone
            crs31 = CRS.from_epsg(32631)
            left, bottom, right, top = Transformer.from_crs(grid.crs, crs31, always_xy=True).transform_bounds(*tile_grid.bounds)
            new_grid = Grid.from_bounds((left, bottom, right, top), 10.0, crs31)
            tile_dn = _warp(tile_dn, tile_grid, new_grid, 0)
            tile_scl = _warp(tile_scl, tile_grid, new_grid, 0)
            tile_grid = new_grid
        tile_grids[tile] = tile_grid
        item_id = f"S2A_MSIL2A_20240701T103031_N0510_R108_{tile}_20240701T1{n}0000"
        # one key space per world: GDAL remembers object sizes per /vsis3/ path for the life of the process, so two
        # worlds must not reuse paths for different bytes
        prefix = f"Sentinel-2/MSI/L2A/2024/07/{root.name}/{item_id}.SAFE/GRANULE/L2A_{tile}/IMG_DATA"
        item = copy.deepcopy(template)
        item["id"] = item_id
        item["bbox"], item["geometry"] = _footprint(tile_grid)
        item["properties"]["datetime"] = f"2024-07-0{1 + n}T10:30:31.024000Z"
        item["properties"]["eo:cloud_cover"] = 3.5 + 10 * n
        item["properties"]["grid:code"] = f"MGRS-{tile[1:]}"
        keep = {"B02_10m": 0, "B03_10m": 1, "B04_10m": 2, "SCL_20m": None}
        item["assets"] = {k: v for k, v in item["assets"].items() if k in keep}
        epsg = tile_grid.crs.to_epsg()
        for key, band_index in keep.items():
            asset = item["assets"][key]
            band = key.split("_")[0]
            if band == "SCL":
                scl_grid = Grid(Affine(20, 0, tile_grid.transform.c, 0, -20, tile_grid.transform.f),
                                tile_grid.width // 2, tile_grid.height // 2, tile_grid.crs)
                data = tile_scl[:, ::2, ::2][:, :scl_grid.height, :scl_grid.width]
                path, suffix, g = root / f"{item_id}_SCL_20m.tif", ".tif", scl_grid
                write_geotiff(path, data, g, nodata=0)
            else:
                data, g = tile_dn[band_index:band_index + 1], tile_grid
                if band == "B04":  # a real JPEG 2000 like CDSE's, losslessly compressed
                    path, suffix = root / f"{item_id}_{band}_10m.jp2", ".jp2"
                    _write_jp2(path, data, g)
                else:
                    path, suffix = root / f"{item_id}_{band}_10m.tif", ".tif"
                    write_geotiff(path, data, g, nodata=0)
            s3_key = f"{prefix}/{tile}_20240701T103031_{key}{suffix}"
            files[s3_key] = path
            asset["href"] = f"s3://{BUCKET}/{s3_key}"
            asset["proj:code"] = f"EPSG:{epsg}"
            asset["proj:shape"] = [g.height, g.width]
            asset["proj:transform"] = list(g.transform)[:6]
            asset.pop("file:checksum", None)
            asset.pop("alternate", None)
        items.append(item)
    zarr_root = root / "edh"
    write_dem_zarr(zarr_root / "GLO-30-v0.zarr", scene, dim_names)
    return LiveWorld(scene, items, files, zarr_root, tile_grids)


def _write_jp2(path: Path, data: np.ndarray, grid: Grid) -> None:
    import rasterio

    with rasterio.open(path, "w", driver="JP2OpenJPEG", width=grid.width, height=grid.height, count=data.shape[0],
                       dtype=data.dtype.name, crs=grid.crs.to_wkt(), transform=grid.transform, nodata=0,
                       QUALITY=100, REVERSIBLE="YES") as dst:
        dst.write(data)


def write_dem_zarr(path: Path, scene: SampleScene, dim_names: tuple[str, str] = ("lat", "lon"), chunk: int = 64) -> None:
    """The scene's 1-arcsecond DEM as an EDH-like Zarr store (v2 format, ``dsm``, descending latitude, fill 0)."""
    import xarray as xr

    lon, lat = scene.dem_grid.pixel_centres()
    lat_name, lon_name = dim_names
    data = xr.Dataset(
        {"dsm": ((lat_name, lon_name), scene.dem.astype(np.float32), {"units": "m", "long_name": "altitude over the geoid"})},
        coords={lat_name: np.asarray(lat[:, 0], dtype=np.float64), lon_name: np.asarray(lon[0], dtype=np.float64)},
    )
    encoding = {"dsm": {"chunks": (chunk, chunk), "_FillValue": 0.0}}
    data.to_zarr(path, mode="w", zarr_format=2, consolidated=True, encoding=encoding)


def real_l2a_template(shared_fixtures: Path) -> dict:
    path = shared_fixtures / "cdse/eometadatatool/S2A_MSIL2A_20220217T183431_N0510_R027_T13VEK_20240516T022440.json"
    return json.loads(path.read_text())


# --- a Level-1C product behind a STAC item (atmospheric correction input) -------------------------
def real_l1c_template(shared_fixtures: Path) -> dict:
    """A real CDSE ``sentinel-2-l1c`` item (T51CVP, baseline 05.10)."""
    path = shared_fixtures / "cdse/eometadatatool/S2A_MSIL1C_20240116T000741_N0510_R130_T51CVP_20240116T010505.json"
    return json.loads(path.read_text())


def l1c_item_from_safe(template: dict, safe: Path, prefix: str, http_base: str | None = None,
                       drop: tuple[str, ...] = ()) -> tuple[dict, dict[str, Path]]:
    """A copy of the real L1C item ``template`` describing the SAFE folder ``safe`` as stored in the object store.

    Hrefs become ``s3://eodata/<prefix>/<SAFE name>/...`` (keeping the real item's ``alternate`` https hrefs,
    unreachable here, which readers must not prefer), or ``<http_base>/<SAFE name>/...`` without alternates when
    ``http_base`` is given; ids, dates, footprint and ``proj:*`` follow the SAFE's own metadata. Returns the item
    and the S3 keys -> local files to upload. ``drop`` removes assets (a broken item).
    """
    from eotwin.io.raster import raster_info
    from eotwin.sentinel2.bands import NATIVE_RESOLUTION
    from eotwin.sentinel2.metadata import parse_product_metadata, parse_tile_metadata

    mtd = safe / "MTD_MSIL1C.xml"
    tl = next(safe.glob("GRANULE/*/MTD_TL.xml"))
    meta = parse_product_metadata(mtd.read_bytes())
    tile = parse_tile_metadata(tl.read_bytes())
    item = copy.deepcopy(template)
    item["id"] = meta.product_uri.removesuffix(".SAFE")
    files: dict[str, Path] = {}

    def href_of(path: Path) -> str:
        rel = f"{safe.name}/{path.relative_to(safe).as_posix()}"
        if http_base is not None:
            return f"{http_base.rstrip('/')}/{rel}"
        files[f"{prefix}/{rel}"] = path
        return f"s3://{BUCKET}/{prefix}/{rel}"

    assets = item["assets"]
    for key, path in (("product_metadata", mtd), ("granule_metadata", tl)):
        assets[key]["href"] = href_of(path)
    grid10 = None
    for key, asset in list(assets.items()):
        if key in drop:
            del assets[key]
            continue
        if key not in ("product_metadata", "granule_metadata"):
            band = key if key in NATIVE_RESOLUTION else None
            if band is None:
                continue
            path = safe / (meta.image_files[(band, NATIVE_RESOLUTION[band])] + ".jp2")
            if not path.exists():
                del assets[key]
                continue
            info = raster_info(path)
            grid10 = info.grid if band == "B02" else grid10
            asset["href"] = href_of(path)
            asset["proj:code"] = tile.crs_code
            asset["proj:shape"] = [info.grid.height, info.grid.width]
            asset["proj:transform"] = list(info.grid.transform)[:6]
            left, bottom, right, top = info.grid.bounds
            asset["proj:bbox"] = [left, bottom, right, top]
        asset.pop("file:checksum", None)
        asset.pop("file:size", None)
        if http_base is not None:
            asset.pop("alternate", None)
        elif "alternate" in asset:  # unreachable here, as the real https zipper is without a token
            asset["alternate"]["https"]["href"] = f"https://zipper.invalid/{item['id']}/{key}"
    if grid10 is not None:
        item["bbox"], item["geometry"] = _footprint(grid10)
    props = item["properties"]
    props["datetime"] = props["start_datetime"] = props["end_datetime"] = meta.start_time
    props["processing:version"] = meta.processing_baseline
    props["grid:code"] = "MGRS-" + item["id"].split("_")[5][1:]
    item["links"] = []
    return item, files
