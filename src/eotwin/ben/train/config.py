"""The training configuration: one pydantic model read from YAML, with dotted command-line overrides.

``eotwin ben train --config configs/ben/resnet50.yaml model.name=resnet26 optim.lr=3e-4`` reads the file,
applies each ``key.sub=value`` (values parsed as YAML: numbers, booleans, lists, null) and validates
the result, so a typo in a key is an error rather than a silently ignored setting. The resolved
configuration is saved beside the run and inside every checkpoint. The evaluate and predict options
live here too, shared by the CLI and any other front end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from eotwin.ben.bands import resolve_bands
from eotwin.errors import EotwinError
from eotwin.options import validation_message

SplitName = Literal["train", "validation", "test", "all"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataConfig(_Strict):
    """Which patches, which bands, how they are read and batched."""

    source: Path = Path(".eotwin-data/BENv2")  # LMDB folder, GeoTIFF folder, v1 folder or eotwin store
    metadata: Path | None = None
    bands: tuple[str, ...] = Field(("s2-10",), validate_default=True)  # resolved like a given value
    resampling: Literal["nearest", "bilinear"] = "nearest"
    class_order: Literal["original", "alphabetical"] = "original"
    train_split: SplitName = "train"
    val_split: SplitName = "validation"
    test_split: SplitName = "test"
    include_snow: bool = False
    include_cloud: bool = False
    limit: int | None = Field(None, ge=1)  # first N patches of each split (quick runs)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    num_workers: int = Field(4, ge=0)
    sampler: Literal["none", "rebalance"] = "none"
    skip_missing: bool = False  # with S1 bands: leave out (and count) patches without their S1 partner

    @field_validator("bands", mode="before")
    @classmethod
    def _bands(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            return resolve_bands(value)
        return resolve_bands(list(value)) if len(value) != 1 else resolve_bands(value[0])


class ModelConfig(_Strict):
    name: str = "resnet50"  # any timm model name
    drop_rate: float = Field(0.0, ge=0, lt=1)
    drop_path_rate: float = Field(0.0, ge=0, lt=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # extra timm.create_model arguments (e.g. patch_size)
    channels_last: bool = True  # on GPU only


class PretrainedConfig(_Strict):
    path: Path | None = None  # local .safetensors / .pth / .ckpt; none: random initialisation
    bands: tuple[str, ...] | str = "rgb"  # band order of the checkpoint: rgb, ssl4eo-s2, reben-s2, reben-s1s2, s2, all, or a list
    classes: Literal["original", "alphabetical"] | None = None  # load the head too, re-ordering its classes
    new_band_init: Literal["mean", "zero"] = "mean"

    def source_bands(self) -> tuple[str, ...]:
        from eotwin.ben.train.models import PRETRAINED_BANDS

        if isinstance(self.bands, str):
            key = self.bands.strip().lower()
            if key in PRETRAINED_BANDS:
                return PRETRAINED_BANDS[key]
            return tuple(b.strip().upper() for b in self.bands.split(",") if b.strip())
        return tuple(str(b).upper() for b in self.bands)


class FinetuneConfig(_Strict):
    mode: Literal["full", "linear", "freeze_unfreeze"] = "full"
    unfreeze_epoch: int = Field(1, ge=0)
    layer_decay: float | None = Field(None, gt=0, le=1)


class LossConfig(_Strict):
    name: Literal["bce", "focal", "asl"] = "bce"
    pos_weight: bool = True  # bce: negatives / positives per class from the train labels
    max_pos_weight: float | None = Field(100.0, gt=0)
    gamma: float = Field(2.0, ge=0)
    alpha: float | None = Field(0.25, ge=0, le=1)
    gamma_pos: float = Field(0.0, ge=0)
    gamma_neg: float = Field(4.0, ge=0)
    clip: float = Field(0.05, ge=0, lt=1)


class AugmentConfig(_Strict):
    enabled: bool = True
    dihedral: bool = True
    brightness: float = Field(0.1, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)
    blur_p: float = Field(0.1, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 1.0)
    crop_p: float = Field(0.25, ge=0, le=1)
    crop_scale: tuple[float, float] = (0.6, 1.0)


class OptimConfig(_Strict):
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["cosine", "plateau", "none"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    plateau_patience: int = Field(2, ge=0)
    plateau_factor: float = Field(0.1, gt=0, lt=1)


class TrainerConfig(_Strict):
    max_epochs: int = Field(20, ge=1)
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"  # "ddp" on several GPUs / nodes (torchrun and SLURM are detected by Lightning)
    precision: str = "auto"  # auto: bf16-mixed on a GPU that supports it, else 32-true
    seed: int = 42
    early_stopping_patience: int | None = Field(5, ge=1)
    monitor: str = "val/map_macro"
    monitor_mode: Literal["max", "min"] = "max"
    log_every_n_steps: int = Field(50, ge=1)
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = Field(1, ge=1)
    deterministic: bool = False


class ThresholdConfig(_Strict):
    tune: bool = True  # per-class thresholds maximising validation F1, stored in the checkpoint


class TrainConfig(_Strict):
    """Everything ``eotwin ben train`` needs; saved with the run and in every checkpoint."""

    name: str = "ben"
    output: Path = Path("runs/ben")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrained: PretrainedConfig = Field(default_factory=PretrainedConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    thresholds: ThresholdConfig = Field(default_factory=ThresholdConfig)
    evaluate_splits: tuple[SplitName, ...] = ("validation", "test")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.finetune.layer_decay is not None and self.finetune.mode == "linear":
            raise ValueError("finetune.layer_decay has no effect with a linear probe (mode: linear)")
        if self.finetune.mode != "full" and self.pretrained.path is None:
            raise ValueError(f"finetune.mode {self.finetune.mode} needs pretrained.path (a frozen random backbone learns nothing)")
        return self


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``key = 'a.b.c'``, creating sections as needed."""
    parts = [p for p in key.split(".") if p]
    if not parts:
        raise EotwinError(f"empty override key in '{key}'")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise EotwinError(f"override {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr=3e-4'`` -> ``('optim.lr', 0.0003)`` (the value is parsed as YAML)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise EotwinError(f"override '{text}' is not of the form section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """Validate ``data`` as ``model``; the first problem becomes a one-line :class:`EotwinError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise EotwinError(validation_message(exc, "config")) from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (or the defaults), apply ``key=value`` overrides, validate."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise EotwinError(f"{path}: no such config file")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise EotwinError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise EotwinError(f"{path}: the config must be a mapping of sections")
        data = loaded or {}
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    return validate(TrainConfig, data)


def parse_seeds(text: str) -> list[int]:
    """``'0,1,2'`` -> ``[0, 1, 2]``: distinct non-negative integers."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            seed = int(part)
        except ValueError:
            raise EotwinError(f"--seeds: '{part}' is not an integer (give a list like 0,1,2)") from None
        if seed < 0:
            raise EotwinError(f"--seeds: {seed} is negative")
        if seed in seeds:
            raise EotwinError(f"--seeds lists {seed} twice")
        seeds.append(seed)
    if not seeds:
        raise EotwinError("--seeds needs at least one seed (e.g. 0,1,2)")
    return seeds


def config_yaml(config: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


class EvaluateOptions(_Strict):
    """``eotwin ben evaluate CKPT --split test``."""

    checkpoint: Path
    split: SplitName = "test"
    source: Path | None = None  # default: the data source recorded in the checkpoint
    metadata: Path | None = None
    output: Path | None = None  # results JSON
    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(0, ge=0)
    include_snow: bool = False
    include_cloud: bool = False
    limit: int | None = Field(None, ge=1)
    device: str = "auto"


class PredictOptions(_Strict):
    """``eotwin ben predict CKPT IMAGE.tif -o OUT.tif``."""

    checkpoint: Path
    image: Path
    output: Path
    kind: Literal["probability", "labels"] = "probability"
    stride: int = Field(120, ge=1, le=120)
    bands: tuple[str, ...] | None = None  # band names of IMAGE's bands in order (default: band descriptions)
    boa_offset: float | None = None  # added to DN (default: the file's BOA_ADD_OFFSET tag, else 0)
    thresholds: Literal["tuned", "0.5"] = "tuned"
    batch_size: int = Field(64, ge=1)
    device: str = "auto"
    nodata_fraction: float = Field(0.5, ge=0, le=1)  # windows with more nodata than this are written as nodata
