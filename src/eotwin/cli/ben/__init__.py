"""``eotwin ben``: BigEarthNet data, analysis, training, evaluation and prediction.

Commands live in submodules (``data``, ``training``) that register themselves on ``app``; each
imports its heavy libraries (torch, pandas) inside the command functions.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="BigEarthNet end to end: encode, info, analyze, train, evaluate, predict.", no_args_is_help=True)

# command modules (each adds its commands to ``app`` on import):
from eotwin.cli.ben import data  # noqa: E402, F401
from eotwin.cli.ben import train as _train  # noqa: E402, F401
