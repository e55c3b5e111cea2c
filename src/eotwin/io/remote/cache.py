"""A local cache of downloaded windows and DEM slices, keyed by request, checked by content hash.

Each entry is a file plus ``<file>.sha256``; an entry whose bytes no longer match its hash is
treated as missing and fetched again, so a truncated or corrupted download is never reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from eotwin.errors import EotwinError
from eotwin.io.files import atomic_path, ensure_writable_dir


def default_cache_dir() -> Path:
    return Path(os.environ.get("EOTWIN_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "eotwin")


KINDS = ("dem", "s2", "stac")  # the only folders the cache writes under its root
# what the cache itself writes: <kind>/<2 hex>/<32 hex key><suffix>[.sha256], and atomic_path's leftovers
_ENTRY = re.compile(r"^[0-9a-f]{32}(\.[A-Za-z0-9]+)(\.sha256)?$")
_LEFTOVER = re.compile(r"^\.[0-9a-f]{32}\..*\.part.*$")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _shard_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` between processes (flock on the folder itself: no lock file to leave)."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


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
        """Copy ``source`` into the cache (atomically, with its hash); return the cached path.

        The file and its hash are two renames: writers of one entry take the shard folder's lock around
        both, so two processes putting different bodies never leave one's file beside the other's hash
        (readers need no lock: they check the hash).
        """
        path = self.path_for(kind, key, suffix)
        ensure_writable_dir(path.parent)
        with _shard_lock(path.parent):
            with atomic_path(path) as tmp:
                shutil.copyfile(source, tmp)
                digest = _sha256(tmp)
            with atomic_path(Path(str(path) + ".sha256")) as tmp:
                tmp.write_text(digest + "\n")
        return path

    def _own_files(self) -> list[Path]:
        """Files the cache wrote itself; anything else under its root (a home folder, DeltaTwin envs) is not its own."""
        found: list[Path] = []
        for kind in KINDS:
            base = self.root / kind
            if not base.is_dir() or base.is_symlink():
                continue
            for shard in base.iterdir():
                if shard.is_symlink() or not shard.is_dir() or not re.fullmatch(r"[0-9a-f]{2}", shard.name):
                    continue
                found.extend(p for p in shard.iterdir() if p.is_file() and not p.is_symlink()
                             and (_ENTRY.match(p.name) or _LEFTOVER.match(p.name)))
        return found

    def info(self) -> dict:
        if self.root.exists() and not self.root.is_dir():
            raise EotwinError(f"cache folder {self.root} is a file ($EOTWIN_CACHE_DIR or ~/.cache/eotwin): "
                              "point it to a folder")
        files = [p for p in self._own_files() if _ENTRY.match(p.name) and not p.name.endswith(".sha256")]
        kinds: dict[str, int] = {}
        for p in files:
            kinds[p.relative_to(self.root).parts[0]] = kinds.get(p.relative_to(self.root).parts[0], 0) + 1
        return {"root": str(self.root), "entries": len(files), "bytes": sum(p.stat().st_size for p in files), "by_kind": kinds}

    def clear(self) -> int:
        """Delete the cache's own entries, and the shard folders they leave empty; nothing else, whatever the root."""
        count = self.info()["entries"]
        for path in self._own_files():
            path.unlink(missing_ok=True)
        for kind in KINDS:
            base = self.root / kind
            if base.is_dir() and not base.is_symlink():
                for shard in base.iterdir():
                    if shard.is_dir() and not shard.is_symlink() and not any(shard.iterdir()):
                        shard.rmdir()
                if not any(base.iterdir()):
                    base.rmdir()
        return count
