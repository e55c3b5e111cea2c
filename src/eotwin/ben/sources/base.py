"""One interface over every BigEarthNet source: patch ids, native band arrays of both sensors, records, S1 pairing.

Patches are named by their S2 id; asking for VV or VH reads the S1 partner named by ``s1_name``. A pair
is checked before it is used: the partner must exist, and its name must end with the S2 patch's tile, row
and column (true for all 480,038 rows of the published metadata), so a wrong ``s1_name`` is caught rather
than training on another place's radar image. :meth:`BenSource.pair` raises :class:`PairingError` naming
the patch, or leaves such patches out and reports them (``--skip-missing``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eotwin.ben.bands import ALL_BANDS, S2_BANDS, is_s1
from eotwin.ben.labels import CLASSES_ORIGINAL
from eotwin.ben.sources.metadata import normalise_metadata
from eotwin.errors import EotwinError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

_CLASS_INDEX = {name: i for i, name in enumerate(CLASSES_ORIGINAL)}


@dataclass(frozen=True)
class PatchRecord:
    """What the metadata says about one patch (labels in the original 19-class order)."""

    patch_id: str
    labels: tuple[str, ...]
    split: str | None = None
    country: str | None = None
    snow: bool = False
    cloud: bool = False


class PairingError(EotwinError):
    """An S2 patch whose Sentinel-1 partner is missing or misnamed (skippable with ``--skip-missing``)."""


SKIP_HINT = "use --skip-missing to leave such patches out"


class BenSource(ABC):
    """A set of BigEarthNet patches (named by their S2 id): ids, native band arrays of both sensors, metadata."""

    kind: str = "?"

    def __init__(self, path: Path, metadata: pd.DataFrame) -> None:
        self.path = Path(path)
        self.metadata = normalise_metadata(metadata)
        self._rows = {pid: i for i, pid in enumerate(self.metadata["patch_id"])}
        names = self.metadata["s1_name"] if "s1_name" in self.metadata.columns else [None] * len(self.metadata)
        self._s1_names = {pid: _none_if_missing(name) for pid, name in zip(self.metadata["patch_id"], names, strict=True)}

    def read(self, patch_id: str, bands: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Native-resolution arrays of ``bands`` in that order, dtype as stored; None: every band the source
        holds (the 12 S2 bands, and VV, VH first when it has Sentinel-1 data)."""
        wanted = tuple(bands) if bands else self.default_bands()
        s2 = [band for band in wanted if not is_s1(band)]
        s1 = [band for band in wanted if is_s1(band)]
        arrays = self._read_s2(patch_id, s2) if s2 else {}
        if s1:
            arrays.update(self._read_s1(patch_id, self.s1_partner(patch_id), s1))
        return {band: arrays[band] for band in wanted}

    @abstractmethod
    def _read_s2(self, patch_id: str, bands: Sequence[str]) -> dict[str, np.ndarray]:
        """The S2 ``bands`` of ``patch_id``."""

    def _read_s1(self, patch_id: str, s1_name: str, bands: Sequence[str]) -> dict[str, np.ndarray]:
        """The S1 ``bands`` of ``s1_name``, the checked partner of ``patch_id``."""
        raise EotwinError(f"{self.path} ({self.kind}) holds no Sentinel-1 bands")

    @abstractmethod
    def has_patch(self, patch_id: str) -> bool:
        """Whether the S2 image data of ``patch_id`` is present."""

    @property
    def has_s1(self) -> bool:
        """Whether this source holds Sentinel-1 patches at all (a folder or LMDB entries)."""
        return False

    def has_s1_data(self, s1_name: str) -> bool:
        """Whether the S1 patch ``s1_name`` is present."""
        return False

    def default_bands(self) -> tuple[str, ...]:
        return ALL_BANDS if self.has_s1 else S2_BANDS

    def s1_partner(self, patch_id: str, check_data: bool = True) -> str:
        """The S1 patch paired with ``patch_id`` by ``s1_name``, checked: it names the same tile, row and column
        and (``check_data``) its data is present; :class:`PairingError` naming the patch otherwise."""
        if not self.has_s1:
            where = "no BigEarthNet-S1 folder" if self.kind == "geotiff" else "no Sentinel-1 entries"
            raise EotwinError(f"{self.path} holds no Sentinel-1 data ({where}): choose S2 bands")
        if patch_id not in self._s1_names:
            raise EotwinError(f"patch '{patch_id}' is not in the metadata of {self.path}")
        name = self._s1_names[patch_id]
        if name is None:
            raise PairingError(f"patch '{patch_id}' has no s1_name in the metadata: no Sentinel-1 partner ({SKIP_HINT})")
        if _location(patch_id, s2=True) != _location(name, s2=False):
            raise PairingError(f"patch '{patch_id}': its s1_name '{name}' names another place "
                               f"(tile, row, col {_location(name, s2=False)} instead of {_location(patch_id, s2=True)}; "
                               f"{SKIP_HINT})")
        if check_data and not self.has_s1_data(name):
            raise PairingError(f"patch '{patch_id}': its Sentinel-1 partner '{name}' is missing from {self.path} ({SKIP_HINT})")
        return name

    def pair(self, patch_ids: Sequence[str], skip_missing: bool = False) -> tuple[list[str], list[str]]:
        """(paired, left out): every patch must have its S1 partner, else :class:`PairingError`; with
        ``skip_missing`` the unpaired ones are left out and returned so callers can count them."""
        paired: list[str] = []
        unpaired: list[str] = []
        for patch_id in patch_ids:
            try:
                self.s1_partner(patch_id)
            except PairingError:
                if not skip_missing:
                    raise
                unpaired.append(patch_id)
            else:
                paired.append(patch_id)
        return paired, unpaired

    def patch_ids(self, split: str | None = None, include_snow: bool = False, include_cloud: bool = False) -> list[str]:
        """Patch ids in metadata order, filtered like the official splits (snow and cloud excluded)."""
        frame = self.metadata
        mask = np.ones(len(frame), dtype=bool)
        if split is not None:
            if split not in ("train", "validation", "test"):
                raise EotwinError(f"unknown split '{split}': use train, validation or test")
            mask &= (frame["split"] == split).to_numpy()
        if not include_snow:
            mask &= ~frame["contains_seasonal_snow"].to_numpy(dtype=bool)
        if not include_cloud:
            mask &= ~frame["contains_cloud_or_shadow"].to_numpy(dtype=bool)
        return [pid for pid in frame["patch_id"][mask] if self.has_patch(pid)]

    def record(self, patch_id: str) -> PatchRecord:
        row = self._rows.get(patch_id)
        if row is None:
            raise EotwinError(f"patch '{patch_id}' is not in the metadata of {self.path}")
        item = self.metadata.iloc[row]
        return PatchRecord(
            patch_id=patch_id,
            labels=tuple(sorted((str(label) for label in item["labels"]), key=_CLASS_INDEX.__getitem__)),
            split=_none_if_missing(item["split"]),
            country=_none_if_missing(item["country"]),
            snow=bool(item["contains_seasonal_snow"]),
            cloud=bool(item["contains_cloud_or_shadow"]),
        )

    def close(self) -> None:
        return None

    def __enter__(self) -> BenSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {len(self.metadata)} patches in metadata)"


def _none_if_missing(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def _location(name: str, *, s2: bool) -> tuple[str, int, int] | None:
    """(tile, row, col) a patch name ends with: ``..._T33UUP_37_88`` (S2) or ``..._33UUP_37_88`` (S1)."""
    parts = name.rsplit("_", 3)
    if len(parts) != 4:
        return None
    tile = parts[1][1:] if s2 and parts[1].startswith("T") else parts[1]
    try:
        return tile, int(parts[2]), int(parts[3])
    except ValueError:
        return None
