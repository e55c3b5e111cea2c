"""The bad-input table: malformed inputs for every command, each written by a small factory from a good one.

A :class:`Case` writes its bad file(s) into a fresh folder ``d`` (from the good inputs in :class:`World`,
built once per test module) and returns the ``eotwin`` arguments. Every output of a case goes under ``d``,
so ``test_badinput.py`` can prove that nothing is left behind: no output, no ``.part``, no staging folder.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import yaml
from affine import Affine

# an unreachable endpoint: errors that must come before any request never touch it, others fail fast on it
DEAD_URL = "http://127.0.0.1:9"


@dataclass
class World:
    """The good inputs every case starts from (written once per test module)."""

    root: Path
    sample: Path  # eotwin sample: dem.tif, l2a_10m.tif, tci.tif, scl.tif
    l1c: Path  # eotwin atmocorr sample-l1c: l1c_stack.tif, l2a_truth.tif
    safe: Path  # a SAFE folder with the real MTD_MSIL1C.xml / MTD_TL.xml and small JP2 bands
    laz: Path  # a point cloud built from the sample
    ben: Path  # the 24 real BigEarthNet v2 patches (LMDB + metadata.parquet), read-only
    component: Path  # a tiny DeltaTwin component the runner can run
    empty_stac_url: str = DEAD_URL  # a loopback STAC API holding no items (set by the test module)

    @property
    def dem(self) -> Path:
        return self.sample / "dem.tif"

    @property
    def tci(self) -> Path:
        return self.sample / "tci.tif"

    @property
    def stack(self) -> Path:
        return self.l1c / "l1c_stack.tif"


@dataclass(frozen=True)
class Case:
    """One malformed input: ``make(world, d)`` writes it under ``d`` and returns the CLI arguments."""

    id: str
    command: str  # "pointcloud build", "atmocorr run", ...
    make: Callable[[World, Path], list[str]]
    error: str  # regex the one ``error:`` line must match (names the cause)
    validate_json: bool = False  # deltatwin validate: the cause is an error finding in --json, exit 1
    env: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- factories
def truncate(src: Path, dst: Path, keep: float = 0.5) -> Path:
    """A copy cut to ``keep`` of its size, as an interrupted download leaves it."""
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: max(1, int(len(data) * keep))])
    return dst


def corrupt(src: Path, dst: Path, seed: int = 0) -> Path:
    """A copy whose bytes after the first 16 (the magic survives) are noise."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    data[16:] = rng.integers(0, 256, len(data) - 16, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def rewrite(src: Path, dst: Path, array: Callable[[np.ndarray], np.ndarray] | None = None, **profile) -> Path:
    """A copy of a raster with its pixels (``array``) and/or profile (crs, transform, dtype, ...) changed."""
    with rasterio.open(src) as ds:
        data = ds.read()
        prof = ds.profile
        descriptions = ds.descriptions
        tags = ds.tags()
    if array is not None:
        data = array(data)
    prof.update(count=data.shape[0], height=data.shape[1], width=data.shape[2], dtype=str(data.dtype))
    prof.update(profile)
    prof.pop("blockxsize", None), prof.pop("blockysize", None)
    prof["tiled"] = False
    with rasterio.open(dst, "w", **prof) as out:
        out.write(data)
        for i, d in enumerate(descriptions[: data.shape[0]], start=1):
            if d:
                out.set_band_description(i, d)
        out.update_tags(**tags)
    return dst


def raster(dst: Path, data: np.ndarray, transform: Affine, crs: str | None, **extra) -> Path:
    """A GeoTIFF from scratch."""
    with rasterio.open(dst, "w", driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2],
                       dtype=str(data.dtype), transform=transform, crs=crs, **extra) as out:
        out.write(data)
    return dst


def restack(w: World, dst: Path, *, names: list[str] | None = None, drop: tuple[str, ...] = (),
            dtype: str | None = None, tags: dict[str, str] | None = None) -> Path:
    """The L1C sample stack with bands dropped or renamed, another dtype, or tags changed."""
    with rasterio.open(w.stack) as ds:
        data, prof, desc, old = ds.read(), ds.profile, list(ds.descriptions), ds.tags()
    keep = [i for i, d in enumerate(desc) if d not in drop]
    data, desc = data[keep], [desc[i] for i in keep]
    if dtype:
        data = data.astype(dtype) / 10000.0 if dtype.startswith("float") else data.astype(dtype)
    prof.update(count=len(keep), dtype=str(data.dtype), tiled=False)
    prof.pop("blockxsize", None), prof.pop("blockysize", None)
    with rasterio.open(dst, "w", **prof) as out:
        out.write(data)
        for i, d in enumerate(names or desc, start=1):
            out.set_band_description(i, d)
        out.update_tags(**{**old, **(tags or {})})
    return dst


def copy_safe(w: World, d: Path, edit: Callable[[Path], None]) -> Path:
    safe = d / w.safe.name
    shutil.copytree(w.safe, safe)
    edit(safe)
    return safe


def _tile_xml(safe: Path) -> Path:
    return next(safe.glob("GRANULE/*/MTD_TL.xml"))


def _a_jp2(safe: Path) -> Path:
    return sorted(safe.glob("GRANULE/*/IMG_DATA/*_B04.jp2"))[0]


BILLION_LAUGHS = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
                  + b"".join(b' <!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
                             for i in range(1, 10))
                  + b']>\n<n1:Level-1C_User_Product xmlns:n1="x"><SPACECRAFT_NAME>&lol9;</SPACECRAFT_NAME>'
                  + b"</n1:Level-1C_User_Product>\n")


