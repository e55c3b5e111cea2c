"""A CDSE-like world of one L1C and its L2A (same datatake, tile T46UEU) for ``eotwin atmocorr pairs``.

The L1C is a SAFE with the real MTD_MSIL1C.xml (baseline 05.09) and MTD_TL.xml of that tile and lossless JP2
bands at their native resolutions from the tile's upper-left corner, described by a copy of a real CDSE
``sentinel-2-l1c`` item; the L2A is a copy of a real CDSE ``sentinel-2-l2a`` item re-pointed at JP2 files of
every band and resolution the real item lists (B02_10m, B02_20m, ...), whose DN are a known function of the L1C
DN of the same place, a known SCL, and the real MTD_MSIL2A.xml of a 05.09 product. The pixels come from the
caller (``l1c_dn``, ``scl_20m``): random ones in the tests, a whole tile of smooth ones in benchmarks/memory.py.
"""

from __future__ import annotations

import copy
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from eotwin.sentinel2.bands import L2A_BANDS, NATIVE_RESOLUTION, S2_BANDS
from eotwin.sentinel2.metadata import parse_product_metadata
from tests.support.live_fixture import BUCKET, l1c_item_from_safe, real_l1c_template
from tests.support.loopback import S3Server, StacApiServer

ACCESS_KEY = "AKIAPAIRSLOOPBACK123"
SECRET_KEY = "pairs-loopback-secret-9f8e7d6c5b"
L1C_SAFE = "S2A_MSIL1C_20230216T044851_N0509_R076_T46UEU_20230216T00000.SAFE"
TL = "GRANULE/L1C_T46UEU_A039970_20230216T045412/MTD_TL.xml"
L2A_MTD = "S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825.SAFE/MTD_MSIL2A.xml"
L2A_ID = "S2A_MSIL2A_20230216T044851_N0509_R076_T46UEU_20230216T081544"
DATATAKE = "GS2A_20230216T044851_039970_N05.09"
ULX, ULY, EPSG = 499980.0, 5400000.0, 32646
PAIR_ID = "S2A_T46UEU_20230216T044851"
TILE_PX = 10980  # the tile's width at 10 m


def to_10m(data: np.ndarray, res: int) -> np.ndarray:
    f = res // 10
    return np.repeat(np.repeat(data, f, axis=0), f, axis=1)


def l2a_of(dn: np.ndarray, band: str) -> np.ndarray:
    """The world's L1C -> L2A transform (no data stays no data)."""
    out = dn.astype(np.int32) - 500 + 37 * S2_BANDS.index(band)
    return np.where(dn == 0, 0, out).astype(np.uint16)


