"""Readers for BigEarthNet as it is published, and for our store, behind one small interface.

* ``geotiff``: reBEN's ``BigEarthNet-S2/<tile>/<patch>/<patch>_<band>.tif`` and
  ``BigEarthNet-S1/<product>/<s1 patch>/<s1 patch>_<VV|VH>.tif`` plus ``metadata.parquet``
  (and ``metadata_for_patches_with_snow_cloud_or_shadow.parquet`` when present).
* ``lmdb``: the rico-hdl encoder's LMDB (the format ConfigILM reads): key = patch id, value = a
  safetensors dict ``{band: array}``: S2 patches (uint16 at native resolution) under their S2 id, S1 patches
  (VV, VH float32 dB at 120 px) under their S1 name; both share the database.
* ``v1``: BigEarthNet v1 patch folders ``<patch>/<patch>_<band>.tif`` with ``<patch>_labels_metadata.json``
  (43 CORINE labels, mapped to the 19 classes); official split CSVs are used when found beside them.
* ``store``: our training store (see :mod:`eotwin.ben.store`), an LMDB in the rico-hdl layout plus
  ``metadata.parquet`` and a manifest.

Every source returns native-resolution arrays with the dtype on disk, so the same patch reads
identically from all of them; resampling and normalisation happen later (:mod:`eotwin.ben.bands`).

Patches are named by their S2 id; asking for VV or VH reads the S1 partner named by ``s1_name``. A pair
is checked before it is used: the partner must exist, and its name must end with the S2 patch's tile, row
and column (true for all 480,038 rows of the published metadata), so a wrong ``s1_name`` is caught rather
than training on another place's radar image. :meth:`BenSource.pair` raises :class:`PairingError` naming
the patch, or leaves such patches out and reports them (``--skip-missing``).
"""

from __future__ import annotations

import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eotwin.ben.bands import ALL_BANDS, S2_BANDS, is_s1
from eotwin.ben.labels import CLASSES_ORIGINAL, v1_to_19
from eotwin.errors import EotwinError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

METADATA_NAME = "metadata.parquet"
SNOW_CLOUD_NAME = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
MANIFEST_NAME = "eotwin_store.json"
STORE_FORMAT = "eotwin-ben-store"
_CLASS_INDEX = {name: i for i, name in enumerate(CLASSES_ORIGINAL)}
METADATA_COLUMNS = ("patch_id", "labels", "split", "country", "contains_seasonal_snow", "contains_cloud_or_shadow")


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


def s1_product_of(s1_name: str) -> str:
    """reBEN S1 product folder of an S1 patch: the name without its trailing ``_<tile>_<row>_<col>``."""
    parts = s1_name.rsplit("_", 3)
    if len(parts) != 4:
        raise EotwinError(f"'{s1_name}' is not a BigEarthNet v2 S1 patch name (<product>_<tile>_<row>_<col>)")
    return parts[0]


# --------------------------------------------------------------------------- metadata

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


# --------------------------------------------------------------------------- GeoTIFF (v2)

def _read_tif(path: Path) -> np.ndarray:
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as dataset:
            return dataset.read(1)
    except RasterioIOError as exc:
        if not path.exists():
            raise EotwinError(f"band file {path} not found") from None
        raise EotwinError(f"cannot read {path}: {exc}") from None


def tile_of(patch_id: str) -> str:
    """reBEN tile folder of a patch: the id without its trailing ``_<row>_<col>``."""
    parts = patch_id.rsplit("_", 2)
    if len(parts) != 3:
        raise EotwinError(f"'{patch_id}' is not a BigEarthNet v2 patch id (<tile product>_<row>_<col>)")
    return parts[0]


