"""What atmospheric correction writes beside the bands: the true-colour PNG preview and the STAC item.

The L2A-like output is a cloud-optimised GeoTIFF of the 12 L2A bands (no B10), DN = BOA x 10000 + 1000
and the tag ``BOA_ADD_OFFSET=-1000`` (the L2A convention since baseline 04.00), a true-colour TCI
GeoTIFF and PNG, and a STAC item (eo, projection, raster, processing and view extensions) describing them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from eotwin.io.stac import COG_MEDIA_TYPE, footprint_lonlat, item_dict
from eotwin.sentinel2.bands import L2A_BANDS, PLATFORM
from eotwin.sentinel2.products import L1CProduct
from eotwin.sentinel2.radiometry import BOA_ADD_OFFSET, QUANTIFICATION


def write_png_preview(tci_path: Path, png_path: Path, max_size: int = 1024) -> Path:
    """A PNG of a TCI GeoTIFF, decimated to at most ``max_size`` pixels per side (read from overviews)."""
    from PIL import Image

    from eotwin.io.files import atomic_path
    from eotwin.io.raster import open_raster

    with open_raster(tci_path) as ds:
        scale = max(1.0, max(ds.width, ds.height) / max_size)
        shape = (3, max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        rgb = ds.read((1, 2, 3), out_shape=shape)
    with atomic_path(png_path) as tmp:
        Image.fromarray(np.moveaxis(rgb, 0, -1)).save(tmp, format="PNG")
    return png_path



def stac_item(
    product: L1CProduct,
    assets: Mapping[str, Path],
    *,
    method: str,
    atmosphere: Mapping[str, object],
    item_dir: Path,
    created: str,
) -> dict:
    """A STAC 1.0 item for the L2A-like output (eo, proj, raster, processing and view extensions)."""
    from eotwin import __version__
    from eotwin.atmocorr import srf

    bbox, geometry = footprint_lonlat(product.grid)
    epsg = product.grid.crs.to_epsg()
    grid = product.grid
    sensor = product.spacecraft
    eo_bands = []
    for b in L2A_BANDS:
        entry: dict[str, object] = {"name": b}
        with contextlib.suppress(Exception):  # centre wavelengths need Py6S' tables; optional
            entry["center_wavelength"] = round(srf.centre_wavelength(sensor, b), 4)
        eo_bands.append(entry)
    raster_bands = [
        {
            "data_type": "uint16",
            "nodata": 0,
            "scale": 1.0 / QUANTIFICATION,
            "offset": BOA_ADD_OFFSET / QUANTIFICATION,
            "spatial_resolution": product.resolution,
        }
        for _ in L2A_BANDS
    ]
    roles = {
        "l2a": ["data", "reflectance"],
        "tci": ["visual"],
        "tci_png": ["thumbnail", "overview"],
        "aot": ["data"],
        "evaluation": ["metadata"],
        "evaluation_png": ["overview"],
    }
    media = {
        ".tif": COG_MEDIA_TYPE,
        ".png": "image/png",
        ".json": "application/json",
    }
    asset_entries: dict[str, dict] = {}
    for key, path in assets.items():
        entry = {
            "href": Path(path).relative_to(item_dir).as_posix(),
            "type": media.get(Path(path).suffix, ""),
            "roles": roles.get(key, ["data"]),
        }
        if key == "l2a":
            entry.update(
                {
                    "title": "Surface reflectance, 12 bands (L2A convention)",
                    "eo:bands": eo_bands,
                    "raster:bands": raster_bands,
                }
            )
        elif key == "tci":
            entry["title"] = "True colour (B04, B03, B02), 8 bit"
        elif key == "aot":
            entry.update(
                {
                    "title": "Aerosol optical thickness at 550 nm",
                    "raster:bands": [{"data_type": "uint16", "nodata": 0, "scale": 0.001}],
                }
            )
        asset_entries[key] = entry
    properties = {
        "datetime": product.datetime or created,
        "created": created,
        "platform": PLATFORM[sensor],
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "processing:level": "L2A",
        "processing:software": {"eotwin": __version__},
        "processing:lineage": f"atmospheric correction of {product.product_id} with method {method}",
        "eotwin:method": method,
        "eotwin:source_product": product.product_id,
        "eotwin:source_kind": product.kind,
        "eotwin:atmosphere": dict(atmosphere),
        "proj:shape": [grid.height, grid.width],
        "proj:transform": list(grid.transform)[:6],
        "gsd": product.resolution,
    }
    if epsg is not None:
        properties["proj:epsg"] = epsg
    else:
        properties["proj:wkt2"] = grid.crs.to_wkt()
    if product.processing_baseline:
        properties["s2:processing_baseline"] = product.processing_baseline
    means = product.angles.means()
    properties["view:sun_elevation"] = round(90.0 - means["sun_zenith"], 4)
    properties["view:sun_azimuth"] = round(means["sun_azimuth"], 4)
    properties["view:incidence_angle"] = round(means["view_zenith"], 4)
    properties["view:azimuth"] = round(means["view_azimuth"], 4)
    source = product.source if "://" in product.source else Path(product.source).resolve().as_uri()
    return item_dict(
        f"{product.product_id}_eotwin_L2A",
        geometry=geometry,
        bbox=bbox,
        datetime=properties.pop("datetime"),
        properties=properties,
        extensions=("eo", "projection", "raster", "processing", "view"),
        assets=asset_entries,
        links=[{"rel": "derived_from", "title": "L1C input", "href": source}],
    )
