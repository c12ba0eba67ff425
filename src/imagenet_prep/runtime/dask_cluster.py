"""Run the stages' tasks on a Dask cluster: same tasks, same bytes as the local pool.

Tasks describe work (which members of which archive, which shard); the workers
read the archives and write into DATASET over a shared filesystem, so image
bytes never pass through the scheduler.  Before any task runs, a probe on every
worker checks that it sees the same DATASET (a random token file the client
writes under DATASET/.imagenet-prep/) and the same archives (size and mtime)
at the same paths; a worker that joins later runs the same check before its
first task.  A failing task or a dead worker is retried by Dask (`RETRIES`);
a task that keeps failing stops the run with the worker's error.

`distributed` is an optional extra, imported only when a cluster is asked for.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from imagenet_prep import __version__
from imagenet_prep.errors import PrepError
from imagenet_prep.runtime.files import STATE_DIR, state_dir, write_atomic
from imagenet_prep.runtime.storage import RemotePath, as_path, listdir
from imagenet_prep.sources.archives import ROLES, find_archive

INSTALL_HINT = "pip install 'imagenet-prep[dask]'"
RETRIES = 2  # extra attempts per task after an exception (a dead worker is Dask's allowed-failures)
CONNECT_TIMEOUT = "30s"
WORKERS_TIMEOUT = 120.0  # seconds to wait for the first worker to join the scheduler
TOKEN_PREFIX = "dask-probe-"
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class SharedView:
    """What a worker must see exactly as the client does (small: it travels with every task)."""

    host: str
    version: str
    dataset: str
    token_name: str  # a file under DATASET/.imagenet-prep/ holding `token`
    token: str
    archives: str | None = None
    archive_stats: tuple[tuple[str, int, int], ...] = ()  # (file name, size, mtime in s)
    remote_archives: RemotePath | None = None  # archives in object storage: read directly
    remote_sizes: tuple[tuple[str, int], ...] = ()  # (object name, size)
    remote_dataset: RemotePath | None = None  # DATASET in object storage: written directly


def remote_dataset_problems(view: SharedView) -> list[str]:
    """What keeps this process from reading and writing DATASET in object storage: the
    client's token object must read back, and an object must be writable beside it."""
    assert view.remote_dataset is not None
    state = view.remote_dataset / STATE_DIR
    token = state / view.token_name
    try:
        if token.read_text() != view.token:
            return [f"sees another {token} than {view.host} does"]
        probe = state / f"{view.token_name}-{socket.gethostname()}-{os.getpid()}"
        write_atomic(probe, "probe\n", fsync=False)
        probe.unlink(missing_ok=True)
    except PrepError as e:
        return [f"cannot read and write {view.remote_dataset} ({e})"]
    return []


def remote_problems(view: SharedView) -> list[str]:
    """What keeps this process from reading the archives in object storage as the client
    does (each problem names the URL)."""
    if view.remote_archives is None:
        return []
    problems = []
    for name, size in view.remote_sizes:
        obj = view.remote_archives / name
        try:
            got = obj.stat().st_size
            obj.read_bytes(0, min(size, 512))  # a ranged read, as the tasks make
        except PrepError as e:
            problems.append(f"cannot read {e}")
            continue
        if got != size:
            problems.append(f"sees another {obj} than {view.host} does ({got} bytes; "
                            f"expected {size})")
    return problems


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, int(st.st_mtime)


def view_problems(view: SharedView) -> list[str]:
    """How this process's view of the shared paths differs from the client's (empty: same)."""
    problems = remote_problems(view)
    if view.version != __version__:
        problems.append(f"runs imagenet-prep {__version__}, {view.host} runs {view.version}")
    token_path = os.path.join(view.dataset, STATE_DIR, view.token_name)
    if view.remote_dataset is not None:
        problems += remote_dataset_problems(view)
    elif not os.path.isdir(view.dataset):
        problems.append(f"cannot see DATASET {view.dataset}")
    else:
        try:
            with open(token_path) as f:
                same = f.read() == view.token
        except OSError:
            same = False
        if not same:
            problems.append(f"sees another folder at DATASET {view.dataset} than {view.host} "
                            f"does ({token_path} is missing or differs)")
    if view.archives is not None:
        if not os.path.isdir(view.archives):
            problems.append(f"cannot see the archives folder {view.archives}")
        else:
            for name, size, mtime in view.archive_stats:
                path = os.path.join(view.archives, name)
                got = _stat(path)
                if got != (size, mtime):
                    seen = "missing" if got is None else f"{got[0]} bytes, mtime {got[1]}"
                    problems.append(f"sees another {path} than {view.host} does ({seen}; "
                                    f"expected {size} bytes, mtime {mtime})")
    return problems


