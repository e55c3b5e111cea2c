"""``python -m eotwin`` runs the CLI."""

from eotwin.cli.main import entry

entry()
