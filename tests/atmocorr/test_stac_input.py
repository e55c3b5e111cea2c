"""A CDSE STAC L1C item as input of ``eotwin atmocorr run``, against loopback STAC API + S3 (moto) + HTTP servers.

The product: real MTD_MSIL1C.xml (baseline 05.09, RADIO_ADD_OFFSET -1000) and MTD_TL.xml of tile T46UEU, small
JP2 bands inside the tile (``build_safe``), described by a copy of a real CDSE sentinel-2-l1c item whose hrefs
point at the loopback object store. Read as an item (file, URL, id in the STAC API, S3 or HTTP hrefs) it must give
exactly the L2A product the same files give as a SAFE folder (or as an L1C stack, for DOS).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import rasterio

from eotwin.atmocorr import stac_input
from eotwin.atmocorr.stac_input import open_input as open_l1c  # items and local products
from eotwin.cli.main import run
from eotwin.errors import EotwinError
from eotwin.io.remote.gdal import explain_remote_error
from eotwin.io.remote.http import sigv4_headers
from eotwin.sentinel2.bands import L2A_BANDS, S2_BANDS
from eotwin.sentinel2.reading import BandReader
from tests.sentinel2.test_products import build_safe
from tests.support.live_fixture import BUCKET, l1c_item_from_safe, real_l1c_template
from tests.support.loopback import S3Server, StacApiServer, StaticHttpServer

ACCESS_KEY = "AKIASTACL1CLOOPBACK7"
SECRET_KEY = "l1c-loopback-secret-5e4d3c2b1a"
PRODUCT_ID = "S2A_MSIL1C_20230216T044851_N0509_R076_T46UEU_20230216T063628"


class World:
    """The SAFE on disk, the servers, and a way to publish it under a fresh S3 prefix (GDAL caches per path)."""

    def __init__(self, root: Path, safe: Path, template: dict, s3: S3Server, stac: StacApiServer,
                 http: StaticHttpServer) -> None:
        self.root, self.safe, self.template = root, safe, template
        self.s3, self.stac, self.http = s3, stac, http
        self.client = s3.client(ACCESS_KEY, SECRET_KEY)
        self.client.create_bucket(Bucket=BUCKET)

    def publish(self, drop: tuple[str, ...] = (), public: bool = False) -> tuple[dict, Path]:
        """Upload the SAFE under a new prefix (``public``: readable without keys); the item and its JSON file."""
        prefix = f"Sentinel-2/MSI/L1C/2023/02/16/{uuid.uuid4().hex[:12]}"
        item, files = l1c_item_from_safe(self.template, self.safe, prefix, drop=drop)
        for key, path in files.items():
            self.client.upload_file(str(path), BUCKET, key, ExtraArgs={"ACL": "public-read"} if public else None)
        path = self.root / f"{prefix.rsplit('/', 1)[-1]}.json"
        path.write_text(json.dumps(item))
        return item, path

    def cli(self, *args: str) -> int:
        return run(["-q", "atmocorr", "run", *args, "--s3-endpoint", f"http://{self.s3.endpoint}",
                    "--stac-url", self.stac.url, "--s3-access-key", ACCESS_KEY,
                    "--s3-secret-key-file", str(self.secret_file())])

    def secret_file(self) -> Path:
        path = self.root / "s3-secret.txt"
        path.write_text(SECRET_KEY + "\n")
        return path


@pytest.fixture(scope="module")
def world(shared_fixtures, tmp_path_factory):
    root = tmp_path_factory.mktemp("stac_l1c")
    safe = build_safe(shared_fixtures, root / "safe")
    template = real_l1c_template(shared_fixtures)
    items: list[dict] = []
    with S3Server() as s3, StacApiServer(items) as stac, StaticHttpServer(root) as http:
        w = World(root, safe, template, s3, stac, http)
        item, path = w.publish()
        items.append(item)  # the STAC API serves the list it was given
        http_item, _ = l1c_item_from_safe(template, safe, "", http_base=f"{http.url}/safe")
        (root / "http_item.json").write_text(json.dumps(http_item))
        w.item, w.item_path = item, path
        yield w


@pytest.fixture(scope="module")
def safe_dos(world, tmp_path_factory) -> Path:
    """The SAFE corrected by DOS: the reference output of the DOS runs."""
    out = tmp_path_factory.mktemp("safe_dos") / "out"
    assert run(["-q", "atmocorr", "run", str(world.safe), "-o", str(out), "--method", "dos"]) == 0
    return out


@pytest.fixture(autouse=True)
def _no_pending_faults(world):
    yield
    for server in (world.s3, world.stac, world.http):
        server.faults.pending.clear()


def _l2a(out: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(out / "l2a.tif") as ds:
        return ds.read(), ds.tags()


def _same_l2a(a: Path, b: Path, ignore_tags: tuple[str, ...] = ()) -> None:
    (da, ta), (db, tb) = _l2a(a), _l2a(b)
    np.testing.assert_array_equal(da, db)
    assert {k: v for k, v in ta.items() if k not in ignore_tags} == {k: v for k, v in tb.items() if k not in ignore_tags}
    assert (da > 0).all()  # every pixel valid: the comparison is not between two empty images


def test_item_as_file_url_and_id_gives_the_l2a_of_the_safe(world, tmp_path, capsys):
    """Per-pixel angles from MTD_TL.xml and offsets from MTD_MSIL1C.xml, exactly as for the SAFE (6S + DDV)."""
    args = ("--method", "6s-ddv", "--wv", "1.5")
    assert run(["-q", "atmocorr", "run", str(world.safe), "-o", str(tmp_path / "safe"), *args]) == 0
    inputs = {
        "file": (str(world.item_path),),
        "url": (f"{world.http.url}/{world.item_path.name}",),  # the item over HTTP, its assets in S3
        "id": ("--item-id", PRODUCT_ID),  # looked up in the STAC API
        "https_hrefs": (str(world.root / "http_item.json"),),  # assets over HTTP (/vsicurl/)
    }
    for name, given in inputs.items():
        code = world.cli(*given, "-o", str(tmp_path / name), *args)
        printed = capsys.readouterr()
        assert code == 0, (name, printed.err)
        _same_l2a(tmp_path / "safe", tmp_path / name)
        item = json.loads((tmp_path / name / "item.json").read_text())
        assert item["properties"]["eotwin:source_kind"] == "STAC item"
        assert item["properties"]["eotwin:source_product"] == PRODUCT_ID
        for path in (tmp_path / name).iterdir():
            data = path.read_bytes()
            assert ACCESS_KEY.encode() not in data and SECRET_KEY.encode() not in data
        assert SECRET_KEY not in printed.out + printed.err
    derived = json.loads((tmp_path / "url" / "item.json").read_text())["links"][0]["href"]
    assert derived == f"{world.http.url}/{world.item_path.name}"
    by_id = json.loads((tmp_path / "id" / "item.json").read_text())["links"][0]["href"]
    assert by_id == f"{world.stac.url}/collections/sentinel-2-l1c/items/{PRODUCT_ID}"


def test_item_without_product_metadata_uses_raster_scale_and_offset(world, safe_dos, tmp_path):
    """``raster:scale`` 0.0001 and ``raster:offset`` -0.1 of the real item are the SAFE's 10000 and -1000."""
    _, path = world.publish(drop=("product_metadata",))
    access = stac_input.RemoteAccess.resolve(s3_endpoint=f"http://{world.s3.endpoint}", s3_access_key=ACCESS_KEY,
                                             s3_secret_key=SECRET_KEY, environ={})
    product = open_l1c(path, access=access)
    assert product.quantification == 10000.0 and set(product.offsets[b] for b in L2A_BANDS) == {-1000.0}
    assert product.spacecraft == "S2A" and product.processing_baseline == "05.09"
    assert world.cli(str(path), "-o", str(tmp_path / "item"), "--method", "dos") == 0
    _same_l2a(safe_dos, tmp_path / "item")


