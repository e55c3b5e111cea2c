"""Memory: every CLI pipeline and every generated DeltaTwin component on its sample input under an enforced 2 GiB.

Each command runs through the real CLI in a child process (``tests.support.memlimit``): ``RLIMIT_AS`` of 2 GiB
set between fork and exec, plus a watchdog that sums resident memory over the child's process tree and kills
it above 2 GiB (a container's limit). The peak asserted is the watchdog's (or the kernel's high-water mark).

Address space vs resident memory: the torch pipelines (``ben train``, ``ben evaluate``, ``ben predict``,
``eotwin demo``'s training and prediction) cannot start under ``RLIMIT_AS`` 2 GiB, for virtual memory only:
``import torch`` (PyPI's CUDA build) maps about 3 GiB of shared libraries (libcublasLt 517 MiB,
libtorch_cuda 404 MiB, libtorch_cpu 336 MiB, cuFFT, cuSPARSE, NCCL...) that a CPU run never touches, so
``libtorch_cpu.so: failed to map segment`` comes at about 400 MiB resident. They run under the resident-memory
watchdog alone, which is what the DeltaTwin service's container limit counts. So does ``ben encode``: LMDB maps
its whole store (at least 1 GiB, more for more patches) into the address space when it opens it, file-backed and
resident only as written. Everything else runs under both.

``deltatwin run`` goes under the watchdog too, around the runner, whose own limit (``RLIMIT_AS`` and its watchdog
at the manifest's ``ram``) applies to each model inside: the components' models run ``sample``, ``pointcloud
build``, ``atmocorr run`` and ``ben predict``, so those are not run a second time on their own here. ``eotwin
demo`` (point cloud, mesh, label analysis, training, prediction, atmocorr with evaluation) runs under the same
watchdog in tests/cli/test_demo.py, the run the suite already makes; ``atmocorr pairs`` and ``atmocorr train
--pairs`` in tests/atmocorr/test_pairs.py (they need its loopback CDSE).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.hardening.conftest import child_env
from tests.support.memlimit import DEFAULT_LIMIT, LimitedRun, run_under_memory_limit

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "ben" / "smoke.yaml"
LIMIT = DEFAULT_LIMIT  # 2 GiB


def limited(cwd: Path, *args: str, address_space: bool = True) -> LimitedRun:
    """``eotwin -q ARGS`` under the 2 GiB limit; it must succeed below it."""
    run = run_under_memory_limit([sys.executable, "-m", "eotwin", "-q", *args], limit_bytes=LIMIT,
                                 address_space=address_space, cwd=cwd, env=child_env(), timeout_s=600)
    assert run.ok, f"eotwin {' '.join(args)}: exit {run.returncode}, {run.stopped}; {run.stderr.strip()[-600:]}"
    assert 0 < run.peak_rss_bytes < LIMIT
    return run


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("memory")


@pytest.fixture(scope="module")
def l1c(work: Path) -> Path:
    limited(work, "atmocorr", "sample-l1c", "-o", "l1c", "--size", "200", "--seed", "7")
    assert (work / "l1c" / "l1c_stack.tif").is_file() and (work / "l1c" / "l2a_truth.tif").is_file()
    return work / "l1c"


@pytest.fixture(scope="module")
def checkpoint(work: Path, ben_mock_dir: Path) -> Path:
    """``ben train`` with its test-split evaluation: one epoch of the tiny timm model on the 24 real patches."""
    limited(work, "ben", "train", "-c", str(SMOKE), f"output={work / 'ben-run'}", f"data.source={ben_mock_dir}",
            "model.name=test_resnet", "augment.enabled=false", "optim.schedule=none", "trainer.max_epochs=1",
            "evaluate_splits=[test]", address_space=False)
    best = work / "ben-run" / "checkpoints" / "best.ckpt"
    assert best.is_file() and json.loads((work / "ben-run" / "results.json").read_text())
    return best


def test_ben_data_pipelines(work: Path, ben_mock_dir: Path):
    from eotwin.ben.sources import open_source

    with open_source(ben_mock_dir) as source:
        patch = source.patch_ids(split="train")[0]
    info = limited(work, "ben", "info", str(ben_mock_dir), "--patch", patch, "--json")
    assert json.loads(info.stdout)
    # resident limit only: LMDB reserves its whole map (1 GiB at least) as address space up front
    limited(work, "ben", "encode", str(ben_mock_dir), "-o", "store", "--limit", "12", "--workers", "2",
            address_space=False)
    assert (work / "store").is_dir() and any((work / "store").iterdir())
    limited(work, "ben", "analyze", str(ben_mock_dir), "-o", "analysis")
    assert json.loads((work / "analysis" / "analysis.json").read_text())


def test_ben_evaluate_and_the_mesh_run_within_2_gib(work: Path, ben_mock_dir: Path, checkpoint: Path, sample_files):
    limited(work, "ben", "evaluate", str(checkpoint), "--split", "all", "--source", str(ben_mock_dir),
            "-o", "scores.json", address_space=False)
    assert json.loads((work / "scores.json").read_text())
    mesh = limited(work, "pointcloud", "mesh", "--dem", str(sample_files.dem), "--image", str(sample_files.tci),
                   "-o", "mesh.ply", "--no-glb", "--json")
    assert json.loads(mesh.stdout)["triangles"] > 0 and (work / "mesh.ply").is_file()


def test_deltatwin_components(work: Path, sample_files, l1c: Path, checkpoint: Path):
    """Every generated component (the live one aside: tests/deltatwin/test_build_live.py runs it with the runner's
    limits) run by ``eotwin deltatwin run`` with limits enforced, the whole tree under the 2 GiB watchdog; their
    models run ``sample``, ``pointcloud build``, ``atmocorr run`` and ``ben predict``, whose outputs then go
    through ``pointcloud info`` and ``atmocorr evaluate``, under both limits (``ben analyze``, ``ben evaluate`` and
    ``pointcloud mesh`` run in the tests beside this one)."""
    limited(work, "deltatwin", "build", "-o", "components")
    comps = work / "components"
    limited(work, "deltatwin", "validate", str(comps / "eotwin-ben-predict"))
    inputs = {
        "eotwin-sample-pointcloud": {"size": {"type": "integer", "value": 128},
                                     "sampled_fraction": {"type": "number", "value": 0.5}},
        "eotwin-l1c-pointcloud": {"l1c": {"type": "Data", "url": str(l1c / "l1c_stack.tif")},
                                  "dem": {"type": "Data", "url": str(sample_files.dem)},
                                  "method": {"type": "string", "value": "6s-ddv"}},
        "eotwin-ben-predict": {"checkpoint": {"type": "Data", "url": str(checkpoint)},
                               "image": {"type": "Data", "url": str(sample_files.l2a)}},
    }
    covered, records = set(), {}
    for name, values in inputs.items():
        (work / f"{name}.json").write_text(json.dumps(values))
        limited(work, "deltatwin", "run", str(comps / name), "-i", f"{name}.json", "-o", f"run-{name}",
                "--components", str(comps), address_space=False)
        record = records[name] = json.loads((work / f"run-{name}" / "run.json").read_text())
        assert record["status"] == "succeeded"
        for out in record["outputs"].values():
            assert Path(out["path"]).stat().st_size == out["size"] > 0
        for node in _model_nodes(record["nodes"]):
            assert node["limits"]["enforced"] and 0 < node["peak_rss_bytes"] < LIMIT, node["model"]
            covered.add(node["model"])
    assert covered == {"sample", "pointcloud", "atmocorr", "predict"}
    cloud = records["eotwin-l1c-pointcloud"]["outputs"]["point_cloud"]["path"]
    info = limited(work, "pointcloud", "info", cloud, "--json")
    assert json.loads(info.stdout)["count"] > 30_000  # 200 x 200 px, nodata aside
    l2a = records["eotwin-l1c-pointcloud"]["outputs"]["l2a"]["path"]
    limited(work, "atmocorr", "evaluate", l2a, str(l1c / "l2a_truth.tif"), "-o", "eval")
    assert json.loads((work / "eval" / "evaluation.json").read_text())


def _model_nodes(nodes: list[dict]) -> list[dict]:
    """Model nodes, dependencies' included."""
    found = []
    for node in nodes:
        if node["ref"].startswith("models."):
            found.append(node)
        found += _model_nodes(node.get("nodes", []))
    return found


