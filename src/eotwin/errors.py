"""The one exception type users can cause.

Everything a user can get wrong (a missing file, a raster without CRS, a fraction out of range,
a 401 from a service) is raised as :class:`EotwinError` with a one-line message. The CLI turns
it into ``error: <message>`` and a non-zero exit in one place (``eotwin.cli.main``).
"""

from __future__ import annotations


class EotwinError(Exception):
    """An error the user can fix; its message is one line and never holds a secret."""

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(" ".join(str(message).split()))
        if exit_code is not None:
            self.exit_code = exit_code


class Terminated(BaseException):
    """SIGTERM arrived (a container stop, ``kill``): unwinds like Ctrl-C so staging files are removed."""