def test_local_item_with_relative_hrefs(world, safe_dos, tmp_path):
    """An item next to its SAFE, hrefs relative to the item file (as stactools writes them): no network at all."""
    item, _ = l1c_item_from_safe(world.template, world.safe, "", http_base=".")
    path = world.safe.parent / "relative_item.json"
    path.write_text(json.dumps(item))
    assert item["assets"]["B02"]["href"].startswith("./" + world.safe.name + "/GRANULE/")
    assert run(["-q", "atmocorr", "run", str(path), "-o", str(tmp_path / "item"), "--method", "dos"]) == 0
    _same_l2a(safe_dos, tmp_path / "item")


def test_item_gives_the_l2a_of_the_same_bands_as_a_stack(world, tmp_path):
    """The item and an L1C stack of its bands on the 10 m grid, given the item's scene-mean angles, agree
    to within what the item's per-pixel, per-band angles change (DOS corrects through the 6S table)."""
    access = stac_input.RemoteAccess.resolve(s3_endpoint=f"http://{world.s3.endpoint}", s3_access_key=ACCESS_KEY,
                                             s3_secret_key=SECRET_KEY, environ={})
    product = open_l1c(world.item_path, access=access)
    with stac_input.product_env(product), BandReader(product.bands, product.grid) as reader:
        dn = reader.read(S2_BANDS)
    assert np.isfinite(dn).all() and (dn == np.rint(dn)).all()  # 20/60 m bands are constants: exact on 10 m
    grid = product.grid
    stack = tmp_path / "stack.tif"
    with rasterio.open(stack, "w", driver="GTiff", width=grid.width, height=grid.height, count=len(S2_BANDS),
                       dtype="uint16", crs=grid.crs.to_wkt(), transform=grid.transform, nodata=0) as ds:
        ds.write(dn.astype(np.uint16))
        for i, band in enumerate(S2_BANDS, start=1):
            ds.set_band_description(i, band)
        means = product.angles.means()
        ds.update_tags(RADIO_ADD_OFFSET=-1000, SUN_ZENITH=means["sun_zenith"], SUN_AZIMUTH=means["sun_azimuth"],
                       VIEW_ZENITH=means["view_zenith"], VIEW_AZIMUTH=means["view_azimuth"],
                       SPACECRAFT="Sentinel-2A", PRODUCT_ID=PRODUCT_ID)
    assert run(["-q", "atmocorr", "run", str(stack), "-o", str(tmp_path / "stack"), "--method", "dos"]) == 0
    assert world.cli(str(world.item_path), "-o", str(tmp_path / "item"), "--method", "dos") == 0
    (a, _), (b, _) = _l2a(tmp_path / "stack"), _l2a(tmp_path / "item")
    diff = np.abs(a.astype(np.int64) - b)
    assert np.median(diff) == 0 and diff.max() <= 20  # 20 DN = 0.002; a wrong band would be off by hundreds
    assert (a > 0).all()


