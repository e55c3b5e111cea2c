"""``eotwin cache``: what the live-data cache holds, and clearing it."""

from __future__ import annotations

import json

import typer

from eotwin.cli import _common

app = typer.Typer(help="The local cache of downloaded windows, DEM slices and searches.", no_args_is_help=True)


@app.command("info")
def info(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Location, number of entries and size of the cache."""
    from eotwin.io.remote.cache import Cache, default_cache_dir

    summary = Cache(default_cache_dir()).info()
    if as_json:
        _common.out.print_json(json.dumps(summary))
        return
    _common.out.print(f"cache    {summary['root']}")
    _common.out.print(f"entries  {summary['entries']} ({summary['bytes'] / 2**20:.1f} MiB)")
    for kind, count in sorted(summary["by_kind"].items()):
        _common.out.print(f"  {kind:6s} {count}")


@app.command("clear")
def clear(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Delete every cached entry (only files the cache wrote; nothing else under its folder)."""
    from eotwin.io.remote.cache import Cache, default_cache_dir

    cache = Cache(default_cache_dir())
    removed = cache.clear()
    if as_json:
        _common.out.print_json(json.dumps({"root": str(cache.root), "removed": removed}))
        return
    _common.out.print(f"removed {removed} entries")