class GeoTiffSource(BenSource):
    """reBEN ``BigEarthNet-S2/<tile>/<patch>/<patch>_<band>.tif`` folders, with the ``BigEarthNet-S1`` ones beside."""

    kind = "geotiff"

    def __init__(self, root: Path, metadata: Path | None = None) -> None:
        root = Path(root)
        self.s2_root = root / "BigEarthNet-S2" if (root / "BigEarthNet-S2").is_dir() else root
        self.s1_root = root / "BigEarthNet-S1"
        meta, snow_cloud = find_metadata(root, root.parent, explicit=metadata)
        super().__init__(root, read_metadata(meta, snow_cloud))

    def patch_dir(self, patch_id: str) -> Path:
        return self.s2_root / tile_of(patch_id) / patch_id

    def s1_dir(self, s1_name: str) -> Path:
        return self.s1_root / s1_product_of(s1_name) / s1_name

    def has_patch(self, patch_id: str) -> bool:
        return self.patch_dir(patch_id).is_dir()

    @property
    def has_s1(self) -> bool:
        return self.s1_root.is_dir()

    def has_s1_data(self, s1_name: str) -> bool:
        return self.s1_dir(s1_name).is_dir()

    def _read_s2(self, patch_id: str, bands: Sequence[str]) -> dict[str, np.ndarray]:
        folder = self.patch_dir(patch_id)
        if not folder.is_dir():
            raise EotwinError(f"patch '{patch_id}' not found: no folder {folder}")
        return {band: _read_tif(folder / f"{patch_id}_{band}.tif") for band in bands}

    def _read_s1(self, patch_id: str, s1_name: str, bands: Sequence[str]) -> dict[str, np.ndarray]:
        folder = self.s1_dir(s1_name)
        return {band: _read_tif(folder / f"{s1_name}_{band}.tif") for band in bands}


# --------------------------------------------------------------------------- LMDB (rico-hdl / ConfigILM) and our store

class LmdbSource(BenSource):
    """rico-hdl LMDB: key = patch id (ASCII), value = safetensors ``{band: array}``."""

    kind = "lmdb"

    def __init__(self, env_dir: Path, metadata: Path | None = None, frame: pd.DataFrame | None = None) -> None:
        self.env_dir = Path(env_dir)
        if not (self.env_dir / "data.mdb").is_file():
            raise EotwinError(f"{self.env_dir} is not an LMDB directory (no data.mdb)")
        if frame is None:
            meta, snow_cloud = find_metadata(self.env_dir, self.env_dir.parent, explicit=metadata)
            frame = read_metadata(meta, snow_cloud)
        super().__init__(self.env_dir, frame)
        self._env = None
        self._pid = -1
        self._keys: set[str] | None = None
        self._has_s1: bool | None = None

    def _txn(self):
        if self._env is None or self._pid != os.getpid():  # one environment per process (DataLoader workers fork)
            self._env = _acquire_env(self.env_dir)
            self._pid = os.getpid()
        return self._env.begin(write=False, buffers=True)

    def keys(self) -> set[str]:
        if self._keys is None:
            with self._txn() as txn:
                self._keys = {bytes(key).decode() for key in txn.cursor().iternext(keys=True, values=False)}
        return self._keys

    def has_patch(self, patch_id: str) -> bool:
        return patch_id in self.keys()

    @property
    def has_s1(self) -> bool:
        """Any S1 partner named in the metadata is in the database (reBEN's LMDB holds both sensors)."""
        if self._has_s1 is None:
            keys = self.keys()
            self._has_s1 = any(name is not None and name in keys for name in self._s1_names.values())
        return self._has_s1

    def has_s1_data(self, s1_name: str) -> bool:
        return s1_name in self.keys()

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers: each process opens its own env
        state = self.__dict__.copy()
        state.update(_env=None, _pid=-1)
        return state

    def raw(self, patch_id: str) -> bytes:
        """The stored safetensors bytes of a patch (what the store copies without decoding)."""
        with self._txn() as txn:
            value = txn.get(patch_id.encode())
            if value is None:
                raise EotwinError(f"patch '{patch_id}' is not in {self.env_dir}")
            return bytes(value)

    def _read_s2(self, patch_id: str, bands: Sequence[str]) -> dict[str, np.ndarray]:
        return decode_patch(self.raw(patch_id), patch_id, str(self.env_dir), bands)

    def _read_s1(self, patch_id: str, s1_name: str, bands: Sequence[str]) -> dict[str, np.ndarray]:
        return decode_patch(self.raw(s1_name), s1_name, str(self.env_dir), bands)

    def close(self) -> None:
        if self._env is not None and self._pid == os.getpid():
            _release_env(self.env_dir)
        self._env = None


