"""Run pure tasks on a local process pool, in-process with one worker, or on an executor.

Tasks are pure functions of their arguments, so results do not depend on the
number of workers or where they run; callers that need order sort by task key.
`workers` is what every stage passes through: an int (pool size), None (one
process per core), or a `TaskExecutor` such as the Dask cluster of
`imagenet_prep.runtime.dask_cluster`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol, TypeVar, runtime_checkable

from imagenet_prep.runtime.files import close_inherited_locks

_PR_SET_PDEATHSIG = 1
T = TypeVar("T")
R = TypeVar("R")


@runtime_checkable
class TaskExecutor(Protocol):
    """Somewhere else to run tasks: yields fn(task) per task as each completes."""

    def run(self, fn: Callable[[T], R], tasks: Iterable[T], window: int = 0) -> Iterator[R]:
        ...


Workers = int | TaskExecutor | None


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def _init_worker(parent: int) -> None:
    """Prepare a pool worker.

    Ctrl-C is left to the main process, which stops cleanly and reports once.  A
    worker dies with its parent (a killed run must not leave orphans writing into
    the dataset while the rerun starts), and it drops the inherited dataset lock.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    close_inherited_locks()


def run_tasks(
    fn: Callable[[T], R], tasks: Iterable[T], workers: Workers = None, *, window: int = 0,
) -> Iterator[R]:
    """Yield fn(task) for each task as it completes, with at most `window` tasks in flight."""
    if workers is not None and not isinstance(workers, int):
        yield from workers.run(fn, tasks, window)
        return
    workers = workers or default_workers()
    if workers <= 1:
        for t in tasks:
            yield fn(t)
        return
    window = window or workers * 2
    pool = ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(os.getpid(),)
    )
    pending: set[Future[Any]] = set()
    try:
        for t in tasks:
            pending.add(pool.submit(fn, t))
            if len(pending) >= window:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
