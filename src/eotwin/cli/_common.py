"""What every CLI command shares: output consoles, verbosity, progress and the error boundary."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rich.console import Console

from eotwin.progress import RichProgress


class ResultConsole(Console):
    """Results on stdout: wrapped for a person at a terminal, never wrapped when piped (scripts parse them)."""

    @property
    def soft_wrap(self) -> bool:  # decided at print time: tests and pipes swap sys.stdout after import
        return not self.is_terminal

    @soft_wrap.setter
    def soft_wrap(self, value: bool) -> None:  # Console.__init__ assigns it; the terminal decides
        pass


out = ResultConsole(highlight=False, markup=False)  # results (stdout); markup only where a call asks for it
err = Console(stderr=True)  # messages, progress, errors

# libraries that log every retry at WARNING; -q keeps only their errors (the CLI reports the final failure itself)
CHATTY_LOGGERS = ("urllib3", "urllib3.connectionpool", "pystac_client", "botocore", "aiohttp", "fsspec", "distributed")


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
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if verbosity < 0 else logging.NOTSET)


def progress() -> RichProgress:
    """A progress reporter honouring ``-q`` (no bars when quiet)."""
    return RichProgress(enabled=settings.verbosity >= 0)


def say(message: str) -> None:
    """An informational line on stderr, hidden by ``-q``; plain text (paths and ids may hold ``[``)."""
    if settings.verbosity >= 0:
        err.print(message, markup=False, highlight=False)
