"""Options of ``eotwin sample``: the validated model the CLI builds and the DeltaTwin component's command offers."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class SampleOptions(BaseModel):
    """Where the sample scene goes, and which one: same size and seed, same files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Path = Path("sample")
    size: int = Field(600, ge=64, le=20000)  # pixels per side of the 10 m grid
    seed: int = 42  # of the land-cover texture and clouds