def test_full_tile_sizing_wins_when_larger_and_survives_a_new_measure():
    from eotwin.deltatwin.blueprints import blueprint
    from eotwin.deltatwin.sizing import _model_ram, merge_sizing

    bp = blueprint("atmocorr")
    sample = {"peak_rss_bytes": 300 * 2**20, "peak_vms_bytes": 700 * 2**20, "workload": "the sample scene"}
    full = {"peak_rss_bytes": 1200 * 2**20, "peak_vms_bytes": 1000 * 2**20, "workload": "a full tile"}
    sizing = {"components": {bp.name: {"atmocorr": {**sample, "full_tile": full}}}}
    ram, note = _model_ram(sizing, bp, bp.models[0])
    assert ram == "2Gi" and "a full tile" in note  # 1200 MiB x 1.5 = 1800 MiB -> 2048 MiB
    assert _model_ram({"components": {bp.name: {"atmocorr": sample}}}, bp, bp.models[0])[0] == "1280Mi"
    remeasured = {"components": {bp.name: {"atmocorr": {**sample, "peak_rss_bytes": 310 * 2**20}}},
                  "about": "new", "eotwin": "x"}
    merged = merge_sizing({**sizing, "components": {**sizing["components"], "other": {"m": sample}}}, remeasured)
    entry = merged["components"][bp.name]["atmocorr"]
    assert entry["peak_rss_bytes"] == 310 * 2**20 and entry["full_tile"] == full
    assert merged["components"]["other"] == {"m": sample} and merged["about"] == "new"


