"""The scheduling the studies share: every run a study lists as due is done once, ``jobs`` single-threaded
trainings at a time in fresh processes, and a run that already left its record is read instead of rerun; a
method's rate is picked once its whole grid has run."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from typing import Any, Protocol


class Schedule(Protocol):
    """What the loop needs of a study: the runs due so far (more may become due as records arrive: the seeds
    after a finished grid) and the records found or made, by run."""

    records: dict[Any, dict[str, Any]]

    def due(self) -> list[Any]: ...


def run_due(
    study: Schedule,
    *,
    jobs: int,
    finished: Callable[[Any], dict[str, Any] | None],
    run: Callable[[Any], dict[str, Any]],
    describe: Callable[[dict[str, Any]], str],
    logger: logging.Logger,
    start_runs: bool = True,
) -> None:
    """Fill ``study.records`` until every due run has a record: ``finished(task)`` reads a finished run's
    record (None if there is none), ``run(task)`` trains one in a worker (picklable: a module-level function or
    a ``functools.partial`` of one) and ``describe(record)`` words its result for the log. With
    ``start_runs=False`` only records already on disk are read."""
    in_flight: dict[Future, Hashable] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=_fresh_workers(run)) as pool:
        while True:
            found = False  # a record read from disk can make more runs due
            for task in study.due():
                if task in study.records or task in in_flight.values():
                    continue
                record = finished(task)
                if record is not None:
                    study.records[task] = record
                    found = True
                elif len(in_flight) < jobs and start_runs:
                    logger.info("running %s", task.key)
                    in_flight[pool.submit(run, task)] = task
            if found:
                continue
            if not in_flight:
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                task = in_flight.pop(future)
                study.records[task] = future.result()
                logger.info("finished %s: %s", task.key, describe(study.records[task]))


def _fresh_workers(run: Callable[[Any], dict[str, Any]]) -> BaseContext:
    """Workers forked from multiprocessing's fork server, which has imported ``run``'s module (torch, transformers
    and SpeechBrain with it: 3 to 4 s of CPU) once for every study of this process; they inherit no thread pool
    and no torch state, since the server imports and never computes, and find the benchmarks package on this
    process's sys.path (the repository root under python -m)."""
    function = run.func if isinstance(run, functools.partial) else run
    context = get_context("forkserver")
    context.set_forkserver_preload([function.__module__])  # read when the server starts: the first study's
    return context


def picked_rate(
    grid: Sequence[Any], records: dict[Any, dict[str, Any]], loss: Callable[[dict[str, Any]], float]
) -> float | None:
    """The rate (``task.lr``) of the grid's run whose record has the lowest ``loss``, once every run of the grid
    has a record (ties: the lower rate); None before."""
    if not all(task in records for task in grid):
        return None
    return min(grid, key=lambda task: (loss(records[task]), task.lr)).lr
