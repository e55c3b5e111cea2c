"""BigEarthNet v1 patch folders: labels from ``<patch>_labels_metadata.json`` (43 CORINE classes mapped to 19)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eotwin.ben.labels import v1_to_19
from eotwin.ben.sources.base import BenSource
from eotwin.ben.sources.geotiff import read_tif
from eotwin.errors import EotwinError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


class V1Source(BenSource):
    """BigEarthNet v1 patch folders; labels from ``<patch>_labels_metadata.json``, mapped 43 -> 19."""

    kind = "v1"

    def __init__(self, root: Path) -> None:
        root = Path(root)
        self.root = root
        self._dirs = {p.name: p for p in sorted(root.iterdir()) if (p / f"{p.name}_labels_metadata.json").is_file()}
        if not self._dirs:
            raise EotwinError(f"{root} holds no BigEarthNet v1 patch folders (<patch>/<patch>_labels_metadata.json)")
        super().__init__(root, self._build_metadata())

    def _build_metadata(self) -> pd.DataFrame:
        import pandas as pd

        splits = _v1_lists(self.root, {"train": "train.csv", "validation": "val.csv", "test": "test.csv"})
        flags = _v1_lists(self.root, {"snow": "patches_with_seasonal_snow.csv", "cloud": "patches_with_cloud_and_shadow.csv"})
        rows = []
        for patch_id, folder in self._dirs.items():
            path = folder / f"{patch_id}_labels_metadata.json"
            try:
                meta = json.loads(path.read_text(encoding="utf-8"))
                labels_43 = list(meta["labels"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise EotwinError(f"{path} is not a BigEarthNet v1 label file: {exc}") from None
            rows.append({
                "patch_id": patch_id,
                "labels": v1_to_19(labels_43),
                "labels_43": labels_43,
                "split": splits.get(patch_id),
                "country": None,
                "contains_seasonal_snow": flags.get(patch_id) == "snow",
                "contains_cloud_or_shadow": flags.get(patch_id) == "cloud",
            })
        return pd.DataFrame(rows)

    def has_patch(self, patch_id: str) -> bool:
        return patch_id in self._dirs

    def _read_s2(self, patch_id: str, bands: Sequence[str]) -> dict[str, np.ndarray]:
        folder = self._dirs.get(patch_id)
        if folder is None:
            raise EotwinError(f"patch '{patch_id}' not found in {self.root}")
        return {band: read_tif(folder / f"{patch_id}_{band}.tif") for band in bands}


def _v1_lists(root: Path, names: dict[str, str]) -> dict[str, str]:
    """patch id -> key for the v1 side lists (one patch name per line) found in or beside ``root``."""
    found: dict[str, str] = {}
    for key, name in names.items():
        for directory in (root, root.parent):
            path = directory / name
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    patch = line.split(",")[0].strip()
                    if patch and patch != "patch_id":
                        found[patch] = key
                break
    return found
