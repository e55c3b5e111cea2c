"""Point-cloud build benchmark: a full Sentinel-2 tile footprint from local GeoTIFFs, end to end.

Prints, measured in one run:
* the LAZ build and the COPC build: ``eotwin pointcloud build`` on a 10980 x 10980 10 m tile (uint8 TCI
  in UTM, a 30 m DEM in EPSG:4326 resampled bilinearly), points per second and each child process's own
  peak RSS (``os.wait4``);
* the floor: laspy + lazrs alone, single-threaded (``LazBackend.Lazrs``), writing the same number of
  points in the same chunk size (arrays prepared outside the timed section), in its own process;
* the ratios build / floor (goals: LAZ >= 1.0, COPC >= 0.5) and peak RSS against the 1.5 GB budget.

Usage: ``.venv/bin/python benchmarks/pointcloud.py [--size 10980] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.windows import Window

UTM = CRS.from_epsg(32632)
ORIGIN = (300000.0, 5100000.0)  # T32TLR-like tile corner


def make_inputs(workdir: Path, size: int) -> tuple[Path, Path]:
    """A uint8 TCI (size x size, 10 m, UTM 32N) and a 1-arcsecond EPSG:4326 DEM covering it, written in strips."""
    tci, dem = workdir / f"tci_{size}.tif", workdir / f"dem_{size}.tif"
    if tci.exists() and dem.exists():
        return tci, dem
    rng = np.random.default_rng(0)
    transform = Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=UTM.to_wkt(), transform=transform,
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate", nodata=0, photometric="RGB")
    with rasterio.open(tci.with_suffix(".part.tif"), "w", **profile) as dst:
        for row in range(0, size, 512):
            h = min(512, size - row)
            cols = np.arange(size)
            base = (np.sin(cols / 300.0)[None, :] * 60 + 120 + np.cos((row + np.arange(h)) / 200.0)[:, None] * 40)
            block = np.stack([base, base * 0.9 + 20, base * 0.7 + 10]) + rng.integers(0, 25, (3, h, size))
            dst.write(np.clip(block, 1, 255).astype(np.uint8), window=Window(0, row, size, h))
    tci.with_suffix(".part.tif").rename(tci)
    to_lonlat = Transformer.from_crs(UTM, CRS.from_epsg(4326), always_xy=True)
    west, south, east, north = to_lonlat.transform_bounds(ORIGIN[0], ORIGIN[1] - 10 * size, ORIGIN[0] + 10 * size, ORIGIN[1])
    res = 1 / 3600
    west, north = west - 3 * res, north + 3 * res
    width, height = int((east - west) / res) + 6, int((north - south) / res) + 6
    dem_profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="float32", crs="EPSG:4326",
                       transform=Affine(res, 0, west, 0, -res, north), tiled=True, blockxsize=512, blockysize=512,
                       compress="deflate", nodata=float("nan"))
    with rasterio.open(dem.with_suffix(".part.tif"), "w", **dem_profile) as dst:
        for row in range(0, height, 512):
            h = min(512, height - row)
            lat = north - (row + np.arange(h) + 0.5) * res
            lon = west + (np.arange(width) + 0.5) * res
            z = 1500 + 900 * np.sin(lon[None, :] * 40) * np.cos(lat[:, None] * 35)
            dst.write(z.astype(np.float32)[None], window=Window(0, row, width, h))
    dem.with_suffix(".part.tif").rename(dem)
    return tci, dem


def run_child(cmd: list[str]) -> tuple[float, float, float, float, str]:
    """Run ``cmd``: (seconds, peak RSS MiB of the child itself, peak MiB of the child and its worker processes
    together, CPU cores used on average, stdout). ``wait4`` gives the child's own rusage; the tree is sampled."""
    import threading

    import psutil

    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    tree_peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal tree_peak
        parent = psutil.Process(child.pid)
        while not stop.wait(0.2):
            try:
                total = parent.memory_info().rss
                for proc in parent.children(recursive=True):
                    with contextlib.suppress(psutil.Error):  # a worker that just ended
                        total += proc.memory_info().rss
            except psutil.Error:
                return
            tree_peak = max(tree_peak, total)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout = child.stdout.read().decode() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed with exit code {code}")
    own_mib = usage.ru_maxrss / 1024
    cores = (usage.ru_utime + usage.ru_stime) / seconds
    return seconds, own_mib, max(tree_peak / 2**20, own_mib), cores, stdout


def end_to_end(tci: Path, dem: Path, out: Path, fmt: str, block_rows: int) -> tuple[float, int, float, float, float]:
    """Run the real CLI in a child process: (seconds, points, peak RSS MiB of the child, of its process tree, cores)."""
    cmd = [sys.executable, "-m", "eotwin", "-q", "pointcloud", "build", "--dem", str(dem), "--image", str(tci), "-o", str(out),
           "--format", fmt, "--no-viewer", "--no-preview", "--block-rows", str(block_rows)]
    seconds, peak_mib, tree_mib, cores, _ = run_child(cmd)
    meta = json.loads(Path(str(out) + ".json").read_text())
    return seconds, int(meta["properties"]["pc:count"]), peak_mib, tree_mib, cores


