"""Encode any BigEarthNet source into our training store: parallel, resumable, with progress.

The store is an LMDB in the rico-hdl layout (key = S2 patch id, value = safetensors
``{band: array}`` at native resolution, dtype as published; with Sentinel-1 bands selected, each
patch's S1 partner under its ``s1_name`` with ``{VV, VH}``), so ConfigILM and rico-hdl tooling read
it as they read the official LMDB. A patch and its partner are committed in the same transaction. Beside ``data.mdb`` the folder holds ``metadata.parquet`` (the
rows of the encoded patches, snow/cloud flags included) and ``eotwin_store.json`` (the manifest).

Resuming: patches are committed in batches; a rerun with the same options skips the keys already
in the database, and the manifest says ``complete: true`` only after the last batch. Readers refuse an
incomplete store unless asked otherwise, so a half-encoded store is never mistaken for a full one.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eotwin import __version__
from eotwin.ben.bands import NATIVE_SIZE, is_s1
from eotwin.ben.data_options import EncodeOptions
from eotwin.ben.sources.base import BenSource
from eotwin.ben.sources.lmdb_source import MANIFEST_NAME, STORE_FORMAT, read_manifest
from eotwin.ben.sources.metadata import METADATA_COLUMNS, METADATA_NAME
from eotwin.errors import EotwinError
from eotwin.io.files import (
    atomic_path,
    disk_full_error,
    disk_full_reason,
    ensure_writable_dir,
    write_json_atomic,
)
from eotwin.progress import ProgressReporter, ensure_progress

STORE_VERSION = 1
_BYTES_PER_PATCH = 400_000  # generous: a 12-band patch is 160 KB of safetensors


@dataclass(frozen=True)
class EncodeResult:
    store: Path
    planned: int
    written: int  # in this run
    skipped: int  # already in the store (resumed)
    seconds: float
    store_bytes: int
    unpaired: int = 0  # left out for a missing or misnamed S1 partner (--skip-missing)

    @property
    def patches_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else float("nan")


def encode_patch(arrays: dict[str, np.ndarray], patch_id: str = "?") -> bytes:
    """Serialise one patch as safetensors after checking each band is a plausible 2-D raster."""
    from safetensors.numpy import save

    for band, array in arrays.items():
        if array.ndim != 2 or array.shape[0] != array.shape[1]:
            raise EotwinError(f"patch '{patch_id}' band {band} has shape {array.shape}, expected a square 2-D band")
        if array.shape[0] not in (NATIVE_SIZE.get(band, 120), 120):
            raise EotwinError(f"patch '{patch_id}' band {band} is {array.shape[0]} px, expected "
                              f"{NATIVE_SIZE.get(band, 120)} (native) or 120")
    return save({band: np.ascontiguousarray(array) for band, array in arrays.items()})


def encode(
    source: BenSource,
    store_dir: str | Path,
    *,
    split: str | None = None,
    include_snow: bool = True,
    include_cloud: bool = True,
    limit: int | None = None,
    bands: Sequence[str] | None = None,
    workers: int | None = None,
    batch_size: int = 256,
    overwrite: bool = False,
    skip_missing: bool = False,
    progress: ProgressReporter | None = None,
) -> EncodeResult:
    """Write the selected patches of ``source`` into the store at ``store_dir`` (resuming if started).

    ``bands`` None: every band the source holds. With S1 bands, a patch without its S1 partner stops the encode
    with a one-line error before anything is written, or is left out and counted with ``skip_missing``.
    """
    import lmdb

    started = time.perf_counter()
    progress = ensure_progress(progress)
    store_dir = Path(store_dir)
    if limit is not None and limit < 1:
        raise EotwinError("--limit must be at least 1")
    if batch_size < 1:
        raise EotwinError("batch size must be at least 1")
    workers = max(1, workers if workers is not None else min(8, os.cpu_count() or 1))
    bands = tuple(bands) if bands else source.default_bands()
    s2_bands = tuple(band for band in bands if not is_s1(band))
    s1_bands = tuple(band for band in bands if is_s1(band))
    if not s2_bands:
        raise EotwinError("a store keys patches by their S2 id: keep at least one S2 band (train on 's1' from a full store)")
    patch_ids = source.patch_ids(split=split, include_snow=include_snow, include_cloud=include_cloud)
    if limit is not None:
        patch_ids = patch_ids[:limit]
    unpaired: list[str] = []
    if s1_bands and patch_ids:
        patch_ids, unpaired = source.pair(patch_ids, skip_missing)
    if not patch_ids:
        raise EotwinError(f"no patches to encode in {source.path} with these options"
                          + (f" ({len(unpaired)} left out without their S1 partner)" if unpaired else ""))

    selection = {"source": str(Path(source.path).resolve()), "source_kind": source.kind, "split": split,
                 "include_snow": include_snow, "include_cloud": include_cloud, "limit": limit, "bands": list(bands),
                 "skip_missing": skip_missing}
    _prepare_store_dir(store_dir, selection, overwrite)
    fresh = not (store_dir / MANIFEST_NAME).is_file()

    frame = source.metadata.set_index("patch_id", drop=False).loc[patch_ids]
    columns = [c for c in METADATA_COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in METADATA_COLUMNS]
    if not (store_dir / METADATA_NAME).is_file():
        with atomic_path(store_dir / METADATA_NAME) as tmp:
            frame[columns].reset_index(drop=True).to_parquet(tmp, index=False)
    try:  # opened before the manifest is touched: a store that cannot be opened keeps its state
        env = lmdb.open(str(store_dir), map_size=max(1 << 30, len(patch_ids) * _BYTES_PER_PATCH), subdir=True,
                        readahead=False, meminit=False)
    except lmdb.Error as exc:
        if fresh:  # leave nothing behind that would later look like a foreign folder
            shutil.rmtree(store_dir, ignore_errors=True)
        raise EotwinError(f"cannot open {store_dir} for writing: {exc}") from None
    written = 0
    try:  # a fresh store that fails before its first batch is committed leaves nothing behind (nothing to resume)
        try:
            with env.begin() as txn:
                existing = {bytes(k).decode() for k in txn.cursor().iternext(keys=True, values=False)}
            todo = [pid for pid in patch_ids if pid not in existing]
            skipped = len(patch_ids) - len(todo)
            manifest: dict[str, Any] = {
                "format": STORE_FORMAT, "version": STORE_VERSION, "eotwin": __version__,
                "layout": "LMDB (rico-hdl): key = S2 patch id, value = safetensors {band: array}, native resolution"
                          + ("; key = s1_name, value = safetensors {VV, VH} float32 dB" if s1_bands else ""),
                "bands": list(bands), "patches": len(patch_ids), "written": skipped, "complete": not todo,
                "unpaired": len(unpaired), "unpaired_first": unpaired[:10], "selection": selection,
            }
            write_json_atomic(store_dir / MANIFEST_NAME, manifest)

            def work(patch_id: str) -> list[tuple[str, bytes]]:
                entries = [(patch_id, encode_patch(source.read(patch_id, s2_bands), patch_id))]
                if s1_bands:
                    s1_name = source.s1_partner(patch_id)
                    entries.append((s1_name, encode_patch(source.read(patch_id, s1_bands), s1_name)))
                return entries

            written = 0
            with progress.task(f"encode {len(todo)} patches", total=len(todo)) as task, \
                    ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ben-encode") as pool:
                for start in range(0, len(todo), batch_size):
                    chunk = todo[start:start + batch_size]
                    blobs = list(pool.map(work, chunk))  # ordered; an error aborts before this batch is committed
                    with env.begin(write=True) as txn:
                        for entries in blobs:
                            for key, blob in entries:
                                txn.put(key.encode("ascii"), blob)
                    written += len(chunk)
                    task.advance(len(chunk))
                    manifest["written"] = skipped + written
                    write_json_atomic(store_dir / MANIFEST_NAME, manifest)
            env.sync(True)
        finally:
            env.close()
    except (EotwinError, lmdb.Error) as exc:  # LMDB's own errors too: a full disk fails a commit
        if fresh and written == 0:
            shutil.rmtree(store_dir, ignore_errors=True)
        if isinstance(exc, lmdb.Error):
            reason = disk_full_reason(exc)
            raise (disk_full_error(store_dir, reason) if reason else
                   EotwinError(f"writing {store_dir} failed: {exc}")) from None
        raise
    manifest.update(written=len(patch_ids), complete=True)
    write_json_atomic(store_dir / MANIFEST_NAME, manifest)
    size = sum(p.stat().st_size for p in store_dir.iterdir() if p.is_file())
    return EncodeResult(store_dir, len(patch_ids), written, skipped, time.perf_counter() - started, size, len(unpaired))


def _prepare_store_dir(store_dir: Path, selection: dict[str, Any], overwrite: bool) -> None:
    """Create, resume or (with ``overwrite``) replace a store; never write into a foreign folder."""
    if store_dir.exists() and not store_dir.is_dir():
        raise EotwinError(f"{store_dir} exists and is not a folder")
    if store_dir.is_dir() and any(store_dir.iterdir()):
        if not (store_dir / MANIFEST_NAME).is_file():
            raise EotwinError(f"{store_dir} is not empty and is not an eotwin store: choose a new output folder")
        manifest = read_manifest(store_dir)
        if overwrite:
            shutil.rmtree(store_dir)
        elif manifest.get("selection") != selection:
            raise EotwinError(f"{store_dir} was encoded with other options ({_difference(manifest.get('selection'), selection)}): "
                              "use a new output folder or --overwrite")
    ensure_writable_dir(store_dir)


def _difference(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    old = old or {}
    keys = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in keys) or "unknown"


def run_encode(options: EncodeOptions, progress: ProgressReporter | None = None) -> EncodeResult:
    """Pipeline of ``eotwin ben encode``: open the source, encode the selection into the store."""
    from eotwin.ben.sources import open_source

    output = Path(options.output).resolve()
    if output == Path(options.source).resolve():
        raise EotwinError("the store must be a different folder from the source")
    with open_source(options.source, options.metadata) as source:
        return encode(source, options.output, split=options.split, include_snow=options.include_snow,
                      include_cloud=options.include_cloud, limit=options.limit, bands=options.bands,
                      workers=options.workers, batch_size=options.batch_size, overwrite=options.overwrite,
                      skip_missing=options.skip_missing, progress=progress)
