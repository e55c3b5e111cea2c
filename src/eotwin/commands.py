"""Registry of the eotwin commands that components wrap: the pydantic models of their options, and their flags.

The CLI builds these models from its parameters and the DeltaTwin builder reads them to learn which
commands and options this eotwin offers, so neither adapter imports the other (``tests/cli`` checks that
the registry and the Typer app agree, option for option). It sits below both adapters and above the
capabilities; the capabilities' models are named as ``module:Class`` and imported only when asked for, so
listing components stays fast and needs none of the capabilities' heavy libraries.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo


class PointcloudLiveOptions(BaseModel):
    """``eotwin pointcloud build --bbox --date``: where live data comes from (instead of ``--dem``/``--image``).

    The CLI resolves these into a live request, endpoints, credentials and a cache before the build options.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bbox: str | None = None  # MINLON,MINLAT,MAXLON,MAXLAT
    date: str | None = None  # START or START/END
    max_cloud: float = 20.0
    collection: str = "sentinel-2-l2a"
    crs: str | None = None  # default: the UTM zone of the bbox centre
    tile_size: float | None = None  # metres: tiles built as Dask tasks plus a .vpc index
    scheduler: str | None = None
    workers: int = 2
    no_cache: bool = False
    stac_url: str | None = None
    s3_endpoint: str | None = None
    dem_url: str | None = None
    s3_access_key: str | None = None
    s3_secret_key_file: Path | None = None
    edh_token_file: Path | None = None
    # refused on the command line (hidden): secrets come from files or the environment; never in a repr or a log
    s3_secret_key: str | None = Field(None, repr=False)
    edh_token: str | None = Field(None, repr=False)


class PrintOptions(BaseModel):
    """How a command prints its result: text for a person, or one JSON object for scripts (``--json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    as_json: bool = False


@dataclass(frozen=True)
class CommandOptions:
    """One command: the models its options fill, and where the CLI's flags differ from the field names.

    A field ``block_rows`` is the flag ``--block-rows``; a boolean that defaults to true is switched off
    with ``--no-<name>`` as well. ``flags`` overrides that rule per field, ``arguments`` are the fields
    given positionally (in order), ``internal`` the model fields the code sets and the CLI does not offer.
    """

    path: tuple[str, ...]
    models: tuple[str, ...]  # "module:Class", imported on demand
    flags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    arguments: tuple[str, ...] = ()
    internal: frozenset[str] = frozenset()

    def model_classes(self) -> tuple[type[BaseModel], ...]:
        return tuple(_load(ref) for ref in self.models)

    def fields(self) -> dict[str, FieldInfo]:
        """Every field the command's options fill (first model wins a shared name), less the internal ones."""
        found: dict[str, FieldInfo] = {}
        for model in self.model_classes():
            for name, info in model.model_fields.items():
                if name not in self.internal:
                    found.setdefault(name, info)
        return found

    def option_flags(self) -> dict[str, tuple[str, ...]]:
        """Field -> its long CLI flags, for every field that is an option (not an argument)."""
        out: dict[str, tuple[str, ...]] = {}
        for name, info in self.fields().items():
            if name in self.arguments:
                continue
            if name in self.flags:
                out[name] = self.flags[name]
                continue
            flag = "--" + name.replace("_", "-")
            out[name] = (flag, f"--no-{flag[2:]}") if info.default is True else (flag,)
        return out

    def all_flags(self) -> set[str]:
        return {flag for flags in self.option_flags().values() for flag in flags}


@cache
def _load(ref: str) -> type[BaseModel]:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


_SECRET_FROM_FILE = ("--s3-secret-key-file", "--s3-secret-key")  # the file is read into the (hidden) secret

COMMANDS: dict[tuple[str, ...], CommandOptions] = {
    c.path: c for c in (
        CommandOptions(("sample",), ("eotwin.sample.options:SampleOptions",)),
        CommandOptions(
            ("pointcloud", "build"),
            ("eotwin.pointcloud.options:BuildOptions", "eotwin.commands:PointcloudLiveOptions",
             "eotwin.commands:PrintOptions"),
            flags={"as_json": ("--json",)},
            internal=frozenset({"provenance"}),
        ),
        CommandOptions(
            ("atmocorr", "run"),
            ("eotwin.atmocorr.pipeline:RunOptions",),
            flags={"s3_secret_key": _SECRET_FROM_FILE},
            arguments=("input",),
        ),
        CommandOptions(
            ("ben", "predict"),
            ("eotwin.ben.train.config:PredictOptions", "eotwin.commands:PrintOptions"),
            flags={"as_json": ("--json",)},
            arguments=("checkpoint", "image"),
            internal=frozenset({"nodata_fraction"}),
        ),
    )
}


def command_flags() -> dict[tuple[str, ...], set[str]]:
    """Every registered command path with the long flags it offers (what a component may put on its line)."""
    return {path: command.all_flags() for path, command in COMMANDS.items()}