def _probe(view: SharedView) -> tuple[str, list[str]]:
    """Run on every worker by `client.run`: (host name, problems)."""
    return socket.gethostname(), view_problems(view)


_checked: set[str] = set()  # tokens this worker process has already verified


def run_checked(fn: Callable[[T], R], view: SharedView, task: T) -> tuple[str | None, R | None]:
    """Run one task on a worker: (None, fn(task)), or (why, None) if this worker sees other
    paths than the client (a worker that joined after the start-up probe)."""
    if view.token not in _checked:
        problems = view_problems(view)
        if problems:
            from distributed import get_worker

            return _refusal(get_worker().address, socket.gethostname(), problems), None
        _checked.add(view.token)
    return None, fn(task)


def _refusal(address: str, host: str, problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return (f"Dask worker {address} on {host} {problems[0]}{more}; every worker must see the "
            "archives and DATASET at the same paths as this machine")


def dask_setup(worker: Any) -> None:
    """Preloaded into the workers of a `--dask-local` cluster.  Ctrl-C in the terminal reaches
    them too, but stopping is the client's job: it cancels the tasks and closes the cluster."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise PrepError(f"--scheduler and --dask-local need Dask: {INSTALL_HINT}") from None
    return distributed


class DaskExecutor:
    """A Dask client for one command: `with DaskExecutor(...) as ex: run_tasks(fn, tasks, ex)`.

    `scheduler` connects to a running cluster; otherwise `local_workers` processes are
    started as a LocalCluster for the run and closed at the end.  `dataset` and
    `archives` (absolute paths) are the folders the workers must share with this machine.
    """

    def __init__(self, *, dataset: Path, archives: Path | None = None,
                 scheduler: str | None = None, local_workers: int = 0,
                 retries: int = RETRIES, log: Callable[[str], Any] | None = None) -> None:
        if scheduler is None and local_workers < 1:
            raise PrepError(f"--dask-local needs at least 1 worker, not {local_workers}")
        self.dataset = as_path(dataset)
        self.archives = archives if archives is None or isinstance(archives, RemotePath) \
            else Path(archives)
        self.scheduler = scheduler
        self.local_workers = local_workers
        self.retries = retries
        self.log = log or (lambda line: print(line, file=sys.stderr))
        self._cluster: Any = None
        self._client: Any = None
        self._token_path: Path | None = None
        self.view: SharedView | None = None

    # --- start and stop ------------------------------------------------------------

    def __enter__(self) -> DaskExecutor:
        distributed = _import_distributed()
        try:
            self._connect(distributed)
            self.view = self._write_view()
            self._probe_all()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self, distributed: Any) -> None:
        if self.scheduler is None:
            self._cluster = distributed.LocalCluster(
                n_workers=self.local_workers, threads_per_worker=1, processes=True,
                dashboard_address="127.0.0.1:0",  # a free port: 8787 may be taken
                preload=[__name__],  # dask_setup
                # a failed attempt is retried, a last failure reaches the user as one line:
                # the workers' own error logs would only repeat it (once per attempt)
                silence_logs=logging.CRITICAL,
            )
            where = f"a local cluster of {self.local_workers} worker processes"
        else:
            where = self.scheduler
        target = self._cluster if self._cluster is not None else self.scheduler
        try:
            self._client = distributed.Client(target, timeout=CONNECT_TIMEOUT)
        except ValueError as e:  # not an address Dask knows
            raise PrepError(f"--scheduler {self.scheduler}: {e}") from None
        except (OSError, TimeoutError) as e:
            raise PrepError(f"cannot reach the Dask scheduler at {self.scheduler}: {e}") from None
        try:
            self._client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
        except TimeoutError:
            raise PrepError(
                f"no Dask worker joined {where} within {WORKERS_TIMEOUT:.0f} s; start some "
                f"with `dask worker {self._client.scheduler.address}`") from None

    def _write_view(self) -> SharedView:
        """Write this run's token into DATASET and note the archives the workers must see."""
        folder = state_dir(self.dataset)
        for old in listdir(folder):  # a killed run's token (we hold the lock)
            if old.startswith(TOKEN_PREFIX):
                (folder / old).unlink(missing_ok=True)
        token = secrets.token_hex(16)
        name = TOKEN_PREFIX + token[:12]
        self._token_path = folder / name
        write_atomic(self._token_path, token)
        stats = []
        archives = self.archives if isinstance(self.archives, Path) and self.archives.is_dir() \
            else None
        remote = self.archives if isinstance(self.archives, RemotePath) else None
        sizes = []
        if remote is not None:
            for role in ROLES:
                obj = find_archive(remote, role)
                if obj is not None:
                    sizes.append((obj.name, obj.stat().st_size))
        if archives is not None:
            for role in ROLES:
                path = find_archive(archives, role)
                if path is not None and (st := _stat(str(path))) is not None:
                    stats.append((path.name, *st))
        return SharedView(
            host=socket.gethostname(), version=__version__, dataset=str(self.dataset),
            token_name=name, token=token, archives=None if archives is None else str(archives),
            archive_stats=tuple(stats), remote_archives=remote, remote_sizes=tuple(sizes),
            remote_dataset=self.dataset if isinstance(self.dataset, RemotePath) else None,
        )

    def _probe_all(self) -> None:
        """Refuse before any task runs if a worker cannot see the shared folders as we do."""
        results = self._client.run(_probe, self.view, on_error="return")
        for address, res in sorted(results.items()):
            if isinstance(res, BaseException):
                raise PrepError(
                    f"Dask worker {address} cannot run imagenet-prep's probe "
                    f"({type(res).__name__}: {res}); install imagenet-prep {__version__} "
                    "on every worker")
            host, problems = res
            if problems:
                raise PrepError(_refusal(address, host, problems))
        threads = sum(self._client.nthreads().values())
        self.log(f"dask: {len(results)} workers ({threads} threads) at "
                 f"{self._client.scheduler.address} see DATASET"
                 + (" and the archives" if self.view and self.view.archives else ""))

    def close(self) -> None:
        if self._token_path is not None:
            self._token_path.unlink(missing_ok=True)
            self._token_path = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    # --- running tasks -------------------------------------------------------------

    def run(self, fn: Callable[[T], R], tasks: Iterable[T], window: int = 0) -> Iterator[R]:
        """Yield fn(task) per task as each completes, keeping at most `window` in flight
        (default: 4 per worker thread, which hides the scheduler's round trips), so the
        client never holds every task.  Results are fetched in the background."""
        if self._client is None or self.view is None:
            raise PrepError("the Dask executor was used outside its `with` block")
        from distributed import KilledWorker, as_completed

        client, view = self._client, self.view
        window = window or 4 * max(1, sum(client.nthreads().values()))
        todo = iter(tasks)
        done = as_completed(loop=client.loop, with_results=True)
        pending: set[Any] = set()

        def submit_one() -> None:
            for task in todo:
                f = client.submit(run_checked, fn, view, task, pure=False, retries=self.retries)
                pending.add(f)
                done.add(f)
                return

        try:
            for _ in range(window):
                submit_one()
            while True:
                try:
                    f, (refused, result) = next(done)
                except StopIteration:
                    return
                except KilledWorker as e:
                    raise PrepError(f"a task keeps killing Dask workers (out of memory?): {e}"
                                    ) from None
                pending.discard(f)
                f.release()
                if refused is not None:
                    raise PrepError(refused)
                submit_one()
                yield result  # type: ignore[misc]
        finally:
            if pending:
                client.cancel(list(pending))
