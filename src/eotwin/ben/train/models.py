"""timm models for BigEarthNet and pretrained weights from a local file, adapted to the chosen bands.

Any timm architecture works (resnet50, resnet26, a ViT built for 120 px inputs, ...): ``in_chans`` is the
number of selected bands and ``num_classes`` 19; ViT-like models get ``img_size`` = the patch size so
their position embeddings fit 120 x 120 inputs (patch 8 -> 15 x 15 tokens, patch 10 -> 12 x 12).

Pretrained weights are read from a local file (no download): timm / Hugging Face ``.safetensors``,
``.pth`` / ``.pt`` / ``.bin`` state dicts, torchgeo SSL4EO-S12 checkpoints (13 Sentinel-2 bands), reBEN /
ConfigILM checkpoints (keys under ``model.vision_encoder.``, classes in alphabetical order) and our own
Lightning checkpoints. Wrappers' key prefixes are found by matching against the model's own keys.

The first convolution is adapted band by band, from the bands the checkpoint was trained on to the
bands selected now: a band present in both keeps its filter exactly, a new band gets the mean of the
checkpoint's filters (or zeros), a band not selected is dropped. A 3-band ImageNet model thus keeps
its RGB filters on B04 / B03 / B02 and learns the other bands from a sensible start.

Adding Sentinel-1 to an S2 checkpoint (``pretrained.bands: s2`` or ``reben-s2``, ``data.bands: all``) works
the same way: every S2 filter is kept exactly and VV / VH are new channels. ``new_band_init: mean`` (the
default) gives each of them the mean of the checkpoint's filters over all its bands (unscaled); ``zero``
starts them at zero, so the adapted model initially computes exactly what the S2 model did and the radar
channels are learned from there. Inputs are normalised per band (S1 in dB with ConfigILM's statistics), so
a mean filter sees inputs of the same scale as the pretrained ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from eotwin.ben.bands import BAND_SETS
from eotwin.errors import EotwinError
from eotwin.sentinel2.bands import S2_BANDS as L1C_BANDS
from eotwin.sentinel2.bands import TCI_BANDS

#: Band order of well-known checkpoints (the input channels of their first convolution).
PRETRAINED_BANDS: dict[str, tuple[str, ...]] = {
    # ImageNet timm / HF models take RGB: red, green, blue
    "rgb": TCI_BANDS,
    # torchgeo SSL4EO-S12 Sentinel-2 L1C/L2A weights: all 13 bands in ESA order (B10 included)
    "ssl4eo-s2": L1C_BANDS,
    # reBEN / ConfigILM S2 models: the 10 m and 20 m bands (ConfigILM STANDARD_BANDS['10m_20m'])
    "reben-s2": BAND_SETS["s2-10"],
    # reBEN S1+S2 models: VV, VH, then the 10 m and 20 m S2 bands (ConfigILM STANDARD_BANDS[12])
    "reben-s1s2": BAND_SETS["s1-s2-10"],
    # all 12 BigEarthNet S2 bands in ESA order (ConfigILM 'S2', our 's2')
    "s2": BAND_SETS["s2"],
    # VV, VH then the 12 S2 bands (ConfigILM 'ALL' / 14 channels, our 'all')
    "all": BAND_SETS["all"],
}
_VIT_MODULES = ("vision_transformer", "deit", "beit", "eva", "vision_transformer_hybrid", "vision_transformer_relpos",
                "vision_transformer_sam", "xcit", "cait", "swin_transformer", "swin_transformer_v2", "hiera")
NewBandInit = Literal["mean", "zero"]


def takes_img_size(name: str) -> bool:
    """Whether ``name`` is a transformer whose position embeddings depend on the input size."""
    import timm

    if not timm.is_model(name):
        raise EotwinError(f"unknown timm model '{name}' (see timm.list_models())")
    module = timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
    return module in _VIT_MODULES


def build_model(name: str, in_chans: int, num_classes: int = 19, *, img_size: int = 120,
                drop_rate: float = 0.0, drop_path_rate: float = 0.0, **kwargs: Any) -> nn.Module:
    """A randomly initialised timm model for (in_chans, img_size, img_size) inputs and ``num_classes`` logits."""
    import timm

    options: dict[str, Any] = {"in_chans": in_chans, "num_classes": num_classes, "drop_rate": drop_rate, **kwargs}
    if drop_path_rate:
        options["drop_path_rate"] = drop_path_rate
    if takes_img_size(name):
        options.setdefault("img_size", img_size)
    try:
        return timm.create_model(name, pretrained=False, **options)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EotwinError(f"cannot build timm model '{name}' with {options}: {first}") from None


def first_conv_name(model: nn.Module) -> str:
    """Dotted name of the first convolution (from timm's pretrained_cfg, else the first Conv2d)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = dict(model.named_modules())
    candidate = cfg.get("first_conv")
    if isinstance(candidate, str) and isinstance(names.get(candidate), nn.Conv2d):
        return candidate
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return module_name
    raise EotwinError(f"{type(model).__name__} has no Conv2d to adapt to the selected bands")


def classifier_prefix(model: nn.Module) -> str:
    """Dotted name of the classifier head (timm's ``pretrained_cfg['classifier']``)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("classifier")
    if isinstance(name, str):
        return name
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        for module_name, module in model.named_modules():
            if module is head:
                return module_name
    raise EotwinError(f"cannot find the classifier of {type(model).__name__}")


def adapt_first_conv(weight: torch.Tensor, source_bands: Sequence[str], target_bands: Sequence[str],
                     new_band_init: NewBandInit = "mean") -> torch.Tensor:
    """(O, len(target), kh, kw) filters from (O, len(source), kh, kw): shared bands copied, new ones initialised."""
    if weight.ndim != 4:
        raise EotwinError(f"first convolution weight must be 4-D, got shape {tuple(weight.shape)}")
    if weight.shape[1] != len(source_bands):
        raise EotwinError(f"the checkpoint's first convolution has {weight.shape[1]} input channels but "
                          f"{len(source_bands)} pretrained bands are given ({', '.join(source_bands)})")
    index = {band: i for i, band in enumerate(source_bands)}
    fill = weight.mean(dim=1) if new_band_init == "mean" else torch.zeros_like(weight[:, 0])
    channels = [weight[:, index[band]] if band in index else fill for band in target_bands]
    return torch.stack(channels, dim=1).clone()


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors of a weight file (safetensors, torch state dict or Lightning checkpoint) and its extra metadata."""
    path = Path(path)
    if not path.is_file():
        raise EotwinError(f"{path}: no such weight file")
    meta: dict[str, Any] = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), framework="pt") as handle:
                meta = dict(handle.metadata() or {})
            return load_file(str(path)), meta
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except EotwinError:
        raise
    except Exception as exc:  # any unreadable file is a user error, said in one line
        raise EotwinError(f"{path}: not a readable weight file ({error_detail(exc)}; expected .safetensors or a "
                          "torch state dict / checkpoint)") from None
    if isinstance(payload, Mapping):
        if isinstance(payload.get("hyper_parameters"), Mapping):
            meta = dict(payload["hyper_parameters"])
        for key in ("state_dict", "model", "module", "teacher", "student"):
            inner = payload.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                payload = inner
                break
    if not isinstance(payload, Mapping):
        raise EotwinError(f"{path}: holds no state dict")
    tensors = {str(k): v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise EotwinError(f"{path}: holds no tensors")
    return tensors, meta


def error_detail(exc: BaseException) -> str:
    """A short, readable reason from an exception (its type when the message is only a code)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:160] if any(c.isalpha() for c in text) else type(exc).__name__


def strip_prefix(state: Mapping[str, torch.Tensor], model_keys: set[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Remove the wrapper prefix (``module.``, ``model.vision_encoder.``, ``backbone.``...) matching most model keys."""
    counts: dict[str, int] = {}
    for key in state:
        parts = key.split(".")
        for depth in range(0, min(len(parts) - 1, 4)):
            prefix = ".".join(parts[:depth]) + ("." if depth else "")
            if key[len(prefix):] in model_keys:
                counts[prefix] = counts.get(prefix, 0) + 1
    if not counts:
        raise EotwinError("no tensor of the weight file matches the model (wrong architecture?)")
    best = max(counts, key=lambda p: (counts[p], -len(p)))
    return {k[len(best):]: v for k, v in state.items() if k.startswith(best)}, best


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did, for the log and the results JSON."""

    path: str
    prefix: str
    loaded: int
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    first_conv: str = ""
    kept_bands: list[str] = field(default_factory=list)
    new_bands: list[str] = field(default_factory=list)
    head_loaded: bool = False

    def summary(self) -> str:
        return (f"{self.loaded} tensors from {Path(self.path).name} (prefix '{self.prefix}'); first conv kept "
                f"{len(self.kept_bands)} band filters ({','.join(self.kept_bands) or 'none'}), initialised "
                f"{len(self.new_bands)} ({','.join(self.new_bands) or 'none'}); head "
                f"{'loaded' if self.head_loaded else 'new'}; {len(self.missing)} model tensors left at init")


def load_pretrained(model: nn.Module, path: str | Path, *, source_bands: Sequence[str], target_bands: Sequence[str],
                    source_classes: Sequence[str] | None = None, target_classes: Sequence[str] | None = None,
                    new_band_init: NewBandInit = "mean") -> LoadReport:
    """Load a local weight file into ``model``, adapting the first conv to ``target_bands``.

    The classifier is loaded only when ``source_classes`` is given and holds every target class (rows are
    then re-ordered, e.g. from ConfigILM's alphabetical order to ours); otherwise it stays freshly initialised.
    """
    state, _meta = read_checkpoint(path)
    own = model.state_dict()
    state, prefix = strip_prefix(state, set(own))
    conv = first_conv_name(model)
    conv_key = f"{conv}.weight"
    report = LoadReport(path=str(path), prefix=prefix, loaded=0, first_conv=conv)
    if conv_key in state:
        state[conv_key] = adapt_first_conv(state[conv_key], source_bands, target_bands, new_band_init)
        report.kept_bands = [b for b in target_bands if b in source_bands]
        report.new_bands = [b for b in target_bands if b not in source_bands]
    head = classifier_prefix(model)
    head_keys = [k for k in state if k == head or k.startswith(head + ".")]
    if source_classes is not None and target_classes is not None and head_keys:
        missing_classes = [c for c in target_classes if c not in source_classes]
        if missing_classes:
            raise EotwinError(f"the checkpoint's classes lack {missing_classes[0]!r}")
        rows = torch.tensor([list(source_classes).index(c) for c in target_classes])
        for key in head_keys:
            if state[key].shape[0] != len(source_classes):
                raise EotwinError(f"checkpoint head {key} has {state[key].shape[0]} outputs, "
                                  f"not the {len(source_classes)} classes given")
            state[key] = state[key][rows]
        report.head_loaded = True
    else:
        for key in head_keys:
            state.pop(key)
    if "pos_embed" in own or any(k.startswith("patch_embed.") for k in own):
        state = _vit_filter(state, model)
    accepted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in own and own[key].shape == value.shape:
            accepted[key] = value.to(own[key].dtype)
        else:
            report.skipped.append(key)
    if conv_key in state and conv_key not in accepted:
        raise EotwinError(f"first convolution {conv_key}: checkpoint shape {tuple(state[conv_key].shape)} "
                          f"does not fit the model's {tuple(own[conv_key].shape)}")
    model.load_state_dict(accepted, strict=False)
    report.loaded = len(accepted)
    report.missing = sorted(set(own) - set(accepted))
    if report.loaded < len(own) // 2:
        raise EotwinError(f"{Path(path).name}: only {report.loaded} of {len(own)} tensors fit the model "
                          "(wrong architecture for this weight file?)")
    return report


def _vit_filter(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Resample ViT position embeddings and patch kernels to this model's grid (timm's own converter)."""
    try:
        from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
    except ImportError:  # pragma: no cover
        return state
    if not isinstance(model, VisionTransformer):
        return state
    return checkpoint_filter_fn(state, model)
