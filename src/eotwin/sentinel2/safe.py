"""A Sentinel-2 SAFE product as a folder or a zip: its file list, small members read with a size guard.

Band files are not read here: GDAL gets a path (``/vsizip/`` inside a zip) to each of them.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from eotwin.errors import EotwinError

MAX_METADATA_BYTES = 64 * 2**20  # MTD_TL.xml is ~0.6 MB, AUX_ECMWFT ~0.2 MB: anything far larger is not metadata


class SafeArchive:
    """A SAFE product as a folder or a zip: list its files, read small ones, give GDAL paths to big ones."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise EotwinError(f"{self.path}: no such file or folder")
        self.is_zip = self.path.is_file()
        if self.is_zip:
            try:
                with zipfile.ZipFile(self.path) as zf:
                    self._names = [n for n in zf.namelist() if not n.endswith("/")]
            except (zipfile.BadZipFile, OSError) as exc:
                raise EotwinError(f"{self.path}: not a readable SAFE zip ({exc})") from None
        else:
            self._names = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
        # the SAFE root inside: the folder holding MTD_MSIL1C.xml / MTD_MSIL2A.xml
        mtd = sorted((n for n in self._names if re.search(r"(^|/)MTD_MSIL(1C|2A)\.xml$", n)), key=len)
        if not mtd:
            raise EotwinError(
                f"{self.path}: no MTD_MSIL1C.xml or MTD_MSIL2A.xml (not a Sentinel-2 SAFE product)"
            )
        self.metadata_name = mtd[0]
        self.root = mtd[0].rpartition("/")[0]

    def rel(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root else name

    def names(self) -> list[str]:
        return list(self._names)

    def read_bytes(self, name: str, limit: int = MAX_METADATA_BYTES) -> bytes:
        """A small member (metadata, auxiliary data), refused beyond ``limit`` bytes: a zip bomb never inflates."""
        try:
            if self.is_zip:
                with zipfile.ZipFile(self.path) as zf:
                    size = zf.getinfo(name).file_size  # zipfile never inflates past the declared size
                    if size > limit:
                        raise EotwinError(f"{self.path}: {name} declares {size:,} bytes, more than the "
                                          f"{limit:,} a metadata file may have")
                    return zf.read(name)
            path = self.path / name
            size = path.stat().st_size
            if size > limit:
                raise EotwinError(f"{self.path}: {name} has {size:,} bytes, more than the {limit:,} a metadata "
                                  "file may have")
            return path.read_bytes()
        except (KeyError, OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
            raise EotwinError(f"{self.path}: cannot read {name} ({exc})") from None

    def gdal_path(self, name: str) -> str:
        return f"/vsizip/{self.path.resolve()}/{name}" if self.is_zip else str(self.path / name)

    def find_image(self, rel_no_suffix: str) -> str | None:
        """The stored band file for an IMAGE_FILE entry (``.jp2``, or ``.tif`` for converted products)."""
        for suffix in (".jp2", ".tif", ".TIF"):
            name = self.rel(rel_no_suffix + suffix)
            if name in self._names:
                return name
        return None

    def tile_metadata_name(self) -> str:
        tl = sorted(n for n in self._names if re.search(r"GRANULE/[^/]+/MTD_TL\.xml$", n))
        if not tl:
            raise EotwinError(
                f"{self.path}: no GRANULE/*/MTD_TL.xml (the tile metadata with the angle grids)"
            )
        if len(tl) > 1:
            raise EotwinError(f"{self.path}: {len(tl)} granules; only single-tile products are supported")
        return tl[0]

