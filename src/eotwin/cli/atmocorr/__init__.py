"""``eotwin atmocorr``: AI atmospheric correction of Sentinel-2 L1C, grounded in 6S.

Commands live in submodules (``products`` for run/evaluate, ``model`` for build-lut/train) that
register themselves on ``app``; heavy imports stay inside the command functions.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Sentinel-2 L1C -> L2A-like surface reflectance: run, evaluate, build-lut, train.", no_args_is_help=True)

# command modules (each adds its commands to ``app`` on import):
from eotwin.cli.atmocorr import evaluate as _evaluate  # noqa: E402,F401  (evaluate)
from eotwin.cli.atmocorr import pairs as _pairs  # noqa: E402,F401  (pairs)
from eotwin.cli.atmocorr import run as _run  # noqa: E402,F401  (run, sample-l1c)
from eotwin.cli.atmocorr import train as _train  # noqa: E402,F401  (train)
