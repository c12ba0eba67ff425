"""Atomic file writes and the dataset lock.

Every output is written as `.NAME.ipart` in its final folder and renamed when
complete, so a final name always holds a finished file and a rerun only has to
look at final names.  `check` reports any `.ipart` left behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from imagenet_prep.errors import LockedError, PrepError
from imagenet_prep.layout import STATE_DIR, TMP_SUFFIX

_held_locks: set[int] = set()  # lock fds of this process, closed in forked workers


def tmp_path(final: Path) -> Path:
    """The temporary name a file is written under before it is renamed to `final`."""
    return final.with_name(f".{final.name}{TMP_SUFFIX}")


def is_tmp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def os_error(path: Path | str, e: OSError) -> PrepError:
    """Turn an OSError into a one-line PrepError naming the file."""
    reason = {
        errno.ENOSPC: "no space left on device",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EDQUOT: "disk quota exceeded",
    }.get(e.errno or 0, e.strerror or str(e))
    return PrepError(f"{path}: cannot write: {reason}")


@contextlib.contextmanager
def atomic_file(final: Path, *, fsync: bool = False) -> Iterator[IO[bytes]]:
    """Open a temporary file for `final`; rename it into place only if the block succeeds."""
    tmp = tmp_path(final)
    try:
        f = open(tmp, "wb")
    except OSError as e:
        raise os_error(tmp, e) from None
    try:
        with f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        _unlink_quietly(tmp)
        raise os_error(final, e) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def write_atomic(final: Path, data: bytes | str, *, fsync: bool = True) -> None:
    """Write a whole small file atomically (state files, CSV, synsets.txt)."""
    with atomic_file(final, fsync=fsync) as f:
        f.write(data.encode() if isinstance(data, str) else data)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC  # as open(path, "wb")


def create_atomic(final: str, fill: Callable[[int], None]) -> None:
    """`atomic_file` for the per-image hot path (1.28 M files): plain strings and a file
    descriptor, no Path or file object.  `fill(fd)` writes the content; the temporary
    name is renamed to `final`, or removed on any failure."""
    head, tail = os.path.split(final)
    tmp = os.path.join(head, f".{tail}{TMP_SUFFIX}")  # tmp_path, on strings
    try:
        fd = os.open(tmp, _CREATE, 0o666)
    except OSError as e:
        raise os_error(tmp, e) from None
    try:
        try:
            fill(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except OSError as e:
        _unlink_quietly(tmp)
        raise os_error(final, e) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def write_fd(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (finishing short writes)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink_quietly(path: Path | str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def ensure_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(path, e) from None
    return path


def state_dir(dataset: Path) -> Path:
    """Where imagenet-prep keeps its records for a dataset folder."""
    return ensure_dir(dataset / STATE_DIR)


@contextlib.contextmanager
def dataset_lock(dataset: Path) -> Iterator[None]:
    """Hold an exclusive lock on the dataset folder for one run.

    A kernel lock (flock), so a killed run never leaves it stuck.
    """
    lock = state_dir(dataset) / "lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise LockedError(
                f"{dataset}: another imagenet-prep run (pid {holder}) is working on this "
                "dataset; wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _held_locks.add(fd)
        yield
    finally:
        _held_locks.discard(fd)
        os.close(fd)


def close_inherited_locks() -> None:
    """In a forked worker: drop the parent's lock fds, so only the parent holds the lock."""
    for fd in list(_held_locks):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()