def decode_patch(data: bytes, patch_id: str, where: str, bands: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The bands of one stored patch (safetensors bytes), checked: an entry of another shape or dtype would
    otherwise fail deep inside resampling or a DataLoader worker, far from the file that holds it."""
    from safetensors.numpy import load

    from eotwin.ben.bands import NATIVE_SIZE

    try:
        arrays = load(bytes(data))
    except Exception as exc:  # safetensors raises its own error types (and ValueError/OverflowError) on bad bytes
        raise EotwinError(f"patch '{patch_id}' in {where} is not valid safetensors: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from None
    wanted = bands or S2_BANDS
    missing = [band for band in wanted if band not in arrays]
    if missing:
        raise EotwinError(f"patch '{patch_id}' in {where} lacks band(s) {', '.join(missing)}")
    for band in wanted:
        array = arrays[band]
        size = NATIVE_SIZE.get(band, 120)
        if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] not in (size, 120):
            sizes = f"({size}, {size})" + (" or (120, 120)" if size != 120 else "")
            raise EotwinError(f"patch '{patch_id}' in {where}: band {band} has shape {array.shape}, expected {sizes}")
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise EotwinError(f"patch '{patch_id}' in {where}: band {band} has dtype {array.dtype}, expected numbers")
    return {band: arrays[band] for band in wanted}


# LMDB allows one environment per path and process, so readers of the same database share it.
_ENVS: dict[tuple[str, int], list] = {}
_ENVS_LOCK = threading.Lock()


LMDB_MAGIC = 0xBEEFC0DE


def check_lmdb_file(env_dir: Path) -> None:
    """Refuse a ``data.mdb`` shorter than its own meta pages say: LMDB maps the file and reading a page past
    its end kills the interpreter with SIGBUS (a truncated copy or download) instead of raising."""
    import struct

    path = Path(env_dir) / "data.mdb"
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(2 * 65536)
    except OSError as exc:
        raise EotwinError(f"cannot read LMDB {path}: {exc.strerror or exc}") from None
    metas = []
    page_size = struct.unpack_from("<I", head, 40)[0] if len(head) >= 44 else 0  # the free DB's md_pad: page size
    for offset in (0, page_size):  # meta pages 0 and 1; the one with the later transaction is current
        if not 0 <= offset <= len(head) - 152:
            continue
        magic, _version = struct.unpack_from("<II", head, offset + 16)
        if magic == LMDB_MAGIC:
            last_page, txn = struct.unpack_from("<QQ", head, offset + 136)
            metas.append((txn, last_page))
    if not metas:
        raise EotwinError(f"{path}: not an LMDB database (no meta page)")
    _txn, last_page = max(metas)
    if not 512 <= page_size <= 65536 or (last_page + 1) * page_size > size:
        raise EotwinError(f"{path}: truncated or corrupt LMDB ({size:,} bytes; its meta page needs "
                          f"{(last_page + 1) * page_size:,})")


def _acquire_env(env_dir: Path):
    import lmdb

    key = (str(Path(env_dir).resolve()), os.getpid())
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            check_lmdb_file(Path(key[0]))
            try:
                env = lmdb.open(key[0], readonly=True, lock=False, readahead=False, meminit=False,
                                max_readers=256, subdir=True)
            except lmdb.Error as exc:
                raise EotwinError(f"cannot open LMDB {env_dir}: {exc}") from None
            entry = _ENVS[key] = [env, 0]
        entry[1] += 1
        return entry[0]


def _release_env(env_dir: Path) -> None:
    key = (str(Path(env_dir).resolve()), os.getpid())
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                entry[0].close()
                del _ENVS[key]


class StoreSource(LmdbSource):
    """Our training store: an LMDB in the rico-hdl layout with its own metadata and manifest."""

    kind = "store"

    def __init__(self, store_dir: Path, allow_incomplete: bool = False) -> None:
        store_dir = Path(store_dir)
        self.manifest = read_manifest(store_dir)
        if not self.manifest.get("complete") and not allow_incomplete:
            raise EotwinError(f"store {store_dir} is incomplete ({self.manifest.get('written', 0)} of "
                              f"{self.manifest.get('patches', '?')} patches): rerun `eotwin ben encode` to resume it")
        super().__init__(store_dir, frame=read_metadata(store_dir / METADATA_NAME))


def read_manifest(store_dir: Path) -> dict[str, Any]:
    path = Path(store_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EotwinError(f"{store_dir} is not an eotwin BigEarthNet store (no {MANIFEST_NAME})") from None
    except json.JSONDecodeError as exc:
        raise EotwinError(f"{path} is not valid JSON: {exc.msg}") from None
    if manifest.get("format") != STORE_FORMAT:
        raise EotwinError(f"{path} is not an eotwin BigEarthNet store manifest")
    return manifest


# --------------------------------------------------------------------------- BigEarthNet v1

class V1Source(BenSource):
    """BigEarthNet v1 patch folders; labels from ``<patch>_labels_metadata.json``, mapped 43 -> 19."""

    kind = "v1"

    def __init__(self, root: Path) -> None:
        root = Path(root)
        self.root = root
        self._dirs = {p.name: p for p in sorted(root.iterdir()) if (p / f"{p.name}_labels_metadata.json").is_file()}
        if not self._dirs:
            raise EotwinError(f"{root} holds no BigEarthNet v1 patch folders (<patch>/<patch>_labels_metadata.json)")
        super().__init__(root, self._build_metadata())

    def _build_metadata(self) -> pd.DataFrame:
        import pandas as pd

        splits = _v1_lists(self.root, {"train": "train.csv", "validation": "val.csv", "test": "test.csv"})
        flags = _v1_lists(self.root, {"snow": "patches_with_seasonal_snow.csv", "cloud": "patches_with_cloud_and_shadow.csv"})
        rows = []
        for patch_id, folder in self._dirs.items():
            path = folder / f"{patch_id}_labels_metadata.json"
            try:
                meta = json.loads(path.read_text(encoding="utf-8"))
                labels_43 = list(meta["labels"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise EotwinError(f"{path} is not a BigEarthNet v1 label file: {exc}") from None
            rows.append({
                "patch_id": patch_id,
                "labels": v1_to_19(labels_43),
                "labels_43": labels_43,
                "split": splits.get(patch_id),
                "country": None,
                "contains_seasonal_snow": flags.get(patch_id) == "snow",
                "contains_cloud_or_shadow": flags.get(patch_id) == "cloud",
            })
        return pd.DataFrame(rows)

    def has_patch(self, patch_id: str) -> bool:
        return patch_id in self._dirs

    def _read_s2(self, patch_id: str, bands: Sequence[str]) -> dict[str, np.ndarray]:
        folder = self._dirs.get(patch_id)
        if folder is None:
            raise EotwinError(f"patch '{patch_id}' not found in {self.root}")
        return {band: _read_tif(folder / f"{patch_id}_{band}.tif") for band in bands}


def _v1_lists(root: Path, names: dict[str, str]) -> dict[str, str]:
    """patch id -> key for the v1 side lists (one patch name per line) found in or beside ``root``."""
    found: dict[str, str] = {}
    for key, name in names.items():
        for directory in (root, root.parent):
            path = directory / name
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    patch = line.split(",")[0].strip()
                    if patch and patch != "patch_id":
                        found[patch] = key
                break
    return found


# --------------------------------------------------------------------------- detection

def open_source(path: str | Path, metadata: str | Path | None = None, allow_incomplete: bool = False) -> BenSource:
    """Open any BigEarthNet source by looking at what the folder holds."""
    path = Path(path)
    meta = Path(metadata) if metadata is not None else None
    if not path.exists():
        raise EotwinError(f"{path} not found")
    if path.is_file():
        raise EotwinError(f"{path} is a file: give the dataset folder, the LMDB folder or the store folder")
    if (path / MANIFEST_NAME).is_file():
        return StoreSource(path, allow_incomplete=allow_incomplete)
    if (path / "data.mdb").is_file():
        return LmdbSource(path, meta)
    lmdb_dirs = sorted(p for p in path.iterdir() if p.is_dir() and (p / "data.mdb").is_file())
    if (path / "BigEarthNet-S2").is_dir():
        return GeoTiffSource(path, meta)
    if len(lmdb_dirs) == 1:
        return LmdbSource(lmdb_dirs[0], meta or _metadata_in(path))
    for child in sorted(path.iterdir()):
        if child.is_dir():
            if (child / f"{child.name}_labels_metadata.json").is_file():
                return V1Source(path)
            grand = next((g for g in sorted(child.iterdir()) if g.is_dir()), None)
            if grand is not None and any(grand.glob(f"{grand.name}_B*.tif")):
                return GeoTiffSource(path, meta)
            break
    raise EotwinError(f"{path} is not a BigEarthNet source (GeoTIFF folders, LMDB, v1 folders or an eotwin store)")


def _metadata_in(path: Path) -> Path | None:
    candidate = path / METADATA_NAME
    return candidate if candidate.is_file() else None
