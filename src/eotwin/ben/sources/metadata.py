"""BigEarthNet metadata: the parquet tables found, read and checked into the columns every source provides."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from eotwin.ben.labels import CLASSES_ORIGINAL
from eotwin.errors import EotwinError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

METADATA_NAME = "metadata.parquet"
SNOW_CLOUD_NAME = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
METADATA_COLUMNS = ("patch_id", "labels", "split", "country", "contains_seasonal_snow", "contains_cloud_or_shadow")


def normalise_metadata(frame: pd.DataFrame) -> pd.DataFrame:
    """Metadata with the columns every source provides; checks the labels are 19-class names."""
    import pandas as pd

    if "patch_id" not in frame.columns or "labels" not in frame.columns:
        raise EotwinError("metadata needs the columns 'patch_id' and 'labels'")
    frame = frame.reset_index(drop=True).copy()
    for column, default in (("split", None), ("country", None),
                            ("contains_seasonal_snow", False), ("contains_cloud_or_shadow", False)):
        if column not in frame.columns:
            frame[column] = default
    frame["contains_seasonal_snow"] = frame["contains_seasonal_snow"].fillna(False).astype(bool)
    frame["contains_cloud_or_shadow"] = frame["contains_cloud_or_shadow"].fillna(False).astype(bool)
    frame["labels"] = [list(labels) if labels is not None else [] for labels in frame["labels"]]
    known = set(CLASSES_ORIGINAL)
    unknown = {label for labels in frame["labels"] for label in labels} - known
    if unknown:
        raise EotwinError(f"metadata has labels that are not BigEarthNet 19-class names: {sorted(unknown)[:3]}")
    if frame["patch_id"].duplicated().any():
        duplicate = frame["patch_id"][frame["patch_id"].duplicated()].iloc[0]
        raise EotwinError(f"metadata lists patch '{duplicate}' twice")
    return pd.DataFrame(frame)


def read_metadata(path: Path, snow_cloud: Path | None = None) -> pd.DataFrame:
    """``metadata.parquet`` (plus the snow/cloud parquet when given) as one frame."""
    import pandas as pd

    frames = []
    for file in (path, snow_cloud):
        if file is None:
            continue
        try:
            frames.append(pd.read_parquet(file))
        except FileNotFoundError:
            raise EotwinError(f"metadata file {file} not found") from None
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise EotwinError(f"cannot read metadata {file}: {type(exc).__name__}: {exc}") from None
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if frames[0].empty:  # every later step would report a missing patch instead of the empty table
        raise EotwinError(f"metadata {path} has no rows (no patches)")
    return normalise_metadata(frame)


def find_metadata(*directories: Path, explicit: Path | None = None) -> tuple[Path, Path | None]:
    """The metadata parquet (explicit, or the first found in ``directories``) and its snow/cloud sibling."""
    if explicit is not None:
        explicit = Path(explicit)
        if not explicit.is_file():
            raise EotwinError(f"metadata file {explicit} not found")
        sibling = explicit.parent / SNOW_CLOUD_NAME
        return explicit, sibling if sibling.is_file() else None
    for directory in directories:
        candidate = Path(directory) / METADATA_NAME
        if candidate.is_file():
            sibling = Path(directory) / SNOW_CLOUD_NAME
            return candidate, sibling if sibling.is_file() else None
    names = ", ".join(str(d) for d in directories)
    raise EotwinError(f"no {METADATA_NAME} found in {names}: pass --metadata")
