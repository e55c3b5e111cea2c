"""A local cache of downloaded windows and DEM slices, keyed by request, checked by content hash.

Each entry is a file plus ``<file>.sha256``; an entry whose bytes no longer match its hash is
treated as missing and fetched again, so a truncated or corrupted download is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from eotwin.io.files import atomic_path, ensure_writable_dir


def default_cache_dir() -> Path:
    return Path(os.environ.get("EOTWIN_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "eotwin")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def request_key(**parts) -> str:
    """A stable key for a request: the hash of its JSON (never include secrets in ``parts``)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class Cache:
    root: Path
    enabled: bool = True
    hits: int = 0
    misses: int = 0

    def path_for(self, kind: str, key: str, suffix: str = ".tif") -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def get(self, kind: str, key: str, suffix: str = ".tif") -> Path | None:
        if not self.enabled:
            return None
        path = self.path_for(kind, key, suffix)
        checksum = Path(str(path) + ".sha256")
        if path.exists() and checksum.exists() and checksum.read_text().strip() == _sha256(path):
            self.hits += 1
            return path
        self.misses += 1
        return None

    def put(self, kind: str, key: str, source: Path, suffix: str = ".tif") -> Path:
        """Copy ``source`` into the cache (atomically, with its hash); return the cached path."""
        path = self.path_for(kind, key, suffix)
        ensure_writable_dir(path.parent)
        with atomic_path(path) as tmp:
            shutil.copyfile(source, tmp)
        with atomic_path(Path(str(path) + ".sha256")) as tmp:
            tmp.write_text(_sha256(path) + "\n")
        return path

    def info(self) -> dict:
        files = [p for p in self.root.rglob("*") if p.is_file() and not p.name.endswith(".sha256")] if self.root.exists() else []
        kinds: dict[str, int] = {}
        for p in files:
            kinds[p.relative_to(self.root).parts[0]] = kinds.get(p.relative_to(self.root).parts[0], 0) + 1
        return {"root": str(self.root), "entries": len(files), "bytes": sum(p.stat().st_size for p in files), "by_kind": kinds}

    def clear(self) -> int:
        count = self.info()["entries"]
        if self.root.exists():
            shutil.rmtree(self.root)
        return count
