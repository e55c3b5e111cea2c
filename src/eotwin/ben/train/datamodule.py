"""Lightning data module over the torch-free dataset core: tensors, augmentation, samplers, loaders.

The core (:class:`eotwin.ben.dataset.BenDataset`) reads and normalises patches; this module only turns
them into tensors, augments training samples, and builds the loaders. Sources are picklable (LMDB
environments reopen per worker), so ``num_workers`` > 0 and DDP need nothing special: Lightning wraps
the sampler in a distributed one when it runs on several devices.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from eotwin.ben.bands import band_stats
from eotwin.ben.dataset import BenDataset
from eotwin.ben.train.augment import Augment
from eotwin.ben.train.config import AugmentConfig, DataConfig


class TorchBenDataset(Dataset):
    """(image tensor, target tensor) pairs of a :class:`BenDataset`, augmented when ``augment`` is given."""

    def __init__(self, core: BenDataset, augment: Augment | None = None) -> None:
        self.core = core
        self.augment = augment if augment is not None and augment.active else None

    def __len__(self) -> int:
        return len(self.core)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.core[index]
        x = torch.from_numpy(image)
        if self.augment is not None:
            x = self.augment(x)
        return x, torch.from_numpy(target)


def make_augment(config: AugmentConfig, bands: tuple[str, ...], resampling: str) -> Augment | None:
    """The training augmentation of ``config`` (None when disabled)."""
    if not config.enabled:
        return None
    mean, std = band_stats(bands, resampling)  # type: ignore[arg-type]
    return Augment(dihedral=config.dihedral, brightness=config.brightness, contrast=config.contrast,
                   blur_p=config.blur_p, blur_sigma=config.blur_sigma, crop_p=config.crop_p,
                   crop_scale=config.crop_scale, band_offset=mean / std)


def open_split(config: DataConfig, split: str, *, source: Any = None, limit: int | None = None) -> BenDataset:
    """The core dataset of ``split`` (``all``: every patch, official exclusions applied unless included)."""
    dataset = BenDataset(source if source is not None else config.source, split=None if split == "all" else split,
                         bands=config.bands, resampling=config.resampling, class_order=config.class_order,
                         include_snow=config.include_snow, include_cloud=config.include_cloud,
                         metadata=config.metadata if source is None else None, skip_missing=config.skip_missing)
    limit = limit if limit is not None else config.limit
    if limit is not None and limit < len(dataset):
        unpaired = dataset.unpaired
        dataset = BenDataset(dataset.source, patch_ids=dataset.patch_ids[:limit], bands=config.bands,
                             resampling=config.resampling, class_order=config.class_order, split=dataset.split)
        dataset.unpaired = unpaired
    return dataset


def worker_context(workers: int) -> str | None:
    """Start DataLoader workers with ``spawn``: a forked worker inherits the parent's open LMDB environment,
    which LMDB forbids re-opening in the same process image, so fresh interpreters are the safe choice."""
    return "spawn" if workers > 0 else None


def rebalance_weights(targets: np.ndarray) -> np.ndarray:
    """Sampling weight per patch: the inverse frequency of its rarest class (patches with rare classes come more often)."""
    targets = np.asarray(targets) > 0.5
    freq = targets.mean(axis=0)
    inverse = np.where(freq > 0, 1.0 / np.maximum(freq, 1e-12), 0.0)
    weights = (targets * inverse[None]).max(axis=1)
    fallback = inverse[inverse > 0].min() if (inverse > 0).any() else 1.0
    return np.where(weights > 0, weights, fallback)


class BenDataModule(L.LightningDataModule):
    """Train / validation / test loaders of a :class:`DataConfig`."""

    def __init__(self, data: DataConfig, augment: AugmentConfig | None = None, seed: int = 42) -> None:
        super().__init__()
        self.config = data
        self.augment_config = augment or AugmentConfig(enabled=False)
        self.seed = seed
        self._sets: dict[str, BenDataset] = {}

    def dataset(self, role: str) -> BenDataset:
        """The core dataset of ``role`` (train, val, test), opened once."""
        split = {"train": self.config.train_split, "val": self.config.val_split, "test": self.config.test_split}[role]
        if role not in self._sets:
            shared = next(iter(self._sets.values())).source if self._sets else None
            self._sets[role] = open_split(self.config, split, source=shared)
        return self._sets[role]

    def describe(self) -> dict[str, Any]:
        return self.dataset("train").describe()

    def _loader(self, dataset: Dataset, *, train: bool) -> DataLoader:
        workers = self.config.num_workers
        batch = self.config.batch_size if train else (self.config.eval_batch_size or self.config.batch_size)
        sampler = None
        if train and self.config.sampler == "rebalance":
            weights = rebalance_weights(self.dataset("train").targets)
            generator = torch.Generator().manual_seed(self.seed)
            sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), len(weights),
                                            replacement=True, generator=generator)
        return DataLoader(dataset, batch_size=batch, shuffle=train and sampler is None, sampler=sampler,
                          num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                          drop_last=train and len(dataset) > batch, multiprocessing_context=worker_context(workers))

    def train_dataloader(self) -> DataLoader:
        core = self.dataset("train")
        return self._loader(TorchBenDataset(core, make_augment(self.augment_config, core.bands, core.resampling)),
                            train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(TorchBenDataset(self.dataset("val")), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(TorchBenDataset(self.dataset("test")), train=False)
