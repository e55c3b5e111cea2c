"""A run's record: ``run.json``'s file entries (sizes, checksums, read-only copies) and ``run.html``.

``run.html`` is the record as a page people read (nodes, status, timings, memory, outputs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import stat
from html import escape
from pathlib import Path
from typing import Any

from eotwin.io.files import write_text_atomic

RECORD_FILE = "run.json"
REPORT_FILE = "run.html"


def make_read_only(path: Path) -> None:
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in paths:
        p.chmod(stat.S_IMODE(p.stat().st_mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def fingerprint(path: Path) -> list[tuple]:
    """Size, modification and change times of a file or of every file under a folder (detects writes)."""
    paths = [path] if not path.is_dir() else sorted(path.rglob("*"))
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            out.append((str(p), None))
            continue
        out.append((str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return out


def file_record(path: Path) -> dict[str, Any]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    for p in files:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                md5.update(chunk)
                sha.update(chunk)
                size += len(chunk)
    return {"path": str(path), "size": size, "md5": md5.hexdigest(), "sha256": sha.hexdigest()}








def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


_COLOURS = {"succeeded": "#1a7f37", "failed": "#cf222e", "skipped": "#9a6700"}


def write_run_html(record: dict[str, Any], target: Path) -> Path:
    """Write the page atomically; every value is escaped (records carry user text)."""
    rows: list[str] = []
    _rows(record.get("nodes", []), 0, rows)
    outputs = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(str(o.get('path', o.get('value'))))}</td>"
        f"<td class=n>{o.get('size', '')}</td><td><code>{escape(str(o.get('sha256', ''))[:16])}</code></td></tr>"
        for name, o in record.get("outputs", {}).items())
    status = record.get("status", "?")
    error = f"<p class=err>{escape(str(record['error']))}</p>" if record.get("error") else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(record.get('component', ''))} run</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}}.n{{text-align:right}}
.err{{color:#cf222e}}code{{font-size:12px}}</style></head><body>
<h1>{escape(record.get('component', ''))}: <span style="color:{_COLOURS.get(status, '#000')}">{escape(status)}</span></h1>
<p>{escape(record.get('started_at', ''))}, {record.get('duration_s', 0):.2f} s, run folder
<code>{escape(record.get('run_dir', ''))}</code></p>{error}
<h2>Nodes</h2><table><tr><th>node</th><th>ref</th><th>status</th><th>time (s)</th><th>peak RSS (MiB)</th>
<th>limits</th><th>command / error</th></tr>{''.join(rows)}</table>
<h2>Outputs</h2><table><tr><th>output</th><th>path</th><th>bytes</th><th>sha256</th></tr>{outputs}</table>
</body></html>
"""
    return write_text_atomic(target, page)


def _rows(nodes: list[dict[str, Any]], depth: int, rows: list[str]) -> None:
    for node in nodes:
        status = node.get("status", "")
        limits = node.get("limits") or {}
        limit = f"{limits['ram_bytes'] / 2**20:.0f} MiB, {limits['cpus']} CPU" if limits else ""
        peak = node.get("peak_rss_bytes")
        text = node.get("error") or node.get("command") or ""
        took = "" if node.get("duration_s") is None else f"{node['duration_s']:.2f}"
        peak_mib = "" if not peak else f"{peak / 2**20:.0f}"
        rows.append(
            f"<tr><td style='padding-left:{8 + 16 * depth}px'>{escape(node['id'])}</td><td>{escape(node['ref'])}</td>"
            f"<td style='color:{_COLOURS.get(status, '#000')}'>{escape(status)}</td>"
            f"<td class=n>{took}</td><td class=n>{peak_mib}</td><td>{escape(limit)}</td>"
            f"<td><code>{escape(text)}</code></td></tr>")
        _rows(node.get("nodes", []), depth + 1, rows)