def test_atmocorr_training_runs_within_2_gib(work: Path, ben_mock_dir: Path):
    """``atmocorr train`` on simulated scenes (the real BigEarthNet surfaces of the wheel, the 6S table), at its
    default batch, mosaic and one simulating worker, for two steps. The worker was forked with torch imported
    (2.06-2.31 GiB for the tree); spawned and torch-free it holds about 250 MiB beside the trainer."""
    target = work / "atmonet" / "trained.onnx"
    run = limited(work, "atmocorr", "train", "-o", str(target), "--steps", "2", "--ben-dir", str(ben_mock_dir),
                  "--sources", "ben", address_space=False)
    assert target.is_file() and target.with_suffix(".pt").is_file()
    assert run.peak_rss_bytes < LIMIT


def test_the_batch_simulating_worker_never_imports_torch(tmp_path: Path):
    """What a training worker runs (unpickling the batch maker, simulating, preparing the network's inputs) needs
    numpy and the 6S table only: torch alone maps some 500 MiB resident."""
    import subprocess

    script = (
        "import sys, numpy as np\n"
        "from eotwin.atmocorr.ai import synth\n"
        "from eotwin.atmocorr.ai.train import _BatchMaker, _init_worker, _make_in_worker\n"
        "from eotwin.atmocorr.lut import load_lut\n"
        "rng = np.random.default_rng(0)\n"
        "surfaces = {'ben': [rng.uniform(0.01, 0.4, (12, 120, 120)).astype(np.float32) for _ in range(4)]}\n"
        "config = {'cell': 6, 'out_stride': 2, 'bright_toa': 0.3, 'hypotheses': 2}\n"
        "_init_worker(_BatchMaker(surfaces, load_lut(None), synth.builtin_spectra(), 2, (1, 1), config))\n"
        "batch = _make_in_worker(np.random.SeedSequence(1))\n"
        "print(batch['toa'].shape, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split()[-1] == "False", out.stdout + out.stderr


def test_a_forked_child_does_not_double_the_trees_memory(tmp_path: Path):
    """The watchdog's bug (a training run once killed at 2.67 GB for 1.6 GB of memory): a child between fork and
    exec shares all its parent's pages, and a sum of RSS counted them twice. The tree's memory is the sum of
    PSS, which splits a shared page between its holders."""
    import subprocess
    import time

    import psutil

    from eotwin.deltatwin.process import tree_memory

    ready = tmp_path / "ready"
    script = ("import os, sys, time\n"
              "block = bytearray(400 * 2**20)\n"  # 400 MiB, every page touched
              "for i in range(0, len(block), 4096): block[i] = 1\n"
              "pid = os.fork()\n"
              "if pid == 0:\n"
              "    time.sleep(30); os._exit(0)\n"
              f"open({str(ready)!r}, 'w').close()\n"
              "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        root = psutil.Process(proc.pid)
        for _ in range(100):  # the child is listed once fork has returned in the parent
            if root.children():
                break
            time.sleep(0.05)
        rss_sum = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        held, _ = tree_memory(root)
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert rss_sum > 780 * 2**20  # what the old watchdog counted: both processes' 400 MiB
    assert 400 * 2**20 < held < 560 * 2**20  # what they hold: once, plus the interpreters


def test_one_sample_above_the_limit_is_not_an_overrun():
    """A vfork child reads as a copy of its parent until it execs: a watchdog acts on what lasts two samples."""
    from eotwin.deltatwin.process import SustainedMemory

    memory = SustainedMemory()
    readings = [memory.add(v) for v in (100, 900, 120, 130, 800, 850, 140)]
    assert readings == [0, 100, 120, 120, 130, 800, 140]
    assert memory.peak == 800  # the 900 spike is gone, the 800-850 plateau counts
    single = SustainedMemory()
    single.add(300)
    assert single.peak == 300  # a command shorter than two samples still reports what it held