def _external_entity(safe: Path) -> bytes:
    """The product's own XML with a DTD that pulls /etc/passwd into SPACECRAFT_NAME."""
    xml = (safe / "MTD_MSIL1C.xml").read_bytes()
    head, _, rest = xml.partition(b"?>")
    doctype = b'\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    body = rest.replace(b"<SPACECRAFT_NAME>Sentinel-2A</SPACECRAFT_NAME>", b"<SPACECRAFT_NAME>&xxe;</SPACECRAFT_NAME>")
    return head + b"?>" + doctype + body


def evil_zip(w: World, d: Path) -> Path:
    """The SAFE zipped with every member name starting with ``../../`` (a zip-slip archive)."""
    target = d / (w.safe.stem + ".zip")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(w.safe.rglob("*")):
            if p.is_file():
                zf.write(p, "../../" + p.relative_to(w.safe.parent).as_posix())
        zf.writestr("../../escaped.txt", "written outside the output folder")
    return target


def parquet(w: World, dst: Path, edit: Callable) -> Path:
    import pandas as pd

    frame = pd.read_parquet(w.ben / "metadata.parquet")
    edit(frame).to_parquet(dst)
    return dst


def ben_copy(w: World, d: Path, edit_meta: Callable | None = None, lmdb_bytes: bytes | None = None) -> Path:
    """A BigEarthNet folder: the real LMDB (copied or replaced by ``lmdb_bytes``) and a metadata.parquet."""
    root = d / "BENv2"
    (root / "BigEarthNet-V2-LMDB").mkdir(parents=True)
    if lmdb_bytes is None:
        shutil.copyfile(w.ben / "BigEarthNet-V2-LMDB" / "data.mdb", root / "BigEarthNet-V2-LMDB" / "data.mdb")
    else:
        (root / "BigEarthNet-V2-LMDB" / "data.mdb").write_bytes(lmdb_bytes)
    parquet(w, root / "metadata.parquet", edit_meta or (lambda f: f))
    return root


def first_patch(w: World) -> str:
    import pandas as pd

    return str(pd.read_parquet(w.ben / "metadata.parquet").patch_id.iloc[0])


def ben_wrong_shape(w: World, d: Path) -> Path:
    """A BigEarthNet LMDB whose first patch holds B02 as 7 x 7 instead of 120 x 120."""
    import lmdb
    from safetensors.numpy import load, save

    root = ben_copy(w, d)
    env = lmdb.open(str(root / "BigEarthNet-V2-LMDB"), map_size=64 * 2**20)
    key = first_patch(w).encode()
    with env.begin(write=True) as txn:
        arrays = load(txn.get(key))
        arrays["B02"] = np.zeros((7, 7), dtype=arrays["B02"].dtype)
        txn.put(key, save(arrays))
    env.close()
    (root / "BigEarthNet-V2-LMDB" / "lock.mdb").unlink(missing_ok=True)
    return root


def component(w: World, d: Path, mutate: Callable[[dict, dict], None] | None = None,
              manifest_text: str | None = None, workflow_text: str | None = None) -> Path:
    """A copy of the tiny component with its manifest/workflow edited (as dicts) or replaced (as text)."""
    comp = d / "component"
    shutil.copytree(w.component, comp)
    manifest = json.loads((comp / "manifest.json").read_text())
    workflow = yaml.safe_load((comp / "workflow.yml").read_text())
    if mutate:
        mutate(manifest, workflow)
    (comp / "manifest.json").write_text(manifest_text if manifest_text is not None else json.dumps(manifest))
    (comp / "workflow.yml").write_text(workflow_text if workflow_text is not None else yaml.safe_dump(workflow))
    return comp


def inputs(d: Path, doc: dict | str) -> Path:
    path = d / "inputs_file.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


GOOD_INPUTS = {"text": {"type": "string", "value": "hello"}, "count": {"type": "integer", "value": 3},
               "token": {"type": "secret", "value": "s3cr3t"}}


def _cycle(manifest: dict, workflow: dict) -> None:
    manifest["models"]["again"] = json.loads(json.dumps(manifest["models"]["echo"]))
    manifest["models"]["again"]["inputs"]["text"] = {"type": "Data"}
    manifest["models"]["echo"]["inputs"]["text"] = {"type": "Data"}
    workflow["nodes"].append({"id": "again", "ref": "models.again"})
    workflow["edges"] = [e for e in workflow["edges"] if e["from"]["id"] != "text"]
    workflow["edges"] += [{"from": {"id": "echo", "port": "result"}, "to": {"id": "again", "port": "text"}},
                          {"from": {"id": "again", "port": "result"}, "to": {"id": "echo", "port": "text"}}]


def _outside(manifest: dict, workflow: dict) -> None:
    manifest["models"]["echo"]["path"] = "../../etc"


def ckpt(d: Path, doc: object, name: str = "model.ckpt") -> Path:
    import torch

    path = d / name
    torch.save(doc, path)
    return path


def _other_model_ckpt(d: Path) -> Path:
    """A Lightning-style checkpoint of some other model (another state dict, no eotwin config)."""
    import torch

    return ckpt(d, {"state_dict": {"net.weight": torch.zeros(2, 2)}, "hyper_parameters": {"x": 1},
                    "pytorch-lightning_version": "2.2.0", "epoch": 0, "global_step": 0})


