"""LMDB sources: the rico-hdl / ConfigILM database (safetensors per patch) and our store in the same layout."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eotwin.ben.bands import S2_BANDS
from eotwin.ben.sources.base import BenSource
from eotwin.ben.sources.metadata import METADATA_NAME, find_metadata, read_metadata
from eotwin.errors import EotwinError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MANIFEST_NAME = "eotwin_store.json"
STORE_FORMAT = "eotwin-ben-store"


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
        self._pid = -1  # the process that acquired the environment (-1: none yet)
        self._keys: set[str] | None = None
        self._has_s1: bool | None = None

    def _reading(self) -> contextlib.AbstractContextManager:
        """A read transaction on this process's environment of the database (DataLoader workers fork)."""
        if self._pid != os.getpid():
            _acquire_env(self.env_dir)
            self._pid = os.getpid()
        return _reading(self.env_dir)

    def keys(self) -> set[str]:
        if self._keys is None:
            # walking the keys faults in the pages of every value (py-lmdb touches them; the kernel maps their
            # neighbours): on a 2.4 GB database the whole file would be resident at once. So the walk goes in
            # runs of KEYS_PER_MAP keys, each on a fresh map.
            keys: set[str] = set()
            last: bytes | None = None
            more = True
            while more:
                with self._reading() as txn:
                    cursor = txn.cursor()
                    more = cursor.first() if last is None else cursor.set_range(last)
                    if more and last is not None and bytes(cursor.key()) == last:
                        more = cursor.next()
                    for _ in range(KEYS_PER_MAP):
                        if not more:
                            break
                        last = bytes(cursor.key())
                        keys.add(last.decode())
                        more = cursor.next()
                _count_read(self.env_dir, REMAP_EVERY_BYTES)
            self._keys = keys
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
        state.update(_pid=-1)
        return state

    def raw(self, patch_id: str) -> bytes:
        """The stored safetensors bytes of a patch (what the store copies without decoding)."""
        with self._reading() as txn:
            value = txn.get(patch_id.encode())
            if value is None:
                raise EotwinError(f"patch '{patch_id}' is not in {self.env_dir}")
            data = bytes(value)
        _count_read(self.env_dir, len(data))
        return data

    def _read_s2(self, patch_id: str, bands: Sequence[str]) -> dict[str, np.ndarray]:
        return decode_patch(self.raw(patch_id), patch_id, str(self.env_dir), bands)

    def _read_s1(self, patch_id: str, s1_name: str, bands: Sequence[str]) -> dict[str, np.ndarray]:
        return decode_patch(self.raw(s1_name), s1_name, str(self.env_dir), bands)

    def close(self) -> None:
        if self._pid == os.getpid():
            _release_env(self.env_dir)
        self._pid = -1


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
_ENVS: dict[tuple[str, int], _Env] = {}
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


# LMDB maps the whole file: every page read stays resident (clean, reclaimable, but counted in RSS) until the
# map goes. After this many bytes read, the environment is reopened between transactions, so a pass over a
# 2.4 GB database stays a few hundred MB resident instead of the whole file.
REMAP_EVERY_BYTES = 256 * 2**20
KEYS_PER_MAP = 1000  # keys walked on one map (their values' pages are touched: about 140 MB for BigEarthNet v2)


@dataclass
class _Env:
    env: Any
    users: int = 0  # sources holding it in this process
    active: int = 0  # read transactions open now
    read_bytes: int = 0  # since it was (re)opened


def _open_env(path: str):
    import lmdb

    try:
        return lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False, max_readers=256, subdir=True)
    except lmdb.Error as exc:
        raise EotwinError(f"cannot open LMDB {path}: {exc}") from None


def _env_key(env_dir: Path) -> tuple[str, int]:
    return str(Path(env_dir).resolve()), os.getpid()


def _acquire_env(env_dir: Path) -> None:
    key = _env_key(env_dir)
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            check_lmdb_file(Path(key[0]))
            entry = _ENVS[key] = _Env(_open_env(key[0]))
        entry.users += 1


def _release_env(env_dir: Path) -> None:
    key = _env_key(env_dir)
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is not None:
            entry.users -= 1
            if entry.users <= 0:
                entry.env.close()
                del _ENVS[key]


@contextlib.contextmanager
def _reading(env_dir: Path) -> Iterator[Any]:
    """A read transaction; the environment is reopened first when it has read ``REMAP_EVERY_BYTES`` and no other
    transaction is open (the old map, and the file pages it kept resident, go with it)."""
    key = _env_key(env_dir)
    with _ENVS_LOCK:
        entry = _ENVS[key]
        if entry.active == 0 and entry.read_bytes >= REMAP_EVERY_BYTES:
            entry.env.close()
            entry.env, entry.read_bytes = _open_env(key[0]), 0
        entry.active += 1
        env = entry.env
    try:
        with env.begin(write=False, buffers=True) as txn:
            yield txn
    finally:
        with _ENVS_LOCK:
            entry.active -= 1


def _count_read(env_dir: Path, size: int) -> None:
    with _ENVS_LOCK:
        entry = _ENVS.get(_env_key(env_dir))
        if entry is not None:
            entry.read_bytes += size


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