def test_transient_faults_are_retried(world, tmp_path, capsys):
    """503s on the tile metadata (requests), on a band (GDAL) and on the STAC search change nothing."""
    item, _ = world.publish()
    world.stac.items.append(item | {"id": PRODUCT_ID + "_faults"})
    assert world.cli("--item-id", PRODUCT_ID + "_faults", "-o", str(tmp_path / "clean"), "--method", "dos") == 0
    item, path = world.publish()
    s3_before, stac_before = world.s3.faults.injected, world.stac.faults.injected
    world.s3.faults.add("status", 503, times=2, path_contains="MTD_TL.xml")
    world.s3.faults.add("status", 503, times=2, path_contains="_B03.jp2")
    world.stac.faults.add("status", 503, times=1)
    world.stac.items.append(item | {"id": PRODUCT_ID + "_faults2"})
    code = world.cli("--item-id", PRODUCT_ID + "_faults2", "-o", str(tmp_path / "faulty"), "--method", "dos")
    assert code == 0, capsys.readouterr().err
    assert world.s3.faults.injected - s3_before == 4 and world.stac.faults.injected - stac_before == 1
    assert not world.s3.faults.pending and not world.stac.faults.pending
    _same_l2a(tmp_path / "clean", tmp_path / "faulty", ignore_tags=("SOURCE_PRODUCT",))  # the ids differ