def malicious_pickle(d: Path) -> Path:
    """A pickle whose load would create a file (``os.system``): weights-only loading must refuse it."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {d / 'pwned'}",))

    path = d / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": Evil()}))
    return path


def _ply_lying_header(d: Path) -> Path:
    path = d / "cloud.ply"
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1000000000000\nproperty float x\n"
                     b"property float y\nproperty float z\nend_header\n" + struct.pack("<3f", 1, 2, 3))
    return path


def _big_dem(w: World, d: Path) -> Path:
    """A one-row DEM of 100000 x 1 pixels crossing the image."""
    return raster(d / "dem.tif", np.ones((1, 1, 100000), dtype=np.float32), Affine(1e-5, 0, 7.0, 0, -1e-5, 45.7),
                  "EPSG:4326")


def _shifted(w: World, d: Path, dx: float) -> Path:
    with rasterio.open(w.dem) as ds:
        t = ds.transform
    return rewrite(w.dem, d / "dem.tif", transform=Affine(t.a, t.b, t.c + dx, t.d, t.e, t.f))


def _touching_dem(w: World, d: Path) -> Path:
    """A DEM whose west edge is the image's east edge: the two touch along a line, no area in common."""
    from pyproj import Transformer

    with rasterio.open(w.tci) as img, rasterio.open(w.dem) as dem:
        left, bottom, right, top = img.bounds
        to_ll = Transformer.from_crs(img.crs, "EPSG:4326", always_xy=True)
        east = max(to_ll.transform(right, y)[0] for y in (bottom, top))
        t = dem.transform
    return rewrite(w.dem, d / "dem.tif", transform=Affine(t.a, 0, east, 0, t.e, t.f))


def _moved(src: Path, dst: Path, dx: float = 500_000.0) -> Path:
    """The raster 500 km further east: same size, no pixel in common with the original."""
    with rasterio.open(src) as ds:
        t = ds.transform
    return rewrite(src, dst, transform=Affine(t.a, t.b, t.c + dx, t.d, t.e, t.f))


def _rotated(w: World, d: Path) -> Path:
    with rasterio.open(w.tci) as ds:
        t = ds.transform
    return rewrite(w.tci, d / "tci.tif", transform=Affine(t.a, 2.0, t.c, 1.5, t.e, t.f))


def pc(dem: Path | str, image: Path | str, out: Path, *extra: str) -> list[str]:
    return ["pointcloud", "build", "--dem", str(dem), "--image", str(image), "-o", str(out), "--no-viewer",
            "--no-preview", *extra]


def live(d: Path, bbox: str, date: str = "2024-06-01/2024-06-30", *extra: str, url: str = DEAD_URL) -> list[str]:
    return ["pointcloud", "build", "--bbox", bbox, "--date", date, "-o", str(d / "out" / "cloud.laz"), "--stac-url",
            url, "--s3-endpoint", "127.0.0.1:9", "--dem-url", url + "/dem.zarr", "--no-viewer", "--no-preview", *extra]


def acrun(src: Path | str, d: Path, *extra: str) -> list[str]:
    return ["atmocorr", "run", str(src), "-o", str(d / "out"), "--method", "dos", *extra]


def _ben_train_config(w: World, d: Path, **data) -> Path:
    cfg = {"data": {"source": str(w.ben), **data}, "output": str(d / "out")}
    path = d / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ----------------------------------------------------------------------------- the table
