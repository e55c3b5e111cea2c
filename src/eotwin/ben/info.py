"""One patch described the same way whatever it was read from: labels and per-band statistics.

``eotwin ben info`` prints this for a GeoTIFF folder, an LMDB or our store; equal output means
equal arrays (shape, dtype, min, max and mean of every band), which is how conversions are checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from eotwin.ben.bands import ALL_BANDS
from eotwin.ben.sources.base import BenSource


def band_summary(arrays: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per band (VV, VH, then S2 in ESA order): shape, dtype, min, max and mean (float64 accumulation, 4 decimals)."""
    order = [band for band in ALL_BANDS if band in arrays] + sorted(set(arrays) - set(ALL_BANDS))
    rows = []
    for band in order:
        array = np.asarray(arrays[band])
        rows.append({
            "band": band,
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "min": array.min().item(),
            "max": array.max().item(),
            "mean": round(float(array.mean(dtype=np.float64)), 4),
        })
    return rows


def patch_info(source: BenSource, patch_id: str) -> dict[str, Any]:
    """Labels, split, country, exclusion flags and band summary of one patch (with its S1 partner's VV and VH
    when the source holds Sentinel-1: a missing or misnamed partner is an error naming the patch)."""
    record = source.record(patch_id)
    arrays = source.read(patch_id)
    return {
        "patch_id": record.patch_id,
        "s1_name": source.s1_partner(patch_id) if source.has_s1 else None,
        "labels": list(record.labels),
        "split": record.split,
        "country": record.country,
        "contains_seasonal_snow": record.snow,
        "contains_cloud_or_shadow": record.cloud,
        "bands": band_summary(arrays),
    }


def format_info(info: Mapping[str, Any]) -> str:
    """Plain-text rendering of :func:`patch_info` (what the CLI prints without --json)."""
    lines = [
        f"patch    {info['patch_id']}" + (f"    S1 {info['s1_name']}" if info.get("s1_name") else ""),
        f"split    {info['split'] or '-'}    country {info['country'] or '-'}",
        f"flags    seasonal snow: {'yes' if info['contains_seasonal_snow'] else 'no'}, "
        f"cloud or shadow: {'yes' if info['contains_cloud_or_shadow'] else 'no'}",
        f"labels   ({len(info['labels'])})",
        *(f"  - {label}" for label in info["labels"]),
        f"{'band':5s} {'shape':>9s} {'dtype':>7s} {'min':>8s} {'max':>8s} {'mean':>12s}",
    ]
    for row in info["bands"]:
        shape = "x".join(str(n) for n in row["shape"])
        low, high = (f"{v:.4f}" if isinstance(v, float) else str(v) for v in (row["min"], row["max"]))
        lines.append(f"{row['band']:5s} {shape:>9s} {row['dtype']:>7s} {low:>8} {high:>8} {row['mean']:>12.4f}")
    return "\n".join(lines)
