"""BigEarthNet loading benchmark: patches per second from GeoTIFF folders vs the eotwin store, same patches, one run.

The 24 real BENv2 patches (configilm 0.7.1 mock data, unpacked by ``make setup``) are exported as a
reBEN GeoTIFF folder and encoded into the store; then every patch is read ``--repeats`` times from
each, every band (VV, VH and the 12 S2 bands: 14), and the two rates and their ratio are printed (goal: store >= 10 x GeoTIFF).

Usage: ``.venv/bin/python benchmarks/ben_loader.py [--repeats 20]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from eotwin.ben.geotiff import export_geotiff
from eotwin.ben.sources import open_source
from eotwin.ben.store import encode

MOCK = Path(__file__).resolve().parents[1] / ".eotwin-data" / "BENv2"


def rate(source, ids: list[str], repeats: int) -> tuple[float, float]:
    """(patches per second, checksum of everything read) for reading ``ids`` ``repeats`` times."""
    total = 0.0
    start = time.perf_counter()
    for _ in range(repeats):
        for patch_id in ids:
            total += sum(float(a[0, 0]) for a in source.read(patch_id).values())
    return len(ids) * repeats / (time.perf_counter() - start), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="eotwin-ben-bench-"))
    with open_source(MOCK / "BigEarthNet-V2-LMDB", MOCK / "metadata.parquet") as lmdb_source:
        ids = lmdb_source.patch_ids(include_snow=True, include_cloud=True)
        export_geotiff(lmdb_source, work / "geotiff", ids)
    with open_source(work / "geotiff") as tif_source:
        encode(tif_source, work / "store")
        tif_rate, tif_sum = rate(tif_source, ids, args.repeats)
    with open_source(work / "store") as store_source:
        store_rate, store_sum = rate(store_source, ids, args.repeats)
    assert np.isclose(tif_sum, store_sum), "the two sources must give the same arrays"
    print(f"patches     : {len(ids)} real BENv2 patches x {args.repeats} repeats, 14 bands each (S1 + S2)")
    print(f"GeoTIFF     : {tif_rate:,.0f} patches/s")
    print(f"eotwin store: {store_rate:,.0f} patches/s")
    print(f"ratio       : {store_rate / tif_rate:.1f} x (goal >= 10 x: {'met' if store_rate >= 10 * tif_rate else 'NOT met'})")


if __name__ == "__main__":
    main()
