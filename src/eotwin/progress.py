"""Progress reporting that pipelines can use without knowing about the terminal.

Pipelines accept an optional :class:`ProgressReporter`; the CLI passes a rich-backed one, tests
and library callers pass nothing (``NullProgress``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressTask(Protocol):
    def advance(self, amount: float = 1) -> None: ...


class ProgressReporter(Protocol):
    def task(self, description: str, total: float | None) -> Iterator[ProgressTask]: ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        return None


class NullProgress:
    """Reports nothing: the default for library calls and tests."""

    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[ProgressTask]:
        yield _NullTask()


class _RichTask:
    def __init__(self, progress, task_id) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task_id, amount)


class RichProgress:
    """A rich progress bar per task, drawn on stderr; silent when ``enabled`` is false."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    @contextmanager
    def task(self, description: str, total: float | None) -> Iterator[ProgressTask]:
        if not self.enabled:
            yield _NullTask()
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
            task_id = progress.add_task(description, total=total)
            yield _RichTask(progress, task_id)


def ensure_progress(progress: ProgressReporter | None) -> ProgressReporter:
    return progress if progress is not None else NullProgress()
