"""Threads for per-layer numpy and compiled work: the cores this process may use, one task per layer.

Why threads, and why one task per layer: the per-layer work of the data-informed methods (a layer's im2col rows,
its BLAS products, its compiled max-product loop) releases the GIL, and layers are independent, so running a
batch's layers side by side uses every core with each BLAS call single-threaded. Letting OpenBLAS split each
(small: one batch × one layer) product over threads instead wasted its second thread spinning between calls, on
a machine shared with other work most of all (resnet50 at 64 px on a busy 2-core machine: 32 s with it, 16 s
single-threaded). A worker here waits on a queue, so an idle one takes no core.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

from threadpoolctl import threadpool_limits

T = TypeVar("T")
R = TypeVar("R")


def cores() -> int:
    """The cores this process may run on (its affinity mask: ``taskset``, a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Workers:
    """A pool of :func:`cores` threads (or ``n``) for independent tasks; with one, tasks run in the caller's thread.

    A context manager: inside it BLAS is single-threaded when there are several workers (the tasks are the
    parallelism), and the threads end on exit. :meth:`each` returns the results in the tasks' order and raises
    the first task's exception, as a loop would."""

    def __init__(self, n: int | None = None):
        self.n = max(1, n or cores())
        self.pool: ThreadPoolExecutor | None = None
        self.limits = None

    def __enter__(self) -> "Workers":
        if self.n > 1:
            self.limits = threadpool_limits(1, user_api="blas")
            self.pool = ThreadPoolExecutor(self.n, thread_name_prefix="graphprune")
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
        if self.limits is not None:
            self.limits.restore_original_limits()
            self.limits = None

    def each(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        if self.pool is None:
            return [fn(item) for item in items]
        return list(self.pool.map(fn, items))
