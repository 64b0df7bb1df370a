"""Progress bars on stderr for steps that can take more than a second, shared by every part of graphprune.

One rich ``Progress`` display at a time (rich allows only one live display): a step started while another is
running becomes a second line of the same display. Bars show only when stderr is a terminal, never in pipes or
logs, and never after :func:`set_quiet` (the CLI's ``--quiet``). ``set_forced(True)`` shows them anyway (tests).

    with progress.task("verifying"):            # a spinner with elapsed time
        ...
    for batch in progress.track(batches, "calibrating", total=n):
        ...
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

_state = {"quiet": False, "forced": False, "active": None, "console": None}


def set_quiet(quiet: bool = True) -> None:
    """No bars at all (``--quiet``)."""
    _state["quiet"] = bool(quiet)


def set_forced(forced: bool = True, console=None) -> None:
    """Show bars even when stderr is not a terminal (tests); ``console``: a rich Console to draw on."""
    _state["forced"] = bool(forced)
    _state["console"] = console


def enabled(progress: bool | None = None) -> bool:
    """Whether bars show: ``progress`` when given (an explicit per-call choice), else stderr is a TTY or forced;
    never when quiet."""
    if _state["quiet"]:
        return False
    if progress is not None:
        return progress
    return _state["forced"] or sys.stderr.isatty()


def _console():
    from rich.console import Console

    return _state["console"] or Console(stderr=True)


@contextmanager
def task(description: str, total: float | None = None, *, progress: bool | None = None) -> Iterator[Callable[..., None]]:
    """A line of the shared display for the duration of the block; yields ``advance(n=1)``. A spinner when
    ``total`` is None, a bar otherwise. Does nothing (and costs nothing) when bars are off."""
    if not enabled(progress):
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    owner = _state["active"] is None
    if owner:
        _state["active"] = Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"),
                                    BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=_console(),
                                    transient=True)
    bar = _state["active"]
    tid = bar.add_task(description, total=total)
    if owner:
        bar.start()  # after add_task, so even a short step is drawn once
    else:
        bar.refresh()
    try:
        yield lambda n=1: bar.advance(tid, n)
    finally:
        if owner:
            bar.stop()
            _state["active"] = None
        else:
            bar.remove_task(tid)


def track(iterable: Iterable[T], description: str, total: float | None = None, *,
          progress: bool | None = None) -> Iterator[T]:
    """Iterate ``iterable`` with a bar (``total`` defaults to ``len(iterable)`` when it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with task(description, total, progress=progress) as advance:
        for item in iterable:
            yield item
            advance()
