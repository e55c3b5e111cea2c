"""Pretrained weights through the real loading code: band adaptation, wrapper prefixes, head re-ordering.

The checkpoints are saved by the tests themselves (no download): tiny timm models stand in for the
ImageNet / SSL4EO / reBEN architectures, the file formats and key layouts are the real ones.
"""

from __future__ import annotations

import pytest
import torch

from eotwin.ben.labels import CLASSES_ALPHABETICAL, CLASSES_ORIGINAL
from eotwin.ben.train.models import (
    PRETRAINED_BANDS,
    adapt_first_conv,
    build_model,
    first_conv_name,
    load_pretrained,
    read_checkpoint,
)
from eotwin.errors import EotwinError

S2_10 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def test_adapt_first_conv_keeps_shared_bands():
    w = torch.randn(8, 3, 3, 3)  # filters over R, G, B
    out = adapt_first_conv(w, ("B04", "B03", "B02"), ("B02", "B03", "B04", "B08"))
    assert out.shape == (8, 4, 3, 3)
    torch.testing.assert_close(out[:, 0], w[:, 2])  # B02 = blue
    torch.testing.assert_close(out[:, 1], w[:, 1])
    torch.testing.assert_close(out[:, 2], w[:, 0])  # B04 = red
    torch.testing.assert_close(out[:, 3], w.mean(dim=1))  # new band: mean filter
    assert torch.count_nonzero(adapt_first_conv(w, ("B04", "B03", "B02"), ("B08",), "zero")) == 0
    with pytest.raises(EotwinError):
        adapt_first_conv(w, ("B04", "B03"), ("B02",))


def test_imagenet_safetensors_into_s2_model(tmp_path):
    from safetensors.torch import save_file

    source = build_model("test_resnet", in_chans=3, num_classes=1000)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = build_model("test_resnet", in_chans=len(S2_10), num_classes=19)
    report = load_pretrained(target, path, source_bands=PRETRAINED_BANDS["rgb"], target_bands=S2_10)
    conv = first_conv_name(target)
    w_src = source.state_dict()[f"{conv}.weight"]
    w_dst = target.state_dict()[f"{conv}.weight"]
    for band, src_index in (("B04", 0), ("B03", 1), ("B02", 2)):
        torch.testing.assert_close(w_dst[:, S2_10.index(band)], w_src[:, src_index])
    torch.testing.assert_close(w_dst[:, S2_10.index("B08")], w_src.mean(dim=1))
    assert report.kept_bands == ["B02", "B03", "B04"] and len(report.new_bands) == 7
    assert not report.head_loaded  # 1000 ImageNet classes: the head stays new
    for key, value in source.state_dict().items():
        if key != f"{conv}.weight" and not key.startswith("fc."):
            torch.testing.assert_close(target.state_dict()[key], value)


def test_ssl4eo_style_lightning_checkpoint(tmp_path):
    # torchgeo SSL4EO-S12 weights: 13 bands (B10 included), saved here inside a Lightning-like wrapper
    source = build_model("test_resnet", in_chans=13, num_classes=0)
    path = tmp_path / "ssl4eo.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in source.state_dict().items()}, "epoch": 99}, path)
    target = build_model("test_resnet", in_chans=12, num_classes=19)
    bands = PRETRAINED_BANDS["s2"]
    report = load_pretrained(target, path, source_bands=PRETRAINED_BANDS["ssl4eo-s2"], target_bands=bands)
    assert report.prefix == "backbone."
    conv = f"{first_conv_name(target)}.weight"
    src = source.state_dict()[conv]
    ssl = PRETRAINED_BANDS["ssl4eo-s2"]
    for i, band in enumerate(bands):  # all 12 BigEarthNet bands exist in SSL4EO: every filter kept, B10 dropped
        torch.testing.assert_close(target.state_dict()[conv][:, i], src[:, ssl.index(band)])
    assert report.new_bands == []


def test_reben_style_checkpoint_reorders_head(tmp_path):
    from safetensors.torch import save_file

    # reBEN / ConfigILM: timm model under model.vision_encoder., 19 classes in alphabetical order
    source = build_model("test_resnet", in_chans=10, num_classes=19)
    path = tmp_path / "reben.safetensors"
    save_file({f"model.vision_encoder.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = build_model("test_resnet", in_chans=4, num_classes=19)
    report = load_pretrained(target, path, source_bands=PRETRAINED_BANDS["reben-s2"], target_bands=("B02", "B03", "B04", "B08"),
                             source_classes=CLASSES_ALPHABETICAL, target_classes=CLASSES_ORIGINAL)
    assert report.head_loaded and report.prefix == "model.vision_encoder."
    for i, name in enumerate(CLASSES_ORIGINAL):
        j = CLASSES_ALPHABETICAL.index(name)
        torch.testing.assert_close(target.fc.weight[i], source.fc.weight[j])
        torch.testing.assert_close(target.fc.bias[i], source.fc.bias[j])
    x = torch.randn(2, 10, 120, 120)
    source.eval()
    target.eval()
    # identical inputs on the 4 shared bands, zeros elsewhere: same logits up to the class permutation
    shared = torch.zeros_like(x)
    idx = [PRETRAINED_BANDS["reben-s2"].index(b) for b in ("B02", "B03", "B04", "B08")]
    shared[:, idx] = x[:, idx]
    order = [CLASSES_ALPHABETICAL.index(n) for n in CLASSES_ORIGINAL]
    torch.testing.assert_close(target(shared[:, idx]), source(shared)[:, order], rtol=1e-4, atol=1e-4)


def test_vit_for_120px_and_patch_resampling(tmp_path):
    source = build_model("test_vit", in_chans=3, num_classes=0, img_size=224)  # 16 px patches, 14 x 14 tokens
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    target = build_model("test_vit", in_chans=4, num_classes=19, img_size=120, patch_size=8)
    assert target.patch_embed.grid_size == (15, 15)
    report = load_pretrained(target, path, source_bands=PRETRAINED_BANDS["rgb"], target_bands=("B02", "B03", "B04", "B08"))
    assert report.kept_bands == ["B02", "B03", "B04"]
    assert "pos_embed" not in report.missing and "patch_embed.proj.weight" not in report.missing
    assert target(torch.randn(1, 4, 120, 120)).shape == (1, 19)


def test_bad_weight_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    model = build_model("test_resnet", in_chans=3, num_classes=19)
    with pytest.raises(EotwinError, match="not a readable weight file"):
        read_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(EotwinError, match="no such weight file"):
        read_checkpoint(tmp_path / "missing.safetensors")
    other = build_model("test_vit", in_chans=3, num_classes=19, img_size=120)
    torch.save(other.state_dict(), tmp_path / "vit.pth")
    with pytest.raises(EotwinError):
        load_pretrained(model, tmp_path / "vit.pth", source_bands=PRETRAINED_BANDS["rgb"], target_bands=("B04", "B03", "B02"))
    with pytest.raises(EotwinError, match="unknown timm model"):
        build_model("resnet_does_not_exist", in_chans=3)
