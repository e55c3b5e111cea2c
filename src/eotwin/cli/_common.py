"""What every CLI command shares: output consoles, verbosity, progress and the error boundary."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rich.console import Console

from eotwin.progress import RichProgress

out = Console()  # results (stdout)
err = Console(stderr=True)  # messages, progress, errors


@dataclass
class Settings:
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    debug: bool = False


settings = Settings()


def configure_logging(verbosity: int) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err, show_path=False)], force=True)
    # rasterio reports every GDAL error at INFO; eotwin turns the ones that matter into one-line errors
    logging.getLogger("rasterio").setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)


def progress() -> RichProgress:
    """A progress reporter honouring ``-q`` (no bars when quiet)."""
    return RichProgress(enabled=settings.verbosity >= 0)


def say(message: str) -> None:
    """An informational line on stderr, hidden by ``-q``."""
    if settings.verbosity >= 0:
        err.print(message)
