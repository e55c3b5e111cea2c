"""Peak memory of every CLI pipeline on a full-tile-sized input, each under an enforced 2 GiB.

Each pipeline is the real CLI (``python -m eotwin``) in a child process run by
:func:`tests.support.memlimit.run_under_memory_limit`: ``RLIMIT_AS`` of 2 GiB (where the pipeline can start
under it; see ``AS_ONLY_VIRTUAL`` for the ones that cannot, for address space alone) plus a watchdog that
sums resident memory over the child's process tree and kills it above 2 GiB. Peak RSS is the watchdog's
(sampled every 50 ms) or the kernel's high-water mark of the largest process, whichever is larger.

Inputs (``--size``, default 10980: a Sentinel-2 tile at 10 m):
* ``sample``, ``atmocorr-sample-l1c``: the generators asked for a ``size`` x ``size`` scene;
* ``pointcloud-build`` / ``-info`` / ``-mesh``: the uint8 TCI (UTM 32N, 10 m) and 1" DEM of
  benchmarks/pointcloud.py (``make_inputs``), the LAZ built from them;
* ``pointcloud-build-live`` / ``component-pointcloud-live``: a bbox over a ``size`` x ``size`` px world (the
  sample scene as two CDSE-like L2A tiles, JPEG 2000 and COG assets, and a Zarr DEM) served by the loopback
  STAC API, S3 and Earth Data Hub servers in this process: the live CLI and the eotwin-pointcloud component,
  credentials from the environment / typed secrets, every point;
* ``atmocorr-run``: the 13-band L1C stack of :func:`eotwin.atmocorr.sample_l1c.make_tiled_l1c` (the
  sample surface through the 6S table, mirrored over the tile), corrected with 6s-ddv: the command the
  eotwin-atmocorr component's model runs;
* ``atmocorr-run-sample-l1c`` / ``atmocorr-evaluate``: 6s-ddv on the ``atmocorr-sample-l1c`` scene, then
  ``atmocorr evaluate`` of that L2A against the scene's ``l2a_truth.tif``, TOA beside it;
* ``atmocorr-pairs``: ``atmocorr pairs`` with a bbox over ``size`` x ``size`` px of tile T46UEU, the L1C and its
  L2A served by the loopback CDSE (STAC API + S3) of :class:`tests.support.pairs_world.PairWorld`: JPEG 2000
  bands at native resolutions (every L2A band at 10, 20 and 60 m as the real item lists them), smooth DN;
  ``atmocorr-train-pairs``: ``atmocorr train --pairs`` (5 steps) on the pair folder it wrote; ``atmocorr-train``:
  training on simulated scenes (5 steps, default batch and mosaic: its input does not grow with a tile);
* ``pointcloud-build-live-tiled``: the live bbox as 20 km tiles (Dask tasks, 2 workers), a LAZ each and a .vpc;
* ``demo``: ``eotwin demo``, which takes no input (its own sample scenes; measured as it is);
* ``ben-info`` / ``ben-encode`` / ``ben-analyze`` / ``ben-evaluate``: the 24 real BigEarthNet v2 patches (S1 +
  S2) of the configilm wheel, the whole data there is (one patch for ``info``; ``evaluate``: the ``ben-train``
  checkpoint on all 24);
* ``ben-encode-tile`` / ``ben-analyze-tile`` / ``ben-evaluate-tile`` / ``ben-train-tile`` (one epoch cut to 20
  training and 10 validation batches: the data pipeline is sized by the source, the steps by the limits): as many patches as ben predict windows in a
  full tile (8,464), the real patches of the wheel repeated under new ids (``_ben_full``; made once per workdir);
* ``ben-train``: one epoch of configs/ben/smoke.yaml (resnet18) on the 24 real BigEarthNet v2 patches (the
  data there is); ``ben-predict``: that checkpoint over the L2A stack ``atmocorr-run`` wrote (a full tile,
  8,464 windows of 120 px at stride 120): the command the eotwin-ben-predict component's model runs;
* ``deltatwin-build``: every component, wheel included; ``component-atmocorr`` and ``component-ben-predict``:
  ``eotwin deltatwin run`` of those components (limits enforced: each model under its manifest's ``ram``) on the
  inputs of ``atmocorr-run`` and ``ben-predict`` (run those first, in the same ``--workdir``);
  ``component-sample`` (a ``size`` x ``size`` scene) and ``component-pointcloud-files`` (the point-cloud inputs);
  the composites ``component-sample-pointcloud`` (a ``size`` x ``size`` scene, every point) and
  ``component-l1c-pointcloud`` (the ``atmocorr-sample-l1c`` L1C and the ``sample`` step's DEM: the same scene).

Prints one table (pipeline, input, wall time, peak RSS, peak address space, limit, OK/FAILED);
``--json FILE`` writes it; ``--only NAME`` (repeatable) runs some. Inputs are kept in ``--workdir``.

Usage: ``.venv/bin/python benchmarks/memory.py [--size 10980] [--workdir DIR] [--only NAME] [--json FILE]``
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: test code, not in the package
from tests.support.memlimit import DEFAULT_LIMIT, run_under_memory_limit

REPO = Path(__file__).resolve().parents[1]
BEN_DATA = REPO / ".eotwin-data" / "BENv2"
# pipelines that cannot start under RLIMIT_AS 2 GiB for address space alone (resident memory far below):
AS_ONLY_VIRTUAL = {
    "ben-train": "import torch (CUDA build) maps ~3 GiB of shared libraries",
    "ben-predict": "import torch (CUDA build) maps ~3 GiB of shared libraries",
    "pointcloud-mesh": "Open3D maps 765 MiB of library beside rasterio/numpy",
    # the runner inside enforces each model's manifest ram (RLIMIT_AS + its own watchdog); around it, the
    # watchdog holds the whole tree (runner + model) to the limit
    "component-atmocorr": "the runner sets the model's own RLIMIT_AS",
    "component-ben-predict": "the runner sets the model's own RLIMIT_AS; torch as ben-predict",
    "component-sample": "the runner sets the model's own RLIMIT_AS",
    "component-pointcloud-files": "the runner sets the model's own RLIMIT_AS",
    "component-sample-pointcloud": "the runner sets each model's own RLIMIT_AS",
    "component-l1c-pointcloud": "the runner sets each model's own RLIMIT_AS",
    "component-pointcloud-live": "the runner sets the model's own RLIMIT_AS",
    "ben-evaluate": "import torch (CUDA build) maps ~3 GiB of shared libraries",
    "atmocorr-train": "import torch (CUDA build) maps ~3 GiB of shared libraries",
    "atmocorr-train-pairs": "import torch (CUDA build) maps ~3 GiB of shared libraries",
    "demo": "import torch (CUDA build) maps ~3 GiB of shared libraries (its BigEarthNet training)",
    "ben-train-tile": "import torch (CUDA build) maps ~3 GiB of shared libraries",
    "ben-evaluate-tile": "import torch (CUDA build) maps ~3 GiB of shared libraries",
    # a container's limit counts resident pages, not reserved address space
    "ben-encode": "LMDB reserves its 1 GiB map (address space only) beside 1.6 GiB of mapped libraries",
    "ben-encode-tile": "LMDB maps its whole file (address space only) beside 1.6 GiB of mapped libraries",
    "ben-analyze-tile": "LMDB maps its whole file (address space only)",
}


@dataclass
class Row:
    name: str
    workload: str
    wall_s: float = 0.0
    peak_rss_bytes: int = 0
    peak_vms_bytes: int = 0
    limit: str = ""
    ok: bool = False
    detail: str = ""


@dataclass
class Step:
    name: str
    workload: str
    argv: Callable[[], list[str]]  # eotwin arguments, computed when the step runs (inputs made then)
    check: Callable[[], bool]  # the outputs are there
    env: Callable[[], dict[str, str]] | None = None  # more environment, asked for after ``argv``


def _pointcloud_inputs(work: Path, size: int) -> tuple[Path, Path]:
    spec = importlib.util.spec_from_file_location("_pointcloud_benchmark", REPO / "benchmarks" / "pointcloud.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_inputs(work, size)


def _tiled_l1c(work: Path, size: int) -> Path:
    from eotwin.atmocorr.sample_l1c import make_tiled_l1c

    target = work / "tiled_l1c" / "l1c_stack.tif"
    if not target.exists():
        make_tiled_l1c(target.parent, size=size)
    return target


LIVE_KEY, LIVE_SECRET, LIVE_TOKEN = "AKIAMEMORYBENCH", "memory-bench-secret-7f3a", "memory-bench-token-9c1d"
LIVE_DATES = "2024-07-01/2024-07-31"


def _live_world(work: Path, size: int, stack: contextlib.ExitStack) -> tuple[str, dict[str, str]]:
    """The loopback CDSE (STAC API + S3) and Earth Data Hub (Zarr over HTTP) of a ``size`` px world, serving
    from this process (a remote service: not counted in the pipeline's memory), and a bbox inside both tiles."""
    from pyproj import Transformer

    from tests.support.live_fixture import build_world, real_l2a_template
    from tests.support.loopback import S3Server, StacApiServer, StaticHttpServer

    world = build_world(work / f"live-world-{size}", real_l2a_template(REPO.parent / "shared" / "fixtures"), size=size)
    stac = stack.enter_context(StacApiServer(world.items))
    s3 = stack.enter_context(S3Server())
    edh = stack.enter_context(StaticHttpServer(world.zarr_root, "edh", LIVE_TOKEN))
    world.upload(s3.client(LIVE_KEY, LIVE_SECRET))
    left, bottom, right, top = world.scene.image_grid.bounds
    m = (right - left) * 0.01
    box = Transformer.from_crs(world.scene.image_grid.crs, 4326, always_xy=True).transform_bounds(
        left + m, bottom + m, right - m, top - m)
    env = {"EOTWIN_STAC_URL": stac.url, "EOTWIN_S3_ENDPOINT": s3.endpoint, "EOTWIN_S3_HTTPS": "0",
           "EOTWIN_DEM_URL": edh.url + "/GLO-30-v0.zarr", "EOTWIN_CACHE_DIR": str(work / "live-cache")}
    return ",".join(f"{v:.6f}" for v in box), env


PAIR_DATE = "2023-02-16"


def _pair_dn(band: str, size: int) -> np.ndarray:
    """Smooth L1C DN (offset 1000, baseline 05.09) with a little noise at the band's native resolution over
    ``size`` px of 10 m: JPEG 2000 compresses it like a real band (random DN would double the bytes)."""
    from eotwin.sentinel2.bands import NATIVE_RESOLUTION, S2_BANDS

    res, i = NATIVE_RESOLUTION[band], S2_BANDS.index(band)
    n = size * 10 // res
    metres = np.arange(n, dtype=np.float32) * res
    x, y = metres[None, :], metres[:, None]
    dn = 2500.0 + 180.0 * i + 900.0 * np.sin(x / 3000.0 + i) * np.cos(y / 4100.0) + 300.0 * np.sin((x + y) / 700.0)
    dn += np.random.default_rng(i).integers(0, 40, size=(n, n), dtype=np.int16)
    return dn.astype(np.uint16)


def _pair_scl(size: int) -> np.ndarray:
    """SCL at 20 m: vegetation and bare soil in bands, a few clouds (9) and their shadows (3)."""
    n = size // 2
    rows, cols = np.indices((n, n), dtype=np.int32)
    scl = np.where((rows // 37 + cols // 53) % 2 == 0, 4, 5).astype(np.uint8)
    scl[(rows % 1500 < 60) & (cols % 1700 < 80)] = 9
    scl[(rows % 1500 >= 60) & (rows % 1500 < 90) & (cols % 1700 < 80)] = 3
    return scl


def _pair_world(work: Path, size: int, stack: contextlib.ExitStack) -> tuple[list[str], dict[str, str]]:
    """The loopback CDSE (STAC API + S3) of one L1C/L2A pair covering ``size`` x ``size`` px of tile T46UEU
    (:class:`tests.support.pairs_world.PairWorld`; JPEG 2000 bands at native resolutions, made once per
    workdir), serving from this process; the ``atmocorr pairs`` arguments of a bbox over all of it."""
    from pyproj import Transformer

    from tests.support.loopback import S3Server, StacApiServer
    from tests.support.pairs_world import ACCESS_KEY, EPSG, SECRET_KEY, ULX, ULY, PairWorld

    items: list[dict] = []
    stac = stack.enter_context(StacApiServer(items))
    s3 = stack.enter_context(S3Server())
    world = PairWorld(work / f"pair-world-{size}", REPO.parent / "shared" / "fixtures", s3, stac,
                      lambda band: _pair_dn(band, size), lambda: _pair_scl(size), reuse=True)
    items.extend(world.publish())
    m = 100.0  # inside the tile by 100 m: the lon/lat box around it reaches a little beyond, cut to the tile
    rect = (ULX + m, ULY - size * 10 + m, ULX + size * 10 - m, ULY - m)
    box = Transformer.from_crs(EPSG, 4326, always_xy=True).transform_bounds(*rect)
    args = ["--bbox", ",".join(f"{v:.6f}" for v in box), "--date", PAIR_DATE, "--stac-url", stac.url,
            "--s3-endpoint", f"http://{s3.endpoint}"]
    return args, {"CDSE_S3_ACCESS_KEY": ACCESS_KEY, "CDSE_S3_SECRET_KEY": SECRET_KEY}


FULL_TILE_PATCHES = 8464  # 120 px patches in a 10980 px tile (92 x 92), as ben predict windows it


def _ben_full(work: Path, patches: int) -> Path:
    """A BigEarthNet source of ``patches`` patches: the real patches of the configilm wheel (those with their
    Sentinel-1 partner) repeated under new ids on a 92-column grid of one tile, splits and labels kept."""
    import lmdb
    import pandas as pd

    root = work / f"ben-full-{patches}"
    if (root / "metadata.parquet").is_file():
        return root
    meta = pd.read_parquet(BEN_DATA / "metadata.parquet")
    src = lmdb.open(str(BEN_DATA / "BigEarthNet-V2-LMDB"), readonly=True, lock=False)
    with src.begin() as txn:
        keys = {bytes(k).decode() for k in txn.cursor().iternext(values=False)}
    meta = meta[meta["patch_id"].isin(keys) & meta["s1_name"].isin(keys)].reset_index(drop=True)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "BigEarthNet-V2-LMDB").mkdir(parents=True)
    dst = lmdb.open(str(tmp / "BigEarthNet-V2-LMDB"), map_size=patches * 400_000 + 2**26)
    rows = []
    with src.begin() as read, dst.begin(write=True) as write:
        for i in range(patches):
            row = meta.iloc[i % len(meta)].to_dict()
            r, c = divmod(i, 92)
            renamed = lambda name: "_".join([*name.split("_")[:-2], str(r), str(c)])  # noqa: B023, E731
            s2_id, s1_id = renamed(row["patch_id"]), renamed(row["s1_name"])
            write.put(s2_id.encode(), read.get(row["patch_id"].encode()))
            write.put(s1_id.encode(), read.get(row["s1_name"].encode()))
            rows.append({**row, "patch_id": s2_id, "s1_name": s1_id,
                         "s2v1_name": renamed(row["s2v1_name"])})
    dst.close()
    pd.DataFrame(rows).to_parquet(tmp / "metadata.parquet")
    tmp.rename(root)
    return root


def _first_patch() -> str:
    import pyarrow.parquet as pq

    return str(pq.read_table(BEN_DATA / "metadata.parquet", columns=["patch_id"]).column(0)[0])


def steps(work: Path, size: int, stack: contextlib.ExitStack) -> list[Step]:
    tile = f"{size} x {size} px"
    out = work / "out"
    inputs: dict[str, Path] = {}
    live: dict[str, object] = {}

    def live_world() -> tuple[str, dict[str, str]]:
        if "bbox" not in live:
            live["bbox"], live["env"] = _live_world(work, size, stack)
        return live["bbox"], live["env"]

    pair: dict[str, object] = {}

    def pair_world() -> tuple[list[str], dict[str, str]]:
        if "args" not in pair:
            pair["args"], pair["env"] = _pair_world(work, size, stack)
        return pair["args"], pair["env"]

    def pairs() -> list[str]:
        shutil.rmtree(out / "pairs", ignore_errors=True)
        return ["atmocorr", "pairs", *pair_world()[0], "-o", str(out / "pairs"), "--max-pairs", "1"]

    def pairs_written() -> bool:
        return any((out / "pairs").glob("*/l2a.tif"))

    def live_build() -> list[str]:
        bbox, _ = live_world()
        return ["pointcloud", "build", "--bbox", bbox, "--date", LIVE_DATES, "-o", str(out / "live.laz"),
                "--no-viewer", "--no-preview"]

    def live_tiled() -> list[str]:
        bbox, _ = live_world()
        shutil.rmtree(out / "live-tiled", ignore_errors=True)
        (out / "live-tiled").mkdir(parents=True)
        return ["pointcloud", "build", "--bbox", bbox, "--date", LIVE_DATES, "-o", str(out / "live-tiled" / "area.laz"),
                "--tile-size", "20000", "--workers", "2", "--no-viewer", "--no-preview"]

    def live_component() -> list[str]:
        bbox, _ = live_world()
        return component("eotwin-pointcloud", {
            "bbox": {"type": "string", "value": bbox}, "date": {"type": "string", "value": LIVE_DATES},
            "sampled_fraction": {"type": "number", "value": 1.0}, "format": {"type": "string", "value": "laz"},
            "cdse_key": {"type": "secret", "secret_value": LIVE_KEY},
            "cdse_secret": {"type": "secret", "secret_value": LIVE_SECRET},
            "edh_token": {"type": "secret", "secret_value": LIVE_TOKEN}})()

    def live_credentials() -> dict[str, str]:  # the CLI reads them from the environment (never argv)
        return {**live_world()[1], "CDSE_S3_ACCESS_KEY": LIVE_KEY, "CDSE_S3_SECRET_KEY": LIVE_SECRET,
                "EDH_TOKEN": LIVE_TOKEN}

    def pc_inputs() -> tuple[Path, Path]:
        if "tci" not in inputs:
            inputs["tci"], inputs["dem"] = _pointcloud_inputs(work, size)
        return inputs["tci"], inputs["dem"]

    def build() -> list[str]:
        tci, dem = pc_inputs()
        return ["pointcloud", "build", "--dem", str(dem), "--image", str(tci), "-o", str(out / "cloud.laz"),
                "--no-viewer", "--no-preview"]

    def mesh() -> list[str]:
        tci, dem = pc_inputs()
        return ["pointcloud", "mesh", "--dem", str(dem), "--image", str(tci), "-o", str(out / "mesh.ply"),
                "--resolution", "30", "--triangles", "1000000"]

    def atmocorr() -> list[str]:
        return ["atmocorr", "run", str(_tiled_l1c(work, size)), "--method", "6s-ddv", "--output", str(out / "l2a")]

    def train() -> list[str]:
        return ["ben", "train", "-c", str(REPO / "configs" / "ben" / "smoke.yaml"), f"output={out / 'ben-run'}",
                f"data.source={BEN_DATA}", "trainer.max_epochs=1", "evaluate_splits=[]"]

    def predict() -> list[str]:
        return ["ben", "predict", str(out / "ben-run" / "checkpoints" / "best.ckpt"), str(out / "l2a" / "l2a.tif"),
                "-o", str(out / "labels.tif")]

    def component(name: str, values: dict[str, dict[str, str]]) -> Callable[[], list[str]]:
        def argv() -> list[str]:
            folder = out / "components" / name
            if not (folder / "manifest.json").is_file():
                raise FileNotFoundError(f"{folder}: run deltatwin-build first")
            for value in values.values():
                if value["type"] == "Data" and not Path(value["url"]).exists():
                    raise FileNotFoundError(f"{value['url']}: run the step that writes it first")
            run_dir = out / f"run-{name}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            inputs = out / f"{name}-inputs.json"
            inputs.write_text(json.dumps(values), encoding="utf-8")
            return ["deltatwin", "run", str(folder), "-i", str(inputs), "-o", str(run_dir),
                    "--components", str(out / "components")]  # where composites find their parts
        return argv

    def succeeded(name: str) -> Callable[[], bool]:
        record = out / f"run-{name}" / "run.json"
        return lambda: record.is_file() and json.loads(record.read_text())["status"] == "succeeded"

    return [
        Step("sample", f"sample scene {tile}",
             lambda: ["sample", "-o", str(out / "sample"), "--size", str(size)],
             lambda: (out / "sample" / "l2a_10m.tif").is_file()),
        Step("pointcloud-build", f"TCI {tile} + 1\" DEM -> LAZ", build, lambda: (out / "cloud.laz").is_file()),
        Step("pointcloud-info", f"LAZ of {tile}", lambda: ["pointcloud", "info", str(out / "cloud.laz"), "--json"],
             lambda: True),
        Step("pointcloud-mesh", f"DEM + TCI {tile}, 30 m mesh, 1 M triangles", mesh,
             lambda: (out / "mesh.ply").is_file()),
        Step("atmocorr-sample-l1c", f"sample L1C {tile}",
             lambda: ["atmocorr", "sample-l1c", "-o", str(out / "sample_l1c"), "--size", str(size)],
             lambda: (out / "sample_l1c" / "l1c_stack.tif").is_file()),
        Step("atmocorr-run", f"L1C 13 bands {tile}, 6s-ddv", atmocorr, lambda: (out / "l2a" / "l2a.tif").is_file()),
        Step("atmocorr-run-sample-l1c", f"the sample L1C {tile}, 6s-ddv",
             lambda: ["atmocorr", "run", str(out / "sample_l1c" / "l1c_stack.tif"), "--method", "6s-ddv",
                      "--output", str(out / "l2a-sample")],
             lambda: (out / "l2a-sample" / "l2a.tif").is_file()),
        Step("atmocorr-evaluate", f"that L2A {tile} against the sample's truth, TOA beside it",
             lambda: ["atmocorr", "evaluate", str(out / "l2a-sample" / "l2a.tif"),
                      str(out / "sample_l1c" / "l2a_truth.tif"), "--l1c", str(out / "sample_l1c" / "l1c_stack.tif"),
                      "-o", str(out / "evaluation")],
             lambda: (out / "evaluation" / "evaluation.json").is_file()),
        Step("atmocorr-pairs", f"L1C + L2A of one datatake, bbox over {tile} of T46UEU, loopback CDSE",
             pairs, pairs_written, env=lambda: pair_world()[1]),
        Step("atmocorr-train-pairs", f"fine-tune on that pair ({tile}), 5 steps",
             lambda: ["atmocorr", "train", "--pairs", str(out / "pairs"), "-o", str(out / "tuned" / "tuned.onnx"),
                      "--steps", "5"],
             lambda: (out / "tuned" / "tuned.onnx").is_file()),
        Step("atmocorr-train", "simulated scenes, defaults (batch 8 of 2x2 BigEarthNet patches), 5 steps",
             lambda: ["atmocorr", "train", "-o", str(out / "trained" / "trained.onnx"), "--steps", "5",
                      "--ben-dir", str(BEN_DATA)],
             lambda: (out / "trained" / "trained.onnx").is_file()),
        Step("demo", "eotwin demo: its fixed sample scenes (it takes no input)",
             lambda: ["demo", "-o", str(out / "demo")], lambda: (out / "demo" / "index.html").is_file()),
        Step("ben-info", "one real patch (S1 + S2) of the configilm LMDB",
             lambda: ["ben", "info", str(BEN_DATA), "--patch", _first_patch(), "--json"], lambda: True),
        Step("ben-encode", "24 real patches (S1 + S2) -> store",
             lambda: ["ben", "encode", str(BEN_DATA), "-o", str(out / "ben-store")],
             lambda: (out / "ben-store").is_dir()),
        Step("ben-analyze", "metadata of the 24 real patches",
             lambda: ["ben", "analyze", str(BEN_DATA), "-o", str(out / "ben-analysis")],
             lambda: (out / "ben-analysis" / "analysis.json").is_file()),
        Step("ben-train", "smoke.yaml resnet18, 1 epoch, 24 real patches", train,
             lambda: (out / "ben-run" / "checkpoints" / "best.ckpt").is_file()),
        Step("ben-predict", f"resnet18 over the L2A {tile} (stride 120)", predict,
             lambda: (out / "labels.tif").is_file()),
        Step("ben-evaluate", "resnet18 checkpoint on all 24 real patches",
             lambda: ["ben", "evaluate", str(out / "ben-run" / "checkpoints" / "best.ckpt"), "--split", "all",
                      "--source", str(BEN_DATA), "-o", str(out / "ben-scores.json")],
             lambda: (out / "ben-scores.json").is_file()),
        Step("ben-encode-tile", f"{FULL_TILE_PATCHES} patches (S1 + S2; the real ones repeated) -> store",
             lambda: ["ben", "encode", str(_ben_full(work, FULL_TILE_PATCHES)), "-o", str(out / "ben-store-tile")],
             lambda: (out / "ben-store-tile").is_dir()),
        Step("ben-analyze-tile", f"metadata of {FULL_TILE_PATCHES} patches",
             lambda: ["ben", "analyze", str(_ben_full(work, FULL_TILE_PATCHES)), "-o", str(out / "ben-analysis-tile")],
             lambda: (out / "ben-analysis-tile" / "analysis.json").is_file()),
        Step("ben-train-tile", f"smoke.yaml resnet18 on the {FULL_TILE_PATCHES}-patch source, 20 + 10 batches",
             lambda: ["ben", "train", "-c", str(REPO / "configs" / "ben" / "smoke.yaml"), f"output={out / 'ben-run-tile'}",
                      f"data.source={_ben_full(work, FULL_TILE_PATCHES)}", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=20", "trainer.limit_val_batches=10", "evaluate_splits=[]"],
             lambda: (out / "ben-run-tile" / "checkpoints" / "best.ckpt").is_file()),
        Step("ben-evaluate-tile", f"resnet18 checkpoint on {FULL_TILE_PATCHES} patches",
             lambda: ["ben", "evaluate", str(out / "ben-run" / "checkpoints" / "best.ckpt"), "--split", "all",
                      "--source", str(_ben_full(work, FULL_TILE_PATCHES)), "-o", str(out / "ben-scores-tile.json")],
             lambda: (out / "ben-scores-tile.json").is_file()),
        Step("deltatwin-build", "every component + the wheel",
             lambda: ["deltatwin", "build", "-o", str(out / "components")],
             lambda: (out / "components" / "eotwin-atmocorr" / "manifest.json").is_file()),
        Step("component-atmocorr", f"eotwin-atmocorr on the L1C {tile}, 6s-ddv",
             component("eotwin-atmocorr", {"l1c": {"type": "Data", "url": str(work / "tiled_l1c" / "l1c_stack.tif")},
                                           "method": {"type": "string", "value": "6s-ddv"}}),
             succeeded("eotwin-atmocorr")),
        Step("component-sample", f"eotwin-sample, {tile}",
             component("eotwin-sample", {"size": {"type": "integer", "value": size}}), succeeded("eotwin-sample")),
        Step("component-pointcloud-files", f"eotwin-pointcloud-files on the TCI {tile} + 1\" DEM, LAZ",
             component("eotwin-pointcloud-files", {"dem": {"type": "Data", "url": str(work / f"dem_{size}.tif")},
                                                   "image": {"type": "Data", "url": str(work / f"tci_{size}.tif")},
                                                   "format": {"type": "string", "value": "laz"}}),
             succeeded("eotwin-pointcloud-files")),
        Step("component-sample-pointcloud", f"eotwin-sample-pointcloud (composite), {tile}, every point",
             component("eotwin-sample-pointcloud", {"size": {"type": "integer", "value": size},
                                                    "sampled_fraction": {"type": "number", "value": 1.0}}),
             succeeded("eotwin-sample-pointcloud")),
        Step("component-l1c-pointcloud", f"eotwin-l1c-pointcloud (composite) on the sample L1C {tile} + its DEM",
             component("eotwin-l1c-pointcloud",
                       {"l1c": {"type": "Data", "url": str(out / "sample_l1c" / "l1c_stack.tif")},
                        "dem": {"type": "Data", "url": str(out / "sample" / "dem.tif")},
                        "method": {"type": "string", "value": "6s-ddv"}}),
             succeeded("eotwin-l1c-pointcloud")),
        Step("pointcloud-build-live", f"bbox of a {tile} world via loopback CDSE + EDH -> LAZ", live_build,
             lambda: (out / "live.laz").is_file(), env=live_credentials),
        Step("pointcloud-build-live-tiled", "the same bbox as 20 km tiles (Dask, 2 workers) -> LAZ per tile + VPC",
             live_tiled, lambda: (out / "live-tiled" / "area.vpc").is_file(), env=live_credentials),
        Step("component-pointcloud-live", f"eotwin-pointcloud, bbox of a {tile} world, loopback CDSE + EDH",
             live_component, succeeded("eotwin-pointcloud"), env=lambda: live_world()[1]),
        Step("component-ben-predict", f"eotwin-ben-predict, resnet18 over the L2A {tile}",
             component("eotwin-ben-predict",
                       {"checkpoint": {"type": "Data", "url": str(out / "ben-run" / "checkpoints" / "best.ckpt")},
                        "image": {"type": "Data", "url": str(out / "l2a" / "l2a.tif")}}),
             succeeded("eotwin-ben-predict")),
    ]


def run_step(step: Step, limit: int) -> Row:
    row = Row(step.name, step.workload)
    try:
        args = step.argv()
    except Exception as exc:  # an input that could not be made is a FAILED row, not a crash of the table
        row.detail = f"input: {type(exc).__name__}: {exc}"[:200]
        return row
    address_space = step.name not in AS_ONLY_VIRTUAL
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(step.env() if step.env else {})}
    run = run_under_memory_limit([sys.executable, "-m", "eotwin", "-q", *args], limit_bytes=limit,
                                 address_space=address_space, env=env)
    row.wall_s, row.peak_rss_bytes, row.peak_vms_bytes = run.wall_s, run.peak_rss_bytes, run.peak_vms_bytes
    row.limit = f"{limit / 2**30:g} GiB {'AS + RSS' if address_space else 'RSS'}"
    row.ok = run.ok and step.check()
    if not row.ok:
        last = next((line for line in reversed(run.stderr.splitlines()) if line.strip()), "")
        row.detail = (run.stopped or f"exit {run.returncode}: {last.strip()}")[:200]
    return row


def print_table(rows: list[Row]) -> None:
    head = f"{'pipeline':22s} {'input':48s} {'wall s':>8s} {'peak RSS MiB':>13s} {'peak AS MiB':>12s} {'limit':>14s}  result"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.name:22s} {r.workload[:48]:48s} {r.wall_s:8.1f} {r.peak_rss_bytes / 2**20:13.0f} "
              f"{r.peak_vms_bytes / 2**20:12.0f} {r.limit:>14s}  {'OK' if r.ok else 'FAILED'}"
              + (f"  ({r.detail})" if r.detail else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980, help="pixels per side (10980: a full tile at 10 m)")
    parser.add_argument("--workdir", type=Path, help="keep inputs and outputs here (default: a temporary folder)")
    parser.add_argument("--only", action="append", default=[], help="run this pipeline only (repeatable)")
    parser.add_argument("--json", type=Path, help="write the table as JSON to this file")
    parser.add_argument("--limit-gib", type=float, default=DEFAULT_LIMIT / 2**30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eotwin-memory-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        stack = contextlib.ExitStack()  # the loopback servers of the live steps, while they run
        chosen = steps(work, args.size, stack)
        known = [s.name for s in chosen]
        unknown = [n for n in args.only if n not in known]
        if unknown:
            parser.error(f"unknown pipeline(s) {', '.join(unknown)} (known: {', '.join(known)})")
        rows = []
        for step in chosen:
            if args.only and step.name not in args.only:
                continue
            print(f"running {step.name} ({step.workload}) ...", file=sys.stderr, flush=True)
            rows.append(run_step(step, int(args.limit_gib * 2**30)))
            r = rows[-1]
            print(f"  {r.wall_s:.1f} s, peak RSS {r.peak_rss_bytes / 2**20:.0f} MiB, {'OK' if r.ok else 'FAILED'}",
                  file=sys.stderr, flush=True)
        stack.close()
    print_table(rows)
    if args.json:
        from eotwin.io.files import write_json_atomic

        write_json_atomic(args.json, {"size": args.size, "limit_bytes": int(args.limit_gib * 2**30),
                                      "rows": [r.__dict__ for r in rows]})
    sys.exit(0 if all(r.ok for r in rows) else 1)


if __name__ == "__main__":
    main()
