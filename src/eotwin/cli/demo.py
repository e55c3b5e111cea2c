"""``eotwin demo``: run every capability on the embedded sample scene and write ``index.html``."""

from __future__ import annotations

from pathlib import Path

import typer

from eotwin.cli import _common


def demo_command(
    output: Path = typer.Option(Path("demo-output"), "--output", "-o", help="Directory for all demo outputs."),
    only: list[str] = typer.Option(None, "--only", help="Run only these sections (e.g. --only pointcloud)."),
) -> None:
    """Run every capability on the sample scene and link the results from OUTPUT/index.html."""
    from eotwin.report.demo import run_demo

    index = run_demo(output, only=only or None, progress=_common.progress())
    _common.out.print(f"demo written: {index}")
