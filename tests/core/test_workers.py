"""The thread pool the data-informed methods run a batch's layers on."""

from __future__ import annotations

import threading

import pytest

from graphprune.workers import Workers, cores


def test_cores_is_the_affinity_mask():
    assert 1 <= cores()


def test_results_keep_the_tasks_order_and_use_threads():
    seen = set()

    def task(i):
        seen.add(threading.current_thread().name)
        return i * i

    with Workers(2) as workers:
        assert workers.each(task, range(50)) == [i * i for i in range(50)]
    assert all(name.startswith("graphprune") for name in seen)


def test_one_worker_runs_in_the_callers_thread():
    with Workers(1) as workers:
        assert workers.each(lambda _: threading.current_thread(), [0]) == [threading.current_thread()]


def test_a_task_error_reaches_the_caller():
    def task(i):
        if i == 3:
            raise ValueError("three")
        return i

    with Workers(2) as workers, pytest.raises(ValueError, match="three"):
        workers.each(task, range(6))
