"""Options of a point-cloud build: one validated model shared by the CLI, the demo and the DeltaTwin component."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eotwin.pointcloud.sources import DEFAULT_EXCLUDED_SCL


class BuildOptions(BaseModel):
    """Everything that decides which points a build writes (recorded in the output metadata)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dem: str
    image: tuple[str, ...] = Field(min_length=1, max_length=3)
    output: Path
    format: Literal["laz", "las", "ply", "copc"] | None = None  # default: from the output suffix (.copc.laz: copc)
    sampled_fraction: float = 1.0
    seed: int | None = 0
    grid: Literal["image", "dem"] = "image"
    z_scale: float = 1.0
    mask: str | None = None
    mask_exclude: tuple[int, ...] = DEFAULT_EXCLUDED_SCL
    stretch: Literal["fixed", "percentile"] = "fixed"
    stretch_range: tuple[float, float] = (0.0, 0.3)
    reflectance_scale: float | None = None
    reflectance_offset: float | None = None
    viewer: bool = True
    preview: bool = True
    block_rows: int = Field(256, ge=1)
    provenance: dict | None = None  # where live inputs came from (STAC items, endpoints), recorded in the metadata

    @field_validator("sampled_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not (0.0 < value <= 1.0):
            raise ValueError(f"sampled fraction must be in (0, 1], got {value}")
        return value

    @field_validator("z_scale")
    @classmethod
    def _z_scale(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"z scale must be positive, got {value}")
        return value

    @model_validator(mode="after")
    def _output_suffix(self) -> BuildOptions:
        # without --format the suffix decides: LAZ bytes in a file named .xyz mislead every tool that trusts it
        if self.format is None and self.output.suffix.lower() not in (".laz", ".las", ".ply"):
            raise ValueError(f"output {self.output.name!r} must end in .copc.laz, .laz, .las or .ply (or give --format)")
        named_copc = self.output.name.lower().endswith(".copc.laz")
        if self.format == "copc" and self.output.suffix.lower() != ".laz":
            raise ValueError(f"--format copc writes LAZ: output {self.output.name!r} must end in .copc.laz")
        if named_copc and self.format not in (None, "copc"):
            raise ValueError(f"output {self.output.name!r} is named as COPC but --format is {self.format}; "
                             "use --format copc or another name")
        return self

    @property
    def resolved_format(self) -> str:
        if self.format:
            return self.format
        if self.output.name.lower().endswith(".copc.laz"):
            return "copc"
        suffix = self.output.suffix.lower().lstrip(".")
        return suffix if suffix in ("laz", "las", "ply") else "laz"
