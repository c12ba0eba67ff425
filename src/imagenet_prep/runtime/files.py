"""Atomic file writes and the dataset lock (in a bucket: runtime/bucket_lock.py).

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

from imagenet_prep.errors import AccessError, LockedError, NoSpaceError, PrepError, os_error
from imagenet_prep.layout import LOCK_NAME, STATE_DIR, TMP_SUFFIX
from imagenet_prep.runtime.bucket_lock import bucket_lock
from imagenet_prep.runtime.storage import RemotePath

__all__ = ["os_error"]  # re-exported: the stages import it from here

# Lock fds of this process (closed in forked workers) -> the dataset a writer holds, or
# None for a read-only hold (report on a dataset it cannot write).
_held_locks: dict[int, Path | None] = {}


def tmp_path(final: Path) -> Path:
    """The temporary name a file is written under before it is renamed to `final`."""
    return final.with_name(f".{final.name}{TMP_SUFFIX}")


def is_tmp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


@contextlib.contextmanager
def atomic_file(final: Path, *, fsync: bool = False) -> Iterator[IO[bytes]]:
    """Open a temporary file for `final`; rename it into place only if the block succeeds
    (an object in a bucket: uploaded whole only if the block succeeds)."""
    if isinstance(final, RemotePath):
        with final.upload() as up:
            yield up
        return
    tmp = tmp_path(final)
    try:  # the open inside: a signal handled as it returns must not leave the file
        try:
            f = open(tmp, "wb")
        except OSError as e:
            raise os_error(tmp, e) from None
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


def write_if_changed(final: Path, data: bytes | str) -> bool:
    """Write a small derived file (card, index, metadata) only when its bytes differ; a
    damaged one, even one that is no longer text, is rewritten.  True when written."""
    want = data.encode() if isinstance(data, str) else data
    if final.is_file() and final.read_bytes() == want:
        return False
    write_atomic(final, want)
    return True


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC  # as open(path, "wb")


def create_atomic(final: str, fill: Callable[[int], None]) -> None:
    """`atomic_file` for the per-image hot path (1.28 M files): plain strings and a file
    descriptor, no Path or file object.  `fill(fd)` writes the content; the temporary
    name is renamed to `final`, or removed on any failure."""
    head, tail = os.path.split(final)
    tmp = os.path.join(head, f".{tail}{TMP_SUFFIX}")  # tmp_path, on strings
    try:  # the open inside: a signal handled as it returns must not leave the file
        try:
            fd = os.open(tmp, _CREATE, 0o666)
        except OSError as e:
            raise os_error(tmp, e) from None
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


def check_writable(folder: Path) -> None:
    """Refuse at once, in one line, a folder this process cannot write files into
    (permissions, another user's folder, a read-only or full file system)."""
    probe = folder / f".imagenet-prep-probe-{os.getpid()}{TMP_SUFFIX}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"\n")
        finally:
            os.close(fd)
    except OSError as e:
        _unlink_quietly(probe)
        raise os_error(folder, e) from None
    finally:  # also on Ctrl-C or SIGTERM
        _unlink_quietly(probe)


@contextlib.contextmanager
def dataset_lock(dataset: Path, *, read_only: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the dataset folder for one run.

    A kernel lock (flock), so a killed run never leaves it stuck.  A dataset this
    process cannot write (read-only, another user's, a full disk) is refused here in
    one line, before any work.  With `read_only` (a command that only reads the
    dataset, such as `report --out` elsewhere) such a dataset is locked through its
    existing lock file opened for reading (writers stay out while it reads), or read
    without a lock when it has none.
    """
    if isinstance(dataset, RemotePath):  # an object created only where none is
        with bucket_lock(dataset, read_only=read_only):
            yield
        return
    lock = Path(dataset) / STATE_DIR / LOCK_NAME
    writer = True
    try:
        state_dir(dataset)
        fd: int | None = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except (OSError, PrepError) as e:
        if not read_only or not _cannot_write(e):
            raise e if isinstance(e, PrepError) else os_error(lock, e) from None
        writer = False
    if not writer:
        fd = _open_for_reading(lock)
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise LockedError(
                f"{dataset}: another imagenet-prep run (pid {holder}) is working on this "
                "dataset; wait for it to finish"
            ) from None
        if writer:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
            except OSError as e:
                if not read_only:
                    raise os_error(lock, e) from None
        _held_locks[fd] = Path(dataset) if writer and not read_only else None
        yield
    finally:
        _held_locks.pop(fd, None)
        os.close(fd)


_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _cannot_write(e: BaseException) -> bool:
    """Whether an error opening the lock means the dataset cannot be written (as opposed
    to not being there at all)."""
    if isinstance(e, OSError):
        return e.errno in _UNWRITABLE
    return isinstance(e, AccessError | NoSpaceError)


def _open_for_reading(lock: Path) -> int | None:
    try:
        return os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # no run has ever written here
    except OSError as e:
        raise os_error(lock, e, "read") from None


def close_inherited_locks() -> None:
    """In a forked worker: drop the parent's lock fds, so only the parent holds the lock."""
    for fd in list(_held_locks):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()


def remove_tmp_files(root: Path) -> int:
    """Remove every temporary file (`.NAME.ipart`) under `root`; returns how many.

    Only for a dataset whose lock this process holds, once none of its workers is left:
    then no temporary file there is being written.
    """
    removed = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if is_tmp_name(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
    return removed


def remove_tmp_files_of_held_datasets() -> int:
    """`remove_tmp_files` on every dataset this process holds for writing (after its
    pool's workers died mid-task and left their temporary files)."""
    return sum(remove_tmp_files(d) for d in set(_held_locks.values()) if d is not None)