def _cases() -> list[Case]:
    c: list[Case] = []

    def add(id: str, command: str, error: str, **kw):
        def deco(fn: Callable[[World, Path], list[str]]):
            c.append(Case(id, command, fn, error, **kw))
            return fn
        return deco

    # ---- sample
    add("sample-output-is-a-file", "sample", r"not a (directory|folder)|exists|File exists")(
        lambda w, d: (d.joinpath("taken").write_text("x"), ["sample", "-o", str(d / "taken"), "--size", "64"])[1])
    add("sample-size-too-small", "sample", r"--size.*(range|64)")(lambda w, d: ["sample", "-o", str(d / "out"), "--size", "8"])
    add("sample-size-text", "sample", r"--size.*valid integer")(
        lambda w, d: ["sample", "-o", str(d / "out"), "--size", "abc"])

    # ---- pointcloud build, local files
    out = lambda d: d / "out" / "cloud.laz"  # noqa: E731
    add("pc-dem-truncated", "pointcloud build", r"dem\.tif")(lambda w, d: pc(truncate(w.dem, d / "dem.tif", 0.3), w.tci, out(d)))
    add("pc-dem-corrupt", "pointcloud build", r"dem\.tif")(lambda w, d: pc(corrupt(w.dem, d / "dem.tif"), w.tci, out(d)))
    add("pc-dem-not-a-raster", "pointcloud build", r"dem\.tif")(
        lambda w, d: pc((d.joinpath("dem.tif").write_text("elevation,1\n"), d / "dem.tif")[1], w.tci, out(d)))
    add("pc-dem-missing", "pointcloud build", r"missing\.tif")(lambda w, d: pc(d / "missing.tif", w.tci, out(d)))
    add("pc-image-truncated", "pointcloud build", r"tci\.tif")(lambda w, d: pc(w.dem, truncate(w.tci, d / "tci.tif", 0.4), out(d)))
    add("pc-image-jp2-truncated", "pointcloud build", r"B04\.jp2")(
        lambda w, d: pc(w.dem, truncate(_a_jp2(w.safe), d / "B04.jp2", 0.5), out(d)))
    add("pc-dem-all-nan", "pointcloud build", r"(?i)no valid|nan|no point|empty")(
        lambda w, d: pc(rewrite(w.dem, d / "dem.tif", lambda a: np.full_like(a, np.nan)), w.tci, out(d)))
    add("pc-dem-plus-inf", "pointcloud build", r"(?i)inf|finite|no valid")(
        lambda w, d: pc(rewrite(w.dem, d / "dem.tif", lambda a: np.full_like(a, np.inf)), w.tci, out(d)))
    add("pc-dem-minus-inf", "pointcloud build", r"(?i)inf|finite|no valid")(
        lambda w, d: pc(rewrite(w.dem, d / "dem.tif", lambda a: np.full_like(a, -np.inf)), w.tci, out(d)))
    add("pc-dem-all-nodata", "pointcloud build", r"(?i)no valid|nodata|no point|empty")(
        lambda w, d: pc(rewrite(w.dem, d / "dem.tif", lambda a: np.full_like(a, -32767.0)), w.tci, out(d)))
    add("pc-dem-1x1", "pointcloud build", r"(?i)overlap|too small|1 ?x ?1|no valid|no point|at least")(
        lambda w, d: pc(rewrite(w.dem, d / "dem.tif", lambda a: a[:, :1, :1]), w.tci, out(d)))
    add("pc-dem-100000x1", "pointcloud build", r"(?i)overlap|too small|no valid|no point|1 ?x|at least")(
        lambda w, d: pc(_big_dem(w, d), w.tci, out(d)))
    add("pc-dem-no-crs", "pointcloud build", r"(?i)dem\.tif.*(crs|coordinate)|(crs|coordinate).*dem\.tif")(
        lambda w, d: pc(rewrite(w.dem, d / "dem.tif", crs=None), w.tci, out(d)))
    add("pc-image-rotated", "pointcloud build", r"(?i)rotat|shear|north-up")(lambda w, d: pc(w.dem, _rotated(w, d), out(d)))
    add("pc-no-overlap", "pointcloud build", r"(?i)overlap|outside|do not cover|intersect")(
        lambda w, d: pc(_shifted(w, d, 10.0), w.tci, out(d)))
    add("pc-touch-along-an-edge", "pointcloud build", r"(?i)overlap|outside|do not cover|intersect|no valid|no point")(
        lambda w, d: pc(_touching_dem(w, d), w.tci, out(d)))
    for value, label in (("nan", "nan"), ("-0.5", "negative"), ("0", "zero"), ("1.5", "above-one"), ("abc", "text")):
        add(f"pc-fraction-{label}", "pointcloud build", r"(?i)fraction")(
            lambda w, d, v=value: pc(w.dem, w.tci, out(d), "--sampled-fraction", v))
    add("pc-stretch-range-inverted", "pointcloud build", r"--stretch-range")(
        lambda w, d: pc(w.dem, w.tci, out(d), "--stretch-range", "0.3,0"))
    add("pc-stretch-range-text", "pointcloud build", r"--stretch-range")(
        lambda w, d: pc(w.dem, w.tci, out(d), "--stretch-range", "low,high"))
    add("pc-stretch-range-nan", "pointcloud build", r"--stretch-range")(
        lambda w, d: pc(w.dem, w.tci, out(d), "--stretch-range", "nan,0.3"))
    add("pc-mask-exclude-text", "pointcloud build", r"--mask-exclude")(
        lambda w, d: pc(w.dem, w.tci, out(d), "--mask", str(w.sample / "scl.tif"), "--mask-exclude", "3,cloud"))
    add("pc-output-unknown-suffix", "pointcloud build", r"(?i)\.xyz|format|suffix")(
        lambda w, d: pc(w.dem, w.tci, d / "out" / "cloud.xyz"))
    add("pc-output-is-the-input", "pointcloud build", r"(?i)input|same|overwrite|replace")(
        lambda w, d: pc(w.dem, shutil.copyfile(w.tci, d / "tci.ply"), d / "tci.ply"))

    # ---- pointcloud build, live (errors before any request: an unreachable port; or an empty loopback STAC API)
    add("live-bbox-inverted", "pointcloud build live", r"--bbox")(lambda w, d: live(d, "8,46,7,45"))
    add("live-bbox-beyond-90", "pointcloud build live", r"--bbox")(lambda w, d: live(d, "7,45,8,95"))
    add("live-bbox-antimeridian", "pointcloud build live", r"--bbox.*(antimeridian|west < east)")(
        lambda w, d: live(d, "179.5,-17,-179.5,-16"))
    add("live-bbox-zero-area", "pointcloud build live", r"--bbox")(lambda w, d: live(d, "7,45,7,46"))
    add("live-bbox-text", "pointcloud build live", r"--bbox")(lambda w, d: live(d, "seven,45,8,46"))
    add("live-bbox-three-numbers", "pointcloud build live", r"--bbox")(lambda w, d: live(d, "7,45,8"))
    add("live-bbox-nan", "pointcloud build live", r"--bbox")(lambda w, d: live(d, "nan,45,8,46"))
    add("live-bbox-continent", "pointcloud build live", r"(?i)too large|tile-size|size")(
        lambda w, d: live(d, "-10,35,30,60"))
    add("live-tile-size-one-metre", "pointcloud build live", r"(?i)tile|too many")(
        lambda w, d: live(d, "7,45,7.5,45.5", "2024-06-01", "--tile-size", "1"))
    add("live-date-invalid", "pointcloud build live", r"--date")(lambda w, d: live(d, "7,45,7.1,45.1", "2024-13-45"))
    add("live-date-future", "pointcloud build live", r"--date.*future")(lambda w, d: live(d, "7,45,7.1,45.1", "2099-01-01"))
    add("live-date-reversed", "pointcloud build live", r"--date")(
        lambda w, d: live(d, "7,45,7.1,45.1", "2024-06-30/2024-06-01"))
    add("live-date-three-parts", "pointcloud build live", r"--date")(
        lambda w, d: live(d, "7,45,7.1,45.1", "2024-06-01/2024-06-02/2024-06-03"))
    add("live-date-missing", "pointcloud build live", r"--date")(
        lambda w, d: ["pointcloud", "build", "--bbox", "7,45,7.1,45.1", "-o", str(d / "out" / "c.laz")])
    add("live-stac-unreachable", "pointcloud build live", r"(?i)stac.*(failed|unreachable|connect)",
        env={"EOTWIN_HTTP_MAX_RETRIES": "1", "EOTWIN_HTTP_BACKOFF_S": "0.05"})(  # the retries are tested elsewhere
        lambda w, d: live(d, "7,45,7.01,45.01", "2024-06-01", "--no-cache"))
    add("live-stac-no-items", "pointcloud build live", r"(?i)no .*items?|nothing found|no sentinel")(
        lambda w, d: live(d, "7,45,7.01,45.01", "2024-06-01", "--no-cache", url=w.empty_stac_url))
    add("live-crs-unknown", "pointcloud build live", r"(?i)crs|EPSG:99999")(
        lambda w, d: live(d, "7,45,7.01,45.01", "2024-06-01", "--crs", "EPSG:99999"))

    # ---- pointcloud info / mesh
    add("info-truncated-laz", "pointcloud info", r"cloud\.laz")(lambda w, d: ["pointcloud", "info", str(truncate(w.laz, d / "cloud.laz", 0.5))])
    add("info-garbage-las", "pointcloud info", r"cloud\.las")(
        lambda w, d: ["pointcloud", "info", str((d.joinpath("cloud.las").write_bytes(b"LASF" + bytes(300)), d / "cloud.las")[1])])
    add("info-ply-lying-header", "pointcloud info", r"cloud\.ply")(lambda w, d: ["pointcloud", "info", str(_ply_lying_header(d))])
    add("info-empty-file", "pointcloud info", r"empty\.laz")(
        lambda w, d: ["pointcloud", "info", str((d.joinpath("empty.laz").write_bytes(b""), d / "empty.laz")[1])])
    add("info-unknown-suffix", "pointcloud info", r"(?i)\.txt|format|suffix")(
        lambda w, d: ["pointcloud", "info", str((d.joinpath("cloud.txt").write_text("1 2 3"), d / "cloud.txt")[1])])
    add("mesh-dem-all-nan", "pointcloud mesh", r"(?i)no valid|nan|empty|no triangle")(
        lambda w, d: ["pointcloud", "mesh", "--dem", str(rewrite(w.dem, d / "dem.tif", lambda a: np.full_like(a, np.nan))),
                      "--image", str(w.tci), "-o", str(d / "out" / "mesh.ply"), "--no-glb"])
    add("mesh-image-no-crs", "pointcloud mesh", r"(?i)tci\.tif.*crs|crs.*tci\.tif")(
        lambda w, d: ["pointcloud", "mesh", "--dem", str(w.dem), "--image", str(rewrite(w.tci, d / "tci.tif", crs=None)),
                      "-o", str(d / "out" / "mesh.ply")])
    add("mesh-resolution-negative", "pointcloud mesh", r"(?i)resolution")(
        lambda w, d: ["pointcloud", "mesh", "--dem", str(w.dem), "--image", str(w.tci), "-o", str(d / "out" / "mesh.ply"),
                      "--resolution", "-10"])
    add("mesh-output-suffix", "pointcloud mesh", r"(?i)\.txt|ply|suffix")(
        lambda w, d: ["pointcloud", "mesh", "--dem", str(w.dem), "--image", str(w.tci), "-o", str(d / "out" / "mesh.txt")])

    # ---- cache
    add("cache-dir-is-a-file", "cache", r"(?i)cache.*file", env={"EOTWIN_CACHE_DIR": "{d}/cachefile"})(
        lambda w, d: (d.joinpath("cachefile").write_text("x"), ["cache", "info"])[1])
    add("cache-clear-dir-is-a-file", "cache", r"(?i)cache.*file", env={"EOTWIN_CACHE_DIR": "{d}/cachefile"})(
        lambda w, d: (d.joinpath("cachefile").write_text("x"), ["cache", "clear"])[1])

    # ---- atmocorr run: stacks
    add("ac-stack-missing-bands", "atmocorr run", r"(?i)B8A|B12|missing|lacks")(
        lambda w, d: acrun(restack(w, d / "s.tif", drop=("B8A", "B12")), d))
    add("ac-stack-duplicate-bands", "atmocorr run", r"(?i)duplicate|twice|B04")(
        lambda w, d: acrun(restack(w, d / "s.tif", names=["B01", "B02", "B03", "B04", "B04", "B06", "B07", "B08", "B8A",
                                                          "B09", "B10", "B11", "B12"]), d))
    add("ac-stack-float-data", "atmocorr run", r"(?i)float|uint16|integer|dtype")(lambda w, d: acrun(restack(w, d / "s.tif", dtype="float32"), d))
    add("ac-stack-sun-zenith-90", "atmocorr run", r"SUN_ZENITH")(
        lambda w, d: acrun(restack(w, d / "s.tif", tags={"SUN_ZENITH": "90"}), d))
    add("ac-stack-sun-zenith-text", "atmocorr run", r"SUN_ZENITH")(
        lambda w, d: acrun(restack(w, d / "s.tif", tags={"SUN_ZENITH": "high noon"}), d))
    add("ac-stack-sun-zenith-nan", "atmocorr run", r"SUN_ZENITH")(
        lambda w, d: acrun(restack(w, d / "s.tif", tags={"SUN_ZENITH": "nan"}), d))
    add("ac-stack-unknown-spacecraft", "atmocorr run", r"(?i)spacecraft|sensor|Landsat")(
        lambda w, d: acrun(restack(w, d / "s.tif", tags={"SPACECRAFT": "Landsat-9"}), d))
    add("ac-stack-truncated", "atmocorr run", r"s\.tif")(lambda w, d: acrun(truncate(w.stack, d / "s.tif", 0.5), d))
    add("ac-stack-no-crs", "atmocorr run", r"(?i)crs")(lambda w, d: acrun(rewrite(w.stack, d / "s.tif", crs=None), d))
    add("ac-input-missing", "atmocorr run", r"nothing\.SAFE")(lambda w, d: acrun(d / "nothing.SAFE", d))
    add("ac-resolution-30", "atmocorr run", r"(?i)resolution")(lambda w, d: acrun(w.stack, d, "--resolution", "30"))
    add("ac-method-unknown", "atmocorr run", r"(?i)method")(
        lambda w, d: ["atmocorr", "run", str(w.stack), "-o", str(d / "out"), "--method", "magic"])
    add("ac-aot-negative", "atmocorr run", r"(?i)aot")(
        lambda w, d: ["atmocorr", "run", str(w.stack), "-o", str(d / "out"), "--method", "6s-ddv", "--aot", "-1"])
    add("ac-item-id-not-found", "atmocorr run", r"S2A_NO_SUCH_ITEM")(
        lambda w, d: ["atmocorr", "run", "-o", str(d / "out"), "--item-id", "S2A_NO_SUCH_ITEM", "--stac-url",
                      w.empty_stac_url, "--s3-endpoint", "127.0.0.1:9"])
    # ---- atmocorr run: SAFE
    add("ac-safe-no-tile-metadata", "atmocorr run", r"MTD_TL")(
        lambda w, d: acrun(copy_safe(w, d, lambda s: _tile_xml(s).unlink()), d))
    add("ac-safe-truncated-jp2", "atmocorr run", r"B04\.jp2")(
        lambda w, d: acrun(copy_safe(w, d, lambda s: truncate(_a_jp2(s), _a_jp2(s), 0.4)), d))
    add("ac-safe-billion-laughs", "atmocorr run", r"MTD_MSIL1C\.xml.*(DTD|entit)")(
        lambda w, d: acrun(copy_safe(w, d, lambda s: (s / "MTD_MSIL1C.xml").write_bytes(BILLION_LAUGHS)), d))
    add("ac-safe-external-entity", "atmocorr run", r"MTD_MSIL1C\.xml.*(DTD|entit)")(
        lambda w, d: acrun(copy_safe(w, d, lambda s: (s / "MTD_MSIL1C.xml").write_bytes(_external_entity(s))), d))
    add("ac-safe-tile-xml-garbage", "atmocorr run", r"MTD_TL\.xml")(
        lambda w, d: acrun(copy_safe(w, d, lambda s: _tile_xml(s).write_bytes(b"<Tile><oops")), d))
    add("ac-safe-ecmwft-garbage", "atmocorr run", r"(?i)AUX_ECMWFT|GRIB|ecmwf")(
        lambda w, d: acrun(copy_safe(w, d, lambda s: (_tile_xml(s).parent / "AUX_DATA").mkdir() or
                                     (_tile_xml(s).parent / "AUX_DATA" / "AUX_ECMWFT").write_bytes(b"GRIB" + os.urandom(200))), d))
    add("ac-zip-slip", "atmocorr run", r"(?i)\.\./|unsafe|outside|member")(lambda w, d: acrun(evil_zip(w, d), d))
    add("ac-zip-truncated", "atmocorr run", r"(?i)zip")(
        lambda w, d: acrun(truncate(shutil.make_archive(str(d / "p"), "zip", w.safe.parent, w.safe.name) and Path(str(d / "p.zip")),
                                    d / "p.SAFE.zip", 0.5), d))

    # ---- atmocorr evaluate
    add("eval-prediction-truncated", "atmocorr evaluate", r"pred\.tif")(
        lambda w, d: ["atmocorr", "evaluate", str(truncate(w.l1c / "l2a_truth.tif", d / "pred.tif", 0.5)),
                      str(w.l1c / "l2a_truth.tif"), "-o", str(d / "out")])
    add("eval-reference-elsewhere", "atmocorr evaluate", r"(?i)overlap|grid|extent|cover")(
        lambda w, d: ["atmocorr", "evaluate", str(w.l1c / "l2a_truth.tif"),
                      str(_moved(w.l1c / "l2a_truth.tif", d / "ref.tif")), "-o", str(d / "out")])
    add("eval-data-range-zero", "atmocorr evaluate", r"(?i)data-range|range")(
        lambda w, d: ["atmocorr", "evaluate", str(w.l1c / "l2a_truth.tif"), str(w.l1c / "l2a_truth.tif"), "-o",
                      str(d / "out"), "--data-range", "0"])

    # ---- atmocorr train / sample-l1c / pairs
    tr = lambda d, *x: ["atmocorr", "train", "-o", str(d / "out" / "m.onnx"), "--steps", "1", "--workers", "0", *x]  # noqa: E731
    add("train-init-truncated", "atmocorr train", r"(?i)bad\.pt")(
        lambda w, d: tr(d, "--init", str((d.joinpath("bad.pt").write_bytes(b"PK\x03\x04" + bytes(40)), d / "bad.pt")[1])))
    add("train-init-malicious-pickle", "atmocorr train", r"(?i)evil\.pt.*(weights|unsafe|refus|pickle)")(
        lambda w, d: tr(d, "--init", str(malicious_pickle(d))))
    add("train-mosaic-text", "atmocorr train", r"--mosaic")(lambda w, d: tr(d, "--mosaic", "big"))
    add("train-sources-unknown", "atmocorr train", r"(?i)source")(lambda w, d: tr(d, "--sources", "mars"))
    add("train-windows-even", "atmocorr train", r"(?i)window")(lambda w, d: tr(d, "--windows", "4"))
    add("train-ben-dir-missing", "atmocorr train", r"(?i)nowhere")(lambda w, d: tr(d, "--ben-dir", str(d / "nowhere")))
    sl = lambda d, *x: ["atmocorr", "sample-l1c", "-o", str(d / "out"), "--size", "32", *x]  # noqa: E731
    add("sl1c-spacecraft-unknown", "atmocorr sample-l1c", r"(?i)spacecraft|Sentinel-3")(lambda w, d: sl(d, "--spacecraft", "Sentinel-3X"))
    add("sl1c-sun-zenith-95", "atmocorr sample-l1c", r"(?i)zenith|sza")(lambda w, d: sl(d, "--sun-zenith", "95"))
    add("sl1c-aerosol-unknown", "atmocorr sample-l1c", r"(?i)aerosol")(lambda w, d: sl(d, "--aerosol", "volcanic"))
    add("sl1c-aot-negative", "atmocorr sample-l1c", r"(?i)aot")(lambda w, d: sl(d, "--aot", "-0.1"))
    add("sl1c-wv-nan", "atmocorr sample-l1c", r"(?i)wv|water")(lambda w, d: sl(d, "--wv", "nan"))
    pr = lambda d, bbox, date: ["atmocorr", "pairs", "--bbox", bbox, "--date", date, "-o", str(d / "out"),  # noqa: E731
                                "--stac-url", DEAD_URL, "--s3-endpoint", "127.0.0.1:9"]
    add("pairs-bbox-inverted", "atmocorr pairs", r"--bbox")(lambda w, d: pr(d, "8,46,7,45", "2024-06-01"))
    add("pairs-date-invalid", "atmocorr pairs", r"--date")(lambda w, d: pr(d, "7,45,7.1,45.1", "yesterday"))
    add("pairs-date-future", "atmocorr pairs", r"--date.*future")(lambda w, d: pr(d, "7,45,7.1,45.1", "2099-01-01"))

    # ---- ben
    pid = first_patch
    add("ben-info-corrupt-lmdb", "ben info", r"(?i)lmdb|data\.mdb|BigEarthNet-V2-LMDB")(
        lambda w, d: ["ben", "info", str(ben_copy(w, d, lmdb_bytes=os.urandom(8192))), "-p", pid(w)])
    add("ben-info-truncated-lmdb", "ben info", r"(?i)lmdb|data\.mdb|BigEarthNet-V2-LMDB")(
        lambda w, d: ["ben", "info", str(ben_copy(w, d, lmdb_bytes=(w.ben / "BigEarthNet-V2-LMDB" / "data.mdb").read_bytes()[:20000])),
                      "-p", pid(w)])
    add("ben-info-wrong-shape", "ben info", r"(?i)B02.*(shape|7)|shape")(lambda w, d: ["ben", "info", str(ben_wrong_shape(w, d)), "-p", pid(w)])
    add("ben-info-unknown-patch", "ben info", r"NO_SUCH_PATCH")(lambda w, d: ["ben", "info", str(w.ben), "-p", "NO_SUCH_PATCH"])
    add("ben-info-metadata-zero-rows", "ben info", r"(?i)no (rows|patches)|empty|zero")(
        lambda w, d: ["ben", "info", str(ben_copy(w, d, lambda f: f.iloc[:0])), "-p", pid(w)])
    add("ben-encode-corrupt-lmdb", "ben encode", r"(?i)lmdb|data\.mdb|BigEarthNet-V2-LMDB")(
        lambda w, d: ["ben", "encode", str(ben_copy(w, d, lmdb_bytes=os.urandom(8192))), "-o", str(d / "out"), "-j", "1"])
    add("ben-encode-wrong-shape", "ben encode", r"(?i)shape|B02")(
        lambda w, d: ["ben", "encode", str(ben_wrong_shape(w, d)), "-o", str(d / "out"), "-j", "1"])
    add("ben-encode-unknown-labels", "ben encode", r"(?i)label.*(unknown|Moon)|Moon")(
        lambda w, d: ["ben", "encode", str(ben_copy(w, d, lambda f: f.assign(labels=[["Moon craters"]] * len(f)))),
                      "-o", str(d / "out"), "-j", "1"])
    add("ben-encode-missing-columns", "ben encode", r"(?i)column|labels|split")(
        lambda w, d: ["ben", "encode", str(ben_copy(w, d, lambda f: f.drop(columns=["labels", "split"]))),
                      "-o", str(d / "out"), "-j", "1"])
    add("ben-encode-bands-unknown", "ben encode", r"(?i)B99|band")(
        lambda w, d: ["ben", "encode", str(w.ben), "-o", str(d / "out"), "--bands", "B02,B99"])
    add("ben-encode-split-unknown", "ben encode", r"(?i)split|holdout")(
        lambda w, d: ["ben", "encode", str(w.ben), "-o", str(d / "out"), "--split", "holdout"])
    an = lambda src, d: ["ben", "analyze", str(src), "-o", str(d / "out")]  # noqa: E731
    add("ben-analyze-zero-rows", "ben analyze", r"(?i)no (rows|patches)|empty|zero")(
        lambda w, d: an(parquet(w, d / "metadata.parquet", lambda f: f.iloc[:0]), d))
    add("ben-analyze-missing-columns", "ben analyze", r"(?i)column|labels")(
        lambda w, d: an(parquet(w, d / "metadata.parquet", lambda f: f.drop(columns=["labels"])), d))
    add("ben-analyze-unknown-labels", "ben analyze", r"(?i)label.*(unknown|Moon)|Moon")(
        lambda w, d: an(parquet(w, d / "metadata.parquet", lambda f: f.assign(labels=[["Moon craters"]] * len(f))), d))
    add("ben-analyze-garbage-parquet", "ben analyze", r"metadata\.parquet")(
        lambda w, d: an((d.joinpath("metadata.parquet").write_bytes(b"PAR1" + os.urandom(64) + b"PAR1"), d / "metadata.parquet")[1], d))
    add("ben-train-config-malformed", "ben train", r"config\.yaml")(
        lambda w, d: ["ben", "train", "-c", str((d.joinpath("config.yaml").write_text("data: [unclosed\n  - x: {"), d / "config.yaml")[1])])
    add("ben-train-override-unknown", "ben train", r"(?i)no_such_key|unknown")(
        lambda w, d: ["ben", "train", "-c", str(_ben_train_config(w, d)), "model.no_such_key=3"])
    add("ben-train-source-corrupt-lmdb", "ben train", r"(?i)lmdb|data\.mdb|BigEarthNet-V2-LMDB")(
        lambda w, d: ["ben", "train", "-c", str(_ben_train_config(w, d)),
                      f"data.source={ben_copy(w, d, lmdb_bytes=os.urandom(8192))}"])
    add("ben-evaluate-truncated-ckpt", "ben evaluate", r"model\.ckpt")(
        lambda w, d: ["ben", "evaluate", str(truncate(_other_model_ckpt(d), d / "model.ckpt", 0.5)), "-o", str(d / "out" / "s.json")])
    add("ben-evaluate-other-model-ckpt", "ben evaluate", r"(?i)model\.ckpt.*(eotwin|checkpoint|config|not)")(
        lambda w, d: ["ben", "evaluate", str(_other_model_ckpt(d)), "-o", str(d / "out" / "s.json")])
    add("ben-evaluate-malicious-ckpt", "ben evaluate", r"(?i)evil\.pt")(
        lambda w, d: ["ben", "evaluate", str(malicious_pickle(d)), "-o", str(d / "out" / "s.json")])
    add("ben-predict-other-model-ckpt", "ben predict", r"(?i)model\.ckpt")(
        lambda w, d: ["ben", "predict", str(_other_model_ckpt(d)), str(w.sample / "l2a_10m.tif"), "-o", str(d / "out" / "p.tif")])

    # ---- deltatwin
    add("dt-build-unknown-name", "deltatwin build", r"(?i)no-such-component|unknown")(
        lambda w, d: ["deltatwin", "build", "no-such-component", "-o", str(d / "out")])
    add("dt-build-sizing-malformed", "deltatwin build", r"sizing\.json")(
        lambda w, d: ["deltatwin", "build", "-o", str(d / "out"), "--sizing",
                      str((d.joinpath("sizing.json").write_text("{not json"), d / "sizing.json")[1])])
    add("dt-build-wheel-garbage", "deltatwin build", r"(?i)wheel|\.whl")(
        lambda w, d: ["deltatwin", "build", "-o", str(d / "out"), "--wheel",
                      str((d.joinpath("eotwin-0.0-py3-none-any.whl").write_bytes(b"not a zip"), d / "eotwin-0.0-py3-none-any.whl")[1])])
    va = lambda comp: ["deltatwin", "validate", str(comp), "--json"]  # noqa: E731
    add("dt-validate-manifest-malformed", "deltatwin validate", r"(?i)manifest\.json.*(json|pars)|(json|pars).*manifest",
        validate_json=True)(lambda w, d: va(component(w, d, manifest_text="{\"name\": ")))
    add("dt-validate-workflow-malformed", "deltatwin validate", r"(?i)yaml|workflow|pars", validate_json=True)(
        lambda w, d: va(component(w, d, workflow_text="nodes: [ {id: a, \n edges: ]")))
    add("dt-validate-cycle", "deltatwin validate", r"(?i)cycle", validate_json=True)(lambda w, d: va(component(w, d, _cycle)))
    add("dt-validate-model-path-outside", "deltatwin validate", r"(?i)outside|\.\./|path", validate_json=True)(
        lambda w, d: va(component(w, d, _outside)))
    add("dt-validate-not-a-folder", "deltatwin validate", r"(?i)not a component folder")(
        lambda w, d: ["deltatwin", "validate", str(d / "nothing")])
    rn = lambda comp, d, inp=None: ["deltatwin", "run", str(comp), "-o", str(d / "out"), "--no-limits",  # noqa: E731
                                    *(["-i", str(inp)] if inp else [])]
    add("dt-run-inputs-malformed", "deltatwin run", r"inputs_file\.json")(
        lambda w, d: rn(w.component, d, inputs(d, "{\"text\": ")))
    add("dt-run-inputs-not-an-object", "deltatwin run", r"inputs_file\.json")(lambda w, d: rn(w.component, d, inputs(d, "[1, 2]")))
    add("dt-run-inputs-etc-passwd", "deltatwin run", r"(?i)etc/passwd|outside")(
        lambda w, d: rn(component(w, d, lambda m, wf: m["inputs"].__setitem__("text", {"type": "Data", "description": "f"})
                                  or m["models"]["echo"]["inputs"].__setitem__("text", {"type": "Data"})), d,
                        inputs(d, {**GOOD_INPUTS, "text": {"type": "Data", "url": "../../etc/passwd"}})))
    add("dt-run-secret-typed-string", "deltatwin run", r"(?i)token.*secret|secret")(
        lambda w, d: rn(w.component, d, inputs(d, {**GOOD_INPUTS, "token": {"type": "string", "value": "s3cr3t"}})))
    add("dt-run-integer-typed-text", "deltatwin run", r"(?i)count.*integer|integer")(
        lambda w, d: rn(w.component, d, inputs(d, {**GOOD_INPUTS, "count": {"type": "integer", "value": "three"}})))
    add("dt-run-cycle", "deltatwin run", r"(?i)cycle")(lambda w, d: rn(component(w, d, _cycle), d, inputs(d, GOOD_INPUTS)))
    add("dt-run-manifest-malformed", "deltatwin run", r"manifest\.json")(
        lambda w, d: rn(component(w, d, manifest_text="[]"), d, inputs(d, GOOD_INPUTS)))
    add("dt-run-model-path-outside", "deltatwin run", r"(?i)outside|\.\./|etc")(
        lambda w, d: rn(component(w, d, _outside), d, inputs(d, GOOD_INPUTS)))
    return c


CASES: list[Case] = _cases()