@pytest.mark.parametrize(("where", "status", "expected"), [
    ("MTD_TL.xml", 403, "MTD_TL.xml: access denied: check the S3 keys (HTTP 403)"),
    ("_B02.jp2", 403, "access denied: check the S3 keys (HTTP 403)"),
    ("MTD_MSIL1C.xml", 401, "unauthorised"),
])
def test_denied_access_is_one_line_without_secrets_or_output(world, tmp_path, capsys, where, status, expected):
    _, path = world.publish()
    world.s3.faults.add("status", status, times=100, path_contains=where)
    code = world.cli(str(path), "-o", str(tmp_path / "out"), "--method", "dos")
    printed = capsys.readouterr()
    assert code != 0
    err = printed.err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret not in printed.out + printed.err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.part-*"))


def test_missing_band_asset_and_bad_items_are_one_line_errors(world, tmp_path, capsys):
    _, path = world.publish(drop=("B11",))
    assert world.cli(str(path), "-o", str(tmp_path / "out"), "--method", "dos") != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no asset for band B11" in err
    assert not (tmp_path / "out").exists()
    not_item = tmp_path / "collection.json"
    not_item.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    assert world.cli(str(not_item), "-o", str(tmp_path / "out")) != 0
    assert "not a STAC item" in capsys.readouterr().err
    l2a = dict(world.item, collection="sentinel-2-l2a")
    with pytest.raises(EotwinError, match="Level-2A item"):
        stac_input.open_stac_item(l2a, "x.json")
    assert world.cli("--item-id", "S2B_MSIL1C_NOT_THERE", "-o", str(tmp_path / "out")) != 0
    assert "no item 'S2B_MSIL1C_NOT_THERE' in collection sentinel-2-l1c" in capsys.readouterr().err
    assert world.cli(str(path), "--item-id", PRODUCT_ID, "-o", str(tmp_path / "out")) != 0
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_hrefs_prefer_s3_and_resolve_relative_to_the_item(world):
    asset = world.item["assets"]["B02"]
    hrefs = stac_input.asset_hrefs(asset)
    assert hrefs[0].startswith("s3://eodata/") and hrefs[1].startswith("https://")
    https_first = {"href": "https://zipper.invalid/x", "alternate": {"s3": {"href": "s3://eodata/a/b.jp2"}}}
    assert stac_input.asset_hrefs(https_first)[0] == "s3://eodata/a/b.jp2"
    assert stac_input.resolve_href("B02.jp2", "http://h/items/x.json") == "http://h/items/B02.jp2"
    assert stac_input.resolve_href("B02.jp2", "/data/items/x.json") == "/data/items/B02.jp2"
    assert stac_input.gdal_path("s3://eodata/a/b.jp2") == "/vsis3/eodata/a/b.jp2"


def test_sigv4_signature_matches_botocore(monkeypatch):
    import botocore.auth
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    path = "/eodata/Sentinel-2/MSI/L1C/2024/01/16/S2A_MSIL1C_X.SAFE/MTD_MSIL1C.xml"
    ours = sigv4_headers(ACCESS_KEY, SECRET_KEY, "eodata.dataspace.copernicus.eu", path, now=when)
    request = AWSRequest(method="GET", url=f"https://eodata.dataspace.copernicus.eu{path}")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when.replace(tzinfo=None))
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    assert ours["Authorization"] == request.headers["Authorization"]
    assert SECRET_KEY not in ours["Authorization"]


