"""Torch-free dataset core: any BigEarthNet source -> (C x 120 x 120 float32, 19-dim multi-hot).

Bands may mix sensors (``all``: VV, VH and the 12 S2 bands): S1 bands come from each patch's partner,
checked once when the dataset opens (an unpaired patch is an error, or left out and counted with
``skip_missing``).

No torch import here: the training layer wraps this in a ``torch.utils.data.DataLoader`` (which takes
any object with ``__len__`` and ``__getitem__`` and collates numpy arrays), and analysis, benchmarks
or other frameworks use it directly. Band order, resampling, normalisation statistics and class order
are explicit arguments and recorded in :meth:`BenDataset.describe` so a model can store them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eotwin.ben.bands import PATCH_SIZE, Resampling, band_stats, check_mode, is_s1, resolve_bands, stack_bands
from eotwin.ben.labels import ClassOrder, class_names, multi_hot
from eotwin.ben.sources import open_source
from eotwin.ben.sources.base import BenSource
from eotwin.errors import EotwinError


class BenDataset:
    """Map-style dataset over a source's patches (official split rules: snow and cloud excluded by default);
    ``bands`` None: every band the source holds."""

    def __init__(
        self,
        source: BenSource | str | Path,
        *,
        split: str | None = None,
        bands: str | Sequence[str] | None = None,
        resampling: Resampling = "nearest",
        normalised: bool = True,
        class_order: ClassOrder = "original",
        include_snow: bool = False,
        include_cloud: bool = False,
        patch_ids: Sequence[str] | None = None,
        metadata: str | Path | None = None,
        size: int = PATCH_SIZE,
        skip_missing: bool = False,
    ) -> None:
        self.source = source if isinstance(source, BenSource) else open_source(source, metadata)
        self.bands = resolve_bands(bands) if bands is not None else self.source.default_bands()
        self.resampling = check_mode(resampling)
        self.normalised = normalised
        self.class_order = class_order
        self.classes = class_names(class_order)
        self.size = size
        mean, std = band_stats(self.bands, self.resampling)
        self._mean, self._inv_std = mean[:, None, None], (1.0 / std)[:, None, None]
        self.split = split
        if patch_ids is None:
            patch_ids = self.source.patch_ids(split=split, include_snow=include_snow, include_cloud=include_cloud)
        else:
            missing = [p for p in patch_ids if not self.source.has_patch(p)]
            if missing:
                raise EotwinError(f"{len(missing)} requested patches are not in {self.source.path} (first: {missing[0]})")
        self.unpaired: list[str] = []
        if any(is_s1(band) for band in self.bands) and patch_ids:
            patch_ids, self.unpaired = self.source.pair(list(patch_ids), skip_missing)
        self.patch_ids = list(patch_ids)
        if not self.patch_ids:
            raise EotwinError(f"no patches in {self.source.path} for split {split or 'all'}")
        self._targets = np.stack([multi_hot(self.source.record(p).labels, class_order) for p in self.patch_ids])

    def __len__(self) -> int:
        return len(self.patch_ids)

    def image(self, index: int) -> np.ndarray:
        """(C, size, size) float32 image of patch ``index``, normalised when the dataset is."""
        arrays = self.source.read(self.patch_ids[index], self.bands)
        stack = stack_bands(arrays, self.bands, self.size, self.resampling)
        if self.normalised:  # in place: same result as bands.normalise without a second array
            stack -= self._mean
            stack *= self._inv_std
        return stack

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self.image(index), self._targets[index].copy()

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for index in range(len(self)):
            yield self[index]

    @property
    def targets(self) -> np.ndarray:
        """(N, 19) float32 multi-hot matrix of every patch, read from metadata only (no image I/O)."""
        return self._targets

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Consecutive (B, C, H, W) / (B, 19) batches in dataset order (the last one may be short)."""
        if batch_size < 1:
            raise EotwinError("batch size must be at least 1")
        for start in range(0, len(self), batch_size):
            indices = range(start, min(start + batch_size, len(self)))
            yield np.stack([self.image(i) for i in indices]), self._targets[start:indices.stop].copy()

    def describe(self) -> dict[str, Any]:
        """What a model must know to read inputs the same way (stored with checkpoints)."""
        return {"bands": list(self.bands), "resampling": self.resampling, "normalised": self.normalised,
                "size": self.size, "class_order": self.class_order, "classes": list(self.classes),
                "source_kind": self.source.kind, "split": self.split, "patches": len(self),
                "unpaired_skipped": len(self.unpaired)}