def write_jp2(path: Path, data: np.ndarray, res: float) -> None:
    """Lossless JPEG 2000 on the tile grid (atomic); 1024 px tiles like the real bands where the image is larger."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tiles = {"BLOCKXSIZE": 1024, "BLOCKYSIZE": 1024} if min(data.shape) > 1024 else {}
    part = path.with_name(f"{path.stem}.part{path.suffix}")
    with rasterio.open(part, "w", driver="JP2OpenJPEG", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype.name, crs=f"EPSG:{EPSG}", transform=Affine(res, 0, ULX, 0, -res, ULY),
                       nodata=0, QUALITY=100, REVERSIBLE="YES", **tiles) as dst:
        dst.write(data, 1)
    part.replace(path)
    side = part.with_name(part.name + ".aux.xml")  # GDAL's side file (the nodata value) follows its image
    if side.exists():
        side.replace(path.with_name(path.name + ".aux.xml"))


def _resampled(data10: np.ndarray, res: int) -> np.ndarray:
    """A 10 m-based array at ``res``: block means (the L2A's coarser copies of a band; never to be used)."""
    f = res // 10
    n = data10.shape[0] // f
    return data10[: n * f, : n * f].reshape(n, f, n, f).astype(np.float64).mean(axis=(1, 3)).round().astype(np.uint16)


class PairWorld:
    """The L1C SAFE and L2A files on disk, and a way to publish both items under fresh S3 prefixes.

    ``l1c_dn(band)``: the band's DN at its native resolution from the tile corner (0 = no data);
    ``scl_20m()``: the SCL at 20 m over the same extent. ``reuse``: keep band files an earlier world wrote in
    ``root`` (a whole tile takes minutes to encode).
    """

    def __init__(self, root: Path, shared: Path, s3: S3Server, stac: StacApiServer,
                 l1c_dn: Callable[[str], np.ndarray], scl_20m: Callable[[], np.ndarray], reuse: bool = False) -> None:
        self.root, self.shared, self.s3, self.stac = root, shared, s3, stac
        self.client = s3.client(ACCESS_KEY, SECRET_KEY)
        self.client.create_bucket(Bucket=BUCKET)
        self.safe = root / "safe" / L1C_SAFE
        (self.safe / TL).parent.mkdir(parents=True, exist_ok=reuse)
        src = shared / "safe" / L1C_SAFE
        shutil.copyfile(src / "MTD_MSIL1C.xml", self.safe / "MTD_MSIL1C.xml")
        shutil.copyfile(src / TL, self.safe / TL)
        meta = parse_product_metadata((src / "MTD_MSIL1C.xml").read_bytes())
        for band in S2_BANDS:
            res = NATIVE_RESOLUTION[band]
            target = self.safe / (meta.image_files[(band, res)] + ".jp2")
            if not (reuse and target.is_file()):
                write_jp2(target, l1c_dn(band), res)
        self.l1c_template = real_l1c_template(shared)
        path = shared / "cdse/emanuel-gf_DestinE_ESA_DeltaTwin/STAC_data_query/models/stac_items.json"
        self.l2a_template = json.loads(path.read_text())["L2A"]
        self.l2a_dir = root / "l2a"
        self.l2a_files: dict[str, Path] = {}
        scl = None
        for key in self.l2a_template["assets"]:
            band, _, res_text = key.partition("_")
            if not res_text.endswith("m") or not (band in L2A_BANDS or band == "SCL"):
                continue
            res = int(res_text[:-1])
            self.l2a_files[key] = self.l2a_dir / f"T46UEU_20230216T044851_{key}.jp2"
            if reuse and self.l2a_files[key].is_file():
                continue
            if band == "SCL":
                scl = scl_20m() if scl is None else scl
                data = scl if res == 20 else scl[::3, ::3]
            else:
                native = NATIVE_RESOLUTION[band]
                l2a10 = l2a_of(to_10m(l1c_dn(band), native), band)
                data = l2a10[:: res // 10, :: res // 10] if res <= native else _resampled(l2a10, res)
                del l2a10
            write_jp2(self.l2a_files[key], data, res)

    def publish(self, aux_ecmwft: bytes | None = None, aux_camsfo: bytes | None = None) -> tuple[dict, dict]:
        """Upload both products under a new prefix (GDAL caches per path); the L1C and L2A items.

        ``aux_ecmwft``, ``aux_camsfo``: the L1C's GRIB ``AUX_DATA/AUX_ECMWFT`` and ``AUX_DATA/AUX_CAMSFO``
        beside its MTD_TL.xml (no item asset names them)."""
        tag = uuid.uuid4().hex[:10]
        l1c, files = l1c_item_from_safe(self.l1c_template, self.safe, f"Sentinel-2/MSI/L1C/2023/02/16/{tag}")
        for aux_name, data in (("AUX_ECMWFT", aux_ecmwft), ("AUX_CAMSFO", aux_camsfo)):
            if data is None:
                continue
            aux = self.root / f"{aux_name}_{tag}"
            aux.write_bytes(data)
            tl_key = l1c["assets"]["granule_metadata"]["href"].removeprefix(f"s3://{BUCKET}/")
            files[tl_key.removesuffix("MTD_TL.xml") + f"AUX_DATA/{aux_name}"] = aux
        l1c["properties"]["eopf:datatake_id"] = DATATAKE
        l2a = copy.deepcopy(self.l2a_template)
        l2a["id"], l2a["bbox"], l2a["geometry"] = L2A_ID, l1c["bbox"], l1c["geometry"]
        props = l2a["properties"]
        props.update({"datetime": l1c["properties"]["datetime"], "start_datetime": l1c["properties"]["datetime"],
                      "end_datetime": l1c["properties"]["datetime"], "platform": "sentinel-2a",
                      "grid:code": "MGRS-46UEU", "eopf:datatake_id": DATATAKE, "processing:version": "05.09",
                      "processing:datetime": "2023-02-16T08:15:44.000000Z"})
        l2a["links"] = []
        prefix = f"Sentinel-2/MSI/L2A/2023/02/16/{tag}/{L2A_ID}.SAFE"
        assets = {}
        for key, path in self.l2a_files.items():
            asset = l2a["assets"][key]
            s3_key = f"{prefix}/GRANULE/L2A_T46UEU_A039970_20230216T045412/IMG_DATA/R{key.split('_')[1]}/{path.name}"
            files[s3_key] = path
            asset["href"] = f"s3://{BUCKET}/{s3_key}"
            asset["proj:code"] = f"EPSG:{EPSG}"
            asset.pop("file:checksum", None)
            asset["alternate"]["https"]["href"] = f"https://zipper.invalid/{L2A_ID}/{key}"
            assets[key] = asset
        mtd_key = f"{prefix}/MTD_MSIL2A.xml"
        files[mtd_key] = self.shared / "safe" / L2A_MTD
        assets["product_metadata"] = l2a["assets"]["product_metadata"] | {"href": f"s3://{BUCKET}/{mtd_key}"}
        l2a["assets"] = assets
        for key, path in files.items():
            self.client.upload_file(str(path), BUCKET, key)
        return l1c, l2a
