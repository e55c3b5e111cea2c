"""Options of the BigEarthNet data commands (info, encode, analyze): one validated model per command,
shared by the CLI, the demo and a DeltaTwin component so they never drift."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from eotwin.ben.bands import resolve_bands


class InfoOptions(BaseModel):
    """``eotwin ben info SOURCE --patch ID``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Path
    patch: str = Field(min_length=1)
    metadata: Path | None = None


class EncodeOptions(BaseModel):
    """``eotwin ben encode ROOT -o STORE``: which patches go into the store and how it is written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Path
    output: Path
    metadata: Path | None = None
    split: Literal["train", "validation", "test"] | None = None
    include_snow: bool = True
    include_cloud: bool = True
    limit: int | None = Field(None, ge=1)
    bands: tuple[str, ...] | None = None  # None: every band the source holds (S2, plus VV, VH with Sentinel-1)
    workers: int | None = Field(None, ge=1, le=256)
    batch_size: int = Field(256, ge=1)
    overwrite: bool = False
    skip_missing: bool = False  # leave out (and count) patches without their S1 partner instead of stopping

    @field_validator("bands")
    @classmethod
    def _bands(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        return resolve_bands(",".join(value)) if len(value) != 1 else resolve_bands(value[0])


class AnalyzeOptions(BaseModel):
    """``eotwin ben analyze METADATA -o REPORT``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metadata: Path
    output: Path
    snow_cloud: Path | None = None  # default: the snow/cloud parquet beside METADATA when present
    title: str = "BigEarthNet v2 label analysis"


def make_options(model: type[BaseModel], **kwargs: object) -> BaseModel:
    """Build ``model`` from plain values, with validation errors as one-line :class:`EotwinError`."""
    from eotwin.options import validated

    return validated(model, **kwargs)