def test_endpoint_scheme_and_credentials_precedence(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine s3.example.org login NETRCKEY password NETRCSECRET\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    access = stac_input.RemoteAccess.resolve(s3_endpoint="http://s3.example.org:9000", environ={})
    assert access.endpoints.s3_endpoint == "s3.example.org:9000" and access.endpoints.s3_https is False
    assert access.credentials.source == "netrc" and "NETRCSECRET" not in repr(access)
    env = {"CDSE_S3_ACCESS_KEY": "ENVKEY", "CDSE_S3_SECRET_KEY": "ENVSECRET"}
    access = stac_input.RemoteAccess.resolve(s3_endpoint="s3.example.org", environ=env)
    assert access.credentials.source == "environment" and access.endpoints.s3_https is True
    with pytest.raises(EotwinError, match="--s3-endpoint"):
        stac_input.RemoteAccess.resolve(s3_endpoint="ftp://x", environ={})


def test_without_keys_reads_are_unsigned_and_a_refusal_says_no_keys_were_found(world, tmp_path, monkeypatch):
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    access = stac_input.RemoteAccess.resolve(s3_endpoint=f"http://{world.s3.endpoint}", environ={})
    assert access.credentials.source == "none"
    _, public = world.publish(public=True)
    product = open_l1c(public, access=access)  # an open mirror: unsigned requests are served
    assert product.offsets["B02"] == -1000.0
    with stac_input.product_env(product), BandReader(product.bands, product.grid) as reader:
        assert np.isfinite(reader.read(("B02", "B09"))).all()
    _, path = world.publish()
    world.s3.faults.add("status", 403, times=100, path_contains="MTD_TL.xml")
    with pytest.raises(EotwinError, match=r"MTD_TL.xml: access denied: no S3 keys found .* \(HTTP 403\)$"):
        open_l1c(path, access=access)


@pytest.mark.parametrize("where", ["MTD_TL.xml", "_B8A.jp2"])
def test_https_hrefs_that_need_a_login_are_one_line_errors(world, tmp_path, capsys, where):
    """The XML through requests, a band through GDAL's /vsicurl/ (a fresh copy of the item: GDAL caches per URL)."""
    item = json.loads((world.root / "http_item.json").read_text())
    copy = world.root / f"http_copy_{uuid.uuid4().hex[:8]}"
    copy.symlink_to(world.safe.parent, target_is_directory=True)
    path = world.root / f"{copy.name}.json"
    path.write_text(json.dumps(item).replace(f"{world.http.url}/safe/", f"{world.http.url}/{copy.name}/"))
    world.http.faults.add("status", 401, times=100, path_contains=where)
    assert world.cli(str(path), "-o", str(tmp_path / "out"), "--method", "dos") != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{where}: unauthorised: this https href needs a login" in err, err
    assert not (tmp_path / "out").exists()


def test_remote_errors_are_explained_only_when_they_are_refusals():
    access = stac_input.RemoteAccess.resolve(s3_access_key="k", s3_secret_key="s", environ={})

    def explain(access, message: str) -> str:
        return explain_remote_error(access.credentials, message)

    assert explain(access, '/vsis3/eodata/a/T_B02.jp2: not a readable raster (Invalid AWS response: {"code": 403})') \
        == "/vsis3/eodata/a/T_B02.jp2: access denied: check the S3 keys (HTTP 403)"
    assert explain(access, "cannot open bands: /vsicurl/http://h:8080/x/B02.jp2: HTTP response code: 401").startswith(
        "/vsicurl/http://h:8080/x/B02.jp2: unauthorised: this https href needs a login")
    assert explain(access, "cannot read band B02: InvalidAccessKeyId: The AWS Access Key Id you provided does not "
                   "exist") == "remote read: access denied: check the S3 keys (HTTP 403)"
    assert explain(access, "x.tif: has 403 bands, band 500 requested") == "x.tif: has 403 bands, band 500 requested"


@pytest.mark.parametrize("which", ["eometadatatool", "deltatwin"])
def test_real_cdse_l1c_items_are_understood(shared_fixtures, which):
    """Both real CDSE items: every band asset found (the 2025 item has no B10), s3:// hrefs preferred, XML assets."""
    if which == "eometadatatool":
        item, bands = real_l1c_template(shared_fixtures), S2_BANDS
    else:
        path = shared_fixtures / "cdse/emanuel-gf_DestinE_ESA_DeltaTwin/STAC_data_query/models/stac_items.json"
        item, bands = json.loads(path.read_text())["L1C"], tuple(b for b in S2_BANDS if b != "B10")
    assets = stac_input.band_assets(item)
    assert sorted(assets) == sorted(bands)
    for band, asset in assets.items():
        href = stac_input.asset_hrefs(asset)[0]
        assert href.startswith("s3://eodata/Sentinel-2/MSI/L1C/") and href.endswith(f"_{band}.jp2")
    for key, name in (("product", "MTD_MSIL1C.xml"), ("tile", "MTD_TL.xml")):
        asset = stac_input._metadata_asset(item, key)
        assert asset is not None and stac_input.asset_hrefs(asset)[0].endswith("/" + name)
    quant, offsets = stac_input._radiometry_from_item(item, assets)
    assert quant == 10000.0 and {offsets[b] for b in bands} == {-1000.0}


def test_item_reads_the_aux_data_beside_its_tile_metadata_as_the_safe_does(world, tmp_path, capsys):
    """AUX_ECMWFT (ozone) and AUX_CAMSFO (aerosol forecast) beside MTD_TL.xml in S3, listed by no asset: the
    item's product carries them like the SAFE's, and the two corrections are the same."""
    pytest.importorskip("eccodes")
    import shutil

    from tests.sentinel2.test_cams import AUX as CAMS_AUX
    from tests.sentinel2.test_cams import MARINE
    from tests.sentinel2.test_ecmwf import AUX as ECMWF_AUX
    from tests.sentinel2.test_ecmwf import AUX_ECMWFT

    safe = tmp_path / "aux" / world.safe.name
    shutil.copytree(world.safe, safe)
    for rel, data in ((ECMWF_AUX, AUX_ECMWFT), (CAMS_AUX, MARINE)):
        (safe / rel).parent.mkdir(parents=True, exist_ok=True)
        (safe / rel).write_bytes(data)
    prefix = f"Sentinel-2/MSI/L1C/2023/02/16/{uuid.uuid4().hex[:12]}"
    item, files = l1c_item_from_safe(world.template, safe, prefix)
    for key, path in files.items():
        world.client.upload_file(str(path), BUCKET, key)
    tl_key = item["assets"]["granule_metadata"]["href"].removeprefix(f"s3://{BUCKET}/")
    for name, data in (("AUX_ECMWFT", AUX_ECMWFT), ("AUX_CAMSFO", MARINE)):
        world.client.put_object(Bucket=BUCKET, Key=tl_key.removesuffix("MTD_TL.xml") + f"AUX_DATA/{name}", Body=data)
    item_path = tmp_path / "item.json"
    item_path.write_text(json.dumps(item))
    args = ("--method", "6s-ddv", "--wv", "1.5")
    assert run(["-q", "atmocorr", "run", str(safe), "-o", str(tmp_path / "safe"), *args]) == 0
    assert world.cli(str(item_path), "-o", str(tmp_path / "item"), *args) == 0, capsys.readouterr().err
    _same_l2a(tmp_path / "safe", tmp_path / "item")
    _, tags = _l2a(tmp_path / "item")
    assert tags["ATMOCORR_OZONE_SOURCE"] == "ECMWF AUX_ECMWFT"
    assert tags["ATMOCORR_AEROSOL_SOURCE"].startswith("CAMS AUX_CAMSFO")
    assert tags["ATMOCORR_ELEVATION_SOURCE"].startswith("CAMS AUX_CAMSFO")