def floor(n_points: int, chunk: int, out: Path, size: int) -> float:
    """Seconds laspy + lazrs take, single-threaded (``LazBackend.Lazrs``), to write ``n_points`` grid points with RGB
    in chunks of ``chunk`` records, closing (the last chunk and the chunk table) included; arrays prepared untimed."""
    import laspy

    header = laspy.LasHeader(point_format=7, version="1.4")
    header.scales = np.array([0.01, 0.01, 0.01])
    header.offsets = np.array([ORIGIN[0], ORIGIN[1] - 10 * size, 0.0])
    header.add_crs(UTM)
    rng = np.random.default_rng(1)
    elapsed = 0.0
    writer = laspy.open(out, mode="w", header=header, do_compress=True, laz_backend=laspy.LazBackend.Lazrs)
    written = 0
    while written < n_points:
        n = min(chunk, n_points - written)
        idx = np.arange(written, written + n)
        rows, cols = np.divmod(idx, size)
        record = laspy.ScaleAwarePointRecord.zeros(n, header=header)
        record.array["X"] = (cols * 1000 + 500).astype(np.int32)
        record.array["Y"] = ((size - rows) * 1000 - 500).astype(np.int32)
        record.array["Z"] = (150000 + 90000 * np.sin(cols / 900.0) * np.cos(rows / 800.0)).astype(np.int32)
        colours = rng.integers(0, 256, (3, n)).astype(np.uint16) * 257
        record.array["red"], record.array["green"], record.array["blue"] = colours
        start = time.perf_counter()
        writer.write_points(record)
        elapsed += time.perf_counter() - start
        written += n
    start = time.perf_counter()
    writer.close()  # flushes the last chunk and writes the chunk table: part of writing
    return elapsed + time.perf_counter() - start


def floor_in_child(n_points: int, chunk: int, out: Path, size: int) -> tuple[float, float]:
    """The floor in its own process, so that its peak RSS is its own: (seconds, peak RSS MiB)."""
    cmd = [sys.executable, __file__, "--floor-points", str(n_points), "--floor-chunk", str(chunk), "--floor-out", str(out),
           "--size", str(size)]
    _, peak_mib, _, _, stdout = run_child(cmd)
    return float(stdout.strip().splitlines()[-1]), peak_mib


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--block-rows", type=int, default=256)
    parser.add_argument("--floor-points", type=int, default=None, help=argparse.SUPPRESS)  # the floor's child process
    parser.add_argument("--floor-chunk", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--floor-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_points is not None:
        print(floor(args.floor_points, args.floor_chunk, args.floor_out, args.size))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="eotwin-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tci, dem = make_inputs(workdir, args.size)
    print(f"inputs: {tci.name} {args.size}x{args.size} uint8 RGB (UTM 32N, 10 m), {dem.name} 1\" EPSG:4326 "
          f"[{time.perf_counter() - t0:.0f} s to prepare]; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    results = {}
    for fmt, out in (("laz", workdir / "cloud.laz"), ("copc", workdir / "cloud.copc.laz")):
        seconds, points, peak_mib, tree_mib, cores = end_to_end(tci, dem, out, fmt, args.block_rows)
        results[fmt] = (points / seconds, max(peak_mib, tree_mib))
        print(f"{fmt.upper() + ' build':11s}: {points:,} points in {seconds:.1f} s = {points / seconds:,.0f} points/s, "
              f"peak RSS {peak_mib:,.0f} MiB (with its worker processes {tree_mib:,.0f} MiB), {cores:.2f} CPU cores "
              f"on average, {os.path.getsize(out) / 2**20:,.0f} MiB file; load now {os.getloadavg()[0]:.2f}", flush=True)
        out.unlink()
        Path(str(out) + ".json").unlink()
    floor_out = workdir / "floor.laz"
    floor_seconds, floor_mib = floor_in_child(points, args.block_rows * args.size, floor_out, args.size)
    floor_out.unlink(missing_ok=True)
    floor_rate = points / floor_seconds
    print(f"floor      : laspy + lazrs single-threaded write {points:,} points in {floor_seconds:.1f} s = "
          f"{floor_rate:,.0f} points/s, peak RSS {floor_mib:,.0f} MiB")
    laz_ratio, copc_ratio = results["laz"][0] / floor_rate, results["copc"][0] / floor_rate
    print(f"ratio      : LAZ build / floor = {laz_ratio:.2f} (goal >= 1.0: {verdict(laz_ratio >= 1.0)}); "
          f"COPC build / floor = {copc_ratio:.2f} (goal >= 0.5: {verdict(copc_ratio >= 0.5)})")
    for fmt in ("laz", "copc"):
        peak = results[fmt][1]
        print(f"memory     : {fmt.upper()} build peak RSS (with workers) {peak / 1024:.2f} GiB = {peak * 2**20 / 1e9:.2f} GB "
              f"(budget 1.5 GB: {verdict(peak * 2**20 <= 1.5e9)})")


if __name__ == "__main__":
    main()
