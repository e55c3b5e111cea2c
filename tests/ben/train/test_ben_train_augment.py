"""Dihedral group properties and the augmentation's contract (shape, dtype, DN-space brightness, off at eval)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eotwin.ben.train.augment import Augment, dihedral, dihedral_compose, dihedral_inverse, gaussian_blur
from eotwin.errors import EotwinError


@pytest.fixture
def image() -> torch.Tensor:
    return torch.arange(3 * 5 * 5, dtype=torch.float32).reshape(3, 5, 5)  # no symmetry at all


def test_dihedral_elements_are_distinct(image):
    results = [dihedral(image, k) for k in range(8)]
    assert torch.equal(results[0], image)
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.equal(results[i], results[j])
        assert sorted(results[i].flatten().tolist()) == sorted(image.flatten().tolist())  # a permutation of pixels


def test_dihedral_closure_composition_and_inverse(image):
    for a in range(8):
        for b in range(8):
            c = dihedral_compose(a, b)
            assert torch.equal(dihedral(dihedral(image, b), a), dihedral(image, c)), (a, b, c)
        inv = dihedral_inverse(a)
        assert torch.equal(dihedral(dihedral(image, a), inv), image)
        assert dihedral_compose(a, inv) == 0 == dihedral_compose(inv, a)
    # four quarter turns are the identity, a mirror is its own inverse
    x = image
    for _ in range(4):
        x = dihedral(x, 1)
    assert torch.equal(x, image)
    assert torch.equal(dihedral(dihedral(image, 4), 4), image)
    with pytest.raises(EotwinError):
        dihedral(image, 8)


def test_dihedral_acts_on_spatial_dims_only():
    x = torch.randn(4, 2, 6, 6)  # batch of images
    for k in range(8):
        y = dihedral(x, k)
        assert y.shape == x.shape
        torch.testing.assert_close(y.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)))  # band means unchanged


def test_brightness_is_a_gain_on_dn():
    torch.manual_seed(0)
    mean = np.array([400.0, 600.0], dtype=np.float32)
    std = np.array([600.0, 700.0], dtype=np.float32)
    dn = torch.rand(2, 8, 8) * 3000
    x = (dn - torch.from_numpy(mean)[:, None, None]) / torch.from_numpy(std)[:, None, None]
    aug = Augment(dihedral=False, brightness=0.3, band_offset=mean / std)
    y = aug(x)
    dn_out = y * torch.from_numpy(std)[:, None, None] + torch.from_numpy(mean)[:, None, None]
    ratio = dn_out / dn
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.mean())), rtol=1e-4, atol=1e-4)
    assert 0.7 <= float(ratio.mean()) <= 1.3 and abs(float(ratio.mean()) - 1) > 1e-6


def test_full_augmentation_keeps_shape_and_dtype():
    torch.manual_seed(1)
    aug = Augment(brightness=0.1, contrast=0.2, blur_p=1.0, crop_p=1.0, band_offset=np.zeros(12))
    x = torch.randn(12, 120, 120)
    outs = [aug(x) for _ in range(5)]
    for y in outs:
        assert y.shape == (12, 120, 120) and y.dtype == torch.float32 and torch.isfinite(y).all()
    assert not all(torch.equal(outs[0], y) for y in outs[1:])  # random
    with pytest.raises(EotwinError):
        aug(torch.randn(2, 12, 120, 120))
    with pytest.raises(EotwinError):
        Augment(crop_p=2.0)


def test_blur_preserves_constant_bands_and_smooths():
    x = torch.stack([torch.full((20, 20), 3.0), torch.zeros(20, 20)])
    x[1, 10, 10] = 1.0
    y = gaussian_blur(x, 1.0)
    torch.testing.assert_close(y[0], x[0])
    assert float(y[1].max()) < 1.0 and float(y[1].sum()) == pytest.approx(1.0, rel=1e-4)


def test_augmentation_is_off_for_evaluation(ben_mock_dir):
    from eotwin.ben.dataset import BenDataset
    from eotwin.ben.train.config import AugmentConfig, DataConfig
    from eotwin.ben.train.datamodule import BenDataModule

    module = BenDataModule(DataConfig(source=ben_mock_dir, bands=("rgb",), num_workers=0),
                           AugmentConfig(enabled=True, crop_p=1.0, blur_p=1.0))
    core = BenDataset(ben_mock_dir, split="validation", bands="rgb")
    x, y = next(iter(module.val_dataloader()))
    np.testing.assert_array_equal(x[0].numpy(), core[0][0])
    np.testing.assert_array_equal(y[0].numpy(), core[0][1])
    train_x, _ = module.train_dataloader().dataset[0]
    assert train_x.shape == (3, 120, 120)
