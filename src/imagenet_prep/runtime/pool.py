"""Run pure tasks on a local process pool, in-process with one worker, or on an executor.

Tasks are pure functions of their arguments, so results do not depend on the
number of workers or where they run; callers that need order sort by task key.
`workers` is what every stage passes through: an int (pool size), None (one
process per core), or a `TaskExecutor` such as the Dask cluster of
`imagenet_prep.runtime.dask_cluster`.

A pool never has more processes than tasks, and `check_workers` refuses a count
below 1 or above MAX_WORKERS_PER_CORE per core (a fork pool starts all of its
processes at once: `--workers 10000` would be ended by the kernel's OOM killer).
A worker that dies mid-task (that same OOM killer, a kill -9) stops the run with a
one-line WorkerDiedError, after the temporary files it left are removed (those of
the datasets this process holds with `dataset_lock`).
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar, runtime_checkable

from imagenet_prep.errors import OptionError, WorkerDiedError
from imagenet_prep.runtime.files import close_inherited_locks, remove_tmp_files_of_held_datasets

_PR_SET_PDEATHSIG = 1
T = TypeVar("T")
R = TypeVar("R")


@runtime_checkable
class TaskExecutor(Protocol):
    """Somewhere else to run tasks: yields fn(task) per task as each completes."""

    def run(self, fn: Callable[[T], R], tasks: Iterable[T], window: int = 0) -> Iterator[R]:
        ...


Workers = int | TaskExecutor | None


MAX_WORKERS_PER_CORE = 4  # the tasks read, decode and write: a few per core keep a core busy
WORKER_DIED = ("a worker process died (killed by the system, out of memory?); run the same "
               "command again to resume, with fewer --workers if it happens again")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def max_workers() -> int:
    return MAX_WORKERS_PER_CORE * default_workers()


def workers_problem(n: int) -> str | None:
    """Why `n` worker processes is refused, or None when it is fine."""
    if n < 1:
        return (f"must be at least 1, not {n} (leave it out for one per core: "
                f"{default_workers()} here)")
    if n > max_workers():
        return (f"at most {max_workers()} on this machine ({MAX_WORKERS_PER_CORE} per core, "
                f"{default_workers()} cores), not {n}: more processes only add memory")
    return None


def check_workers(n: int | None, option: str = "--workers") -> int | None:
    """`n` itself when it is a sane number of worker processes (None: one per core);
    otherwise a one-line OptionError naming `option`."""
    if n is not None and (problem := workers_problem(n)) is not None:
        raise OptionError(f"{option}: {problem}")
    return n


def workers_type(text: str) -> int:
    """An argparse `type` for --workers N: the same rule as `check_workers`."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if (problem := workers_problem(n)) is not None:
        raise argparse.ArgumentTypeError(problem)
    return n


def _init_worker(parent: int) -> None:
    """Prepare a pool worker.

    Ctrl-C is left to the main process, which stops cleanly and reports once.  SIGTERM
    ends a worker at once (the pool itself stops workers that way when one died, and
    the main process's handler of runtime.signals is not for workers).  A worker dies
    with its parent (a killed run must not leave orphans writing into the dataset while
    the rerun starts), and it drops the inherited dataset lock.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    close_inherited_locks()


def run_tasks(
    fn: Callable[[T], R], tasks: Iterable[T], workers: Workers = None, *, window: int = 0,
) -> Iterator[R]:
    """Yield fn(task) for each task as it completes, with at most `window` tasks in flight.

    `workers` is checked by `check_workers` (an OptionError before any task runs).
    """
    if workers is not None and not isinstance(workers, int):
        yield from workers.run(fn, tasks, window)
        return
    workers = check_workers(workers) or default_workers()
    todo = iter(tasks)
    head = list(itertools.islice(todo, workers))  # never more processes than tasks
    workers = min(workers, len(head))
    todo = itertools.chain(head, todo)
    if workers <= 1:
        for t in todo:
            yield fn(t)
        return
    window = window or workers * 2
    pool = ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(os.getpid(),)
    )
    pending: set[Future[Any]] = set()
    try:
        for t in todo:
            pending.add(pool.submit(fn, t))
            if len(pending) >= window:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
    except BrokenProcessPool:
        pending = set()
        pool.shutdown(wait=True, cancel_futures=True)  # every worker is gone after this
        remove_tmp_files_of_held_datasets()  # what the dead (and the stopped) ones left
        raise WorkerDiedError(WORKER_DIED) from None
    except BaseException:
        # Ctrl-C or SIGTERM: the workers finish their task.  But a SIGTERM sent to the
        # whole process group (systemd, a container stop) ended them mid-task as well.
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        if getattr(pool, "_broken", False):  # CPython's flag: a worker died
            remove_tmp_files_of_held_datasets()
        raise
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
