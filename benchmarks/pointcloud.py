"""Point-cloud build benchmark: a full Sentinel-2 tile footprint from local GeoTIFFs, end to end.

Prints, measured in one run:
* end to end: ``eotwin pointcloud build`` on a 10980 x 10980 10 m tile (uint8 TCI in UTM, a 30 m DEM
  in EPSG:4326 resampled bilinearly), points per second and the child process's peak RSS;
* the floor: laspy + lazrs alone writing the same number of points in the same chunk size (arrays
  prepared outside the timed section), points per second;
* the ratio end-to-end / floor (goal >= 0.5) and peak RSS against the 1.5 GB budget.

Usage: ``.venv/bin/python benchmarks/pointcloud.py [--size 10980] [--workdir DIR] [--format laz]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def end_to_end(tci: Path, dem: Path, out: Path, fmt: str, block_rows: int) -> tuple[float, int, float]:
    """Run the real CLI in a child process; (seconds, points, peak RSS in MiB of that child)."""
    cmd = [sys.executable, "-m", "eotwin", "-q", "pointcloud", "build", "--dem", str(dem), "--image", str(tci), "-o", str(out),
           "--format", fmt, "--no-viewer", "--no-preview", "--block-rows", str(block_rows)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    meta = json.loads(Path(str(out) + ".json").read_text())
    if peak_kib <= before:
        raise SystemExit("could not measure the child's peak RSS (an earlier child was larger)")
    return seconds, int(meta["properties"]["pc:count"]), peak_kib / 1024


def floor(n_points: int, chunk: int, out: Path, fmt: str, size: int) -> float:
    """Seconds laspy + lazrs alone take to write ``n_points`` grid points with RGB in chunks of ``chunk``."""
    import laspy

    header = laspy.LasHeader(point_format=7, version="1.4")
    header.scales = np.array([0.01, 0.01, 0.01])
    header.offsets = np.array([ORIGIN[0], ORIGIN[1] - 10 * size, 0.0])
    header.add_crs(UTM)
    backend = laspy.LazBackend.LazrsParallel if (os.cpu_count() or 1) > 1 else laspy.LazBackend.Lazrs
    rng = np.random.default_rng(1)
    elapsed = 0.0
    with laspy.open(out, mode="w", header=header, do_compress=(fmt == "laz"), laz_backend=backend if fmt == "laz" else None) as w:
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
            w.write_points(record)
            elapsed += time.perf_counter() - start
            written += n
    start = time.perf_counter()
    # closing flushes the last chunk table / header: part of writing
    elapsed += time.perf_counter() - start
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--format", default="laz", choices=["laz", "las"])
    parser.add_argument("--block-rows", type=int, default=256)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="eotwin-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tci, dem = make_inputs(workdir, args.size)
    print(f"inputs: {tci.name} {args.size}x{args.size} uint8 RGB (UTM 32N, 10 m), {dem.name} 1\" EPSG:4326 "
          f"[{time.perf_counter() - t0:.0f} s to prepare]", flush=True)
    out = workdir / f"cloud.{args.format}"
    seconds, points, peak_mib = end_to_end(tci, dem, out, args.format, args.block_rows)
    e2e_rate = points / seconds
    print(f"end to end : {points:,} points in {seconds:.1f} s = {e2e_rate:,.0f} points/s, peak RSS {peak_mib:,.0f} MiB "
          f"({os.path.getsize(out) / 2**20:,.0f} MiB {args.format.upper()})", flush=True)
    floor_seconds = floor(points, args.block_rows * args.size, workdir / f"floor.{args.format}", args.format, args.size)
    floor_rate = points / floor_seconds
    print(f"floor      : laspy + lazrs alone write {points:,} points in {floor_seconds:.1f} s = {floor_rate:,.0f} points/s")
    ratio = e2e_rate / floor_rate
    print(f"ratio      : end to end / floor = {ratio:.2f} (goal >= 0.50: {'met' if ratio >= 0.5 else 'NOT met'})")
    print(f"memory     : peak RSS {peak_mib / 1024:.2f} GiB (budget 1.5 GB: {'met' if peak_mib * 2**20 <= 1.5e9 else 'NOT met'})")
    for path in (out, Path(str(out) + ".json"), workdir / f"floor.{args.format}"):
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
