"""Progress: live bars in a terminal, plain timestamped lines when output goes to a log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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
    """One row for the suite, one for the current run, transient rows per phase.

    In a terminal the rows are rich's live bars. When output is redirected (``> log``, Slurm,
    CI, ``| tee``) a live display shows nothing until it ends, so instead every row that starts
    or ends prints one line, and a line with every open row is printed whenever ``interval``
    seconds pass without one: a log never goes quiet for longer than that.
    """

    def __init__(self, console: Console | None = None, *, enabled: bool = True, live: bool | None = None,
                 interval: float = 20.0):
        self.console = console or Console(stderr=True)
        live = self.console.is_terminal if live is None else live
        self.interval = interval
        self._lines = enabled and not live
        self._bars = RichProgress(
            SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, disable=not enabled or not live,
        )
        self._last_line = time.monotonic()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> Progress:
        self._bars.start()
        if self._lines:
            self._heartbeat = threading.Thread(target=self._beat, name="dpbench-progress", daemon=True)
            self._heartbeat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        self._bars.stop()

    def add(self, description: str, total: int | None) -> int:
        task = self._bars.add_task(description, total=total)
        self._line("start " + description.strip() + (f" (0/{total})" if total else ""))
        return task

    def advance(self, task: int, amount: float = 1) -> None:
        self._bars.advance(task, amount)
        row = self._task(task)
        if row.total is not None and row.completed >= row.total:
            self._line(f"done {row.description.strip()} ({_count(row)}, {_clock(row.elapsed)})")

    def describe(self, task: int, description: str) -> None:
        self._bars.update(task, description=description)

    def remove(self, task: int) -> None:
        row = self._task(task)
        if row.total is None or row.completed < row.total:  # a finished count was reported already
            self._line(f"end {row.description.strip()} ({_count(row) + ', ' if row.total else ''}"
                       f"{_clock(row.elapsed)})")
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

    @contextmanager
    def phase(self, description: str) -> Iterator[None]:
        """A transient row without a count, for one step of unknown length (a DPO round, sampling)."""
        task = self.add("  " + description, None)
        try:
            yield
        finally:
            self.remove(task)

    def status(self) -> str:
        """Every open row, outermost first: ``suite x 3/15 (1:02:11) › POPri rounds 1/3 (5:10)``."""
        return " › ".join(f"{row.description.strip()} "
                          f"({_count(row) + ', ' if row.total else ''}{_clock(row.elapsed)})"
                          for row in self._bars.tasks)

    def _task(self, task: int):
        return next(row for row in self._bars.tasks if row.id == task)

    def _line(self, text: str) -> None:
        if not self._lines:
            return
        self._last_line = time.monotonic()
        self.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", markup=False, highlight=False, soft_wrap=True)

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.interval)):
            if time.monotonic() - self._last_line >= self.interval and self._bars.tasks:
                self._line(self.status())


def _count(row) -> str:
    return f"{int(row.completed)}/{int(row.total)}"


def _clock(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
