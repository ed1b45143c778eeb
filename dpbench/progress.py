"""Progress bars: one row for the suite, one for the current run, transient rows per phase."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

T = TypeVar("T")


class Progress:
    """A thin wrapper over rich's live progress display, shared by runner, methods and evaluators."""

    def __init__(self, console: Console | None = None, *, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self._bars = RichProgress(
            SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, disable=not enabled,
        )

    def __enter__(self) -> Progress:
        self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bars.stop()

    def add(self, description: str, total: int | None) -> int:
        return self._bars.add_task(description, total=total)

    def advance(self, task: int, amount: float = 1) -> None:
        self._bars.advance(task, amount)

    def describe(self, task: int, description: str) -> None:
        self._bars.update(task, description=description)

    def remove(self, task: int) -> None:
        self._bars.remove_task(task)

    def track(self, items: Iterable[T], *, description: str, total: int | None = None) -> Iterator[T]:
        """Iterate with a transient row under the current run."""
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        task = self.add("  " + description, total)
        try:
            for item in items:
                yield item
                self.advance(task)
        finally:
            self.remove(task)
