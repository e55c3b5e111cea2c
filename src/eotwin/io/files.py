"""Atomic output: write files and folders under a temporary name beside the target, rename when complete.

A run that fails half-way leaves nothing at the target path, so no half-written file is ever
mistaken for a result. Whole output folders go through a staging folder (:func:`staging_dir`,
:func:`publish_staged`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from eotwin.errors import EotwinError


def ensure_writable_dir(directory: Path) -> Path:
    """Create ``directory`` if needed and check that files can be created in it."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EotwinError(f"cannot create output directory {directory}: {exc.strerror or exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise EotwinError(f"output directory {directory} is not writable")
    return directory


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
# how libraries that do not raise OSError (GDAL, LMDB, lazrs) word the same failures
_DISK_FULL_WORDS = re.compile(r"No space left on device|File too large|Disk quota exceeded", re.IGNORECASE)


class DiskFullError(EotwinError):
    """An output could not be written for lack of space (a full disk, a quota, a file-size limit)."""


def disk_full_error(target: str | Path, reason: str = "no space left") -> DiskFullError:
    return DiskFullError(f"disk full: cannot write {target} ({reason}): free some space or write elsewhere")


def disk_full_reason(exc: BaseException) -> str | None:
    """The words of ``exc`` (or of an exception it was raised from) saying the disk, a quota or a file-size limit
    is full; None when it does not say so."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return current.strerror or os.strerror(current.errno)
        found = _DISK_FULL_WORDS.search(str(current))
        if found:
            return found.group(0)
        current = current.__cause__ or current.__context__
    return None


def out_of_space(exc: BaseException, written: Path) -> str | None:
    """Why a write under ``written`` (a file or a folder) failed for lack of space; None when it did not.

    Some writers report a full disk only as "write failed" (lazrs, GDAL's "See previous exception"): then the
    filesystem having no free block, or a file having reached the process's file-size limit, decides it.
    """
    reason = disk_full_reason(exc)
    if reason is not None:
        return reason
    import resource

    try:
        if os.statvfs(written if written.is_dir() else written.parent).f_bavail == 0:
            return "no space left on device"
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            files = [written] if written.is_file() else [p for p in written.rglob("*") if p.is_file()]
            if any(p.stat().st_size >= limit for p in files):
                return f"the file-size limit of {limit:,} bytes was reached"
    except OSError:
        return None
    return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts as alive): the owner of a leftover is gone when not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def reclaim_dead_parts(target: Path, suffix: str) -> list[Path]:
    """Remove temporary files beside ``target`` left by writers that were killed (kill -9, out of memory)."""
    import re
    from glob import escape

    removed = []
    # exactly what atomic_path names: .<stem>.<pid>.<mkstemp's dotless random part>.part<suffix>
    ours = re.compile(rf"^\.{re.escape(target.stem)}\.(\d+)\.[^.]+\.part{re.escape(suffix)}$")
    for part in target.parent.glob(f"{escape('.' + target.stem)}.*.part{escape(suffix)}"):
        match = ours.match(part.name)
        if match and part.is_file() and not part.is_symlink() and not process_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
                removed.append(part)
    return removed


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``target`` on success.

    On any exception the temporary file is removed and the target is left untouched.
    ``suffix`` defaults to the target's suffix so format-sniffing writers (GDAL, laspy) still work.
    """
    target = Path(target)
    ensure_writable_dir(target.parent if str(target.parent) else Path("."))
    suffix = target.suffix if suffix is None else suffix
    reclaim_dead_parts(target, suffix)
    try:  # the writer's process id in the name: a later write knows the leftover of a killed one
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.{os.getpid()}.", suffix=f".part{suffix}",
                                        dir=target.parent)
    except OSError as exc:
        raise EotwinError(f"cannot write {target}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results should get the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException as exc:
        full = None
        if isinstance(exc, Exception) and not isinstance(exc, DiskFullError):
            full = out_of_space(exc, tmp)  # measured before the temporary goes
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if full:
            raise disk_full_error(target, full) from None
        raise


def reclaim_dead_owned(parent: Path, prefix: str) -> list[Path]:
    """Remove the folders ``<prefix><pid>-*`` in ``parent`` whose owner process is gone (kill -9, out of memory).

    Folders of live owners, and names without a process id after the prefix, are left alone.
    """
    from glob import escape

    removed = []
    for folder in Path(parent).glob(f"{escape(prefix)}*"):
        pid_text = folder.name[len(prefix):].split("-", 1)[0]
        if not folder.is_dir() or folder.is_symlink() or not pid_text.isdigit() or process_alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def owned_scratch_dir(parent: Path, prefix: str) -> Path:
    """A new private folder ``<prefix><pid>-<random>`` in ``parent``, after removing those of dead owners.

    The process id in the name lets a later run tell a folder whose writer died from one still in use.
    """
    reclaim_dead_owned(parent, prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


@contextlib.contextmanager
def temporary_owned_dir(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """:func:`owned_scratch_dir` (in the system's temporary folder by default), removed on exit."""
    folder = owned_scratch_dir(Path(parent) if parent is not None else Path(tempfile.gettempdir()), prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def reclaim_dead_staging(parent: Path, name: str) -> list[Path]:
    """Remove staging folders of earlier runs on the same output whose process is gone (several GB each)."""
    return reclaim_dead_owned(parent, f".{name}.part-")


def staging_dir(target: str | Path) -> Path:
    """A new hidden folder beside the output folder ``target`` to write the whole output in.

    :func:`publish_staged` moves it into place once complete, so a run that fails or is killed leaves ``target``
    as it was; the caller removes the folder when it fails. The owner's process id is in the name
    (``.<name>.part-<pid>-<random>``): a later run on the same target removes the folders of owners that died
    (kill -9, out of memory).
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise EotwinError(f"{target}: exists and is not a directory")
    parent = ensure_writable_dir(target.parent if str(target.parent) else Path("."))
    staging = owned_scratch_dir(parent, f".{target.name}.part-")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; the published folder gets the usual mode
    return staging


def publish_staged(staging: Path, target: str | Path, stale: Iterable[str] = ()) -> list[str]:
    """Move a complete staging folder's entries into ``target``; the names moved, in the folder's order.

    A new ``target`` is one rename of the whole folder. Into an existing one the entries move one by one,
    replacing those of the same name (a folder in the way is first moved aside into the staging folder, which
    is then removed); the ``stale`` names this run did not make (an earlier run's optional files) are removed.
    """
    target = Path(target)
    names = [p.name for p in staging.iterdir()]
    if not target.exists():
        os.replace(staging, target)
        return names
    for name in names:
        dest = target / name
        if dest.is_dir() and not dest.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                os.replace(dest, staging / f".replaced-{name}")
        os.replace(staging / name, dest)
    for name in set(stale) - set(names):
        (target / name).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    return names


def write_json_atomic(target: str | Path, payload: Any, *, indent: int = 2) -> Path:
    """Serialise ``payload`` as JSON to ``target`` atomically."""
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=indent, default=_json_default) + "\n", encoding="utf-8")
    return target


def write_text_atomic(target: str | Path, text: str) -> Path:
    target = Path(target)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover - numpy is a core dependency
        pass
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
