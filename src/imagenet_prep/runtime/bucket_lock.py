"""A run's lock on a dataset in a bucket (or a download on an object there): an object
created only where none is, renewed while the run lives.

A bucket has no `flock`.  The lock is the object `DATASET/.imagenet-prep/lock`, written
with a conditional PUT (`If-None-Match: *`; fsspec's `mode="create"`), so of two runs
that start together exactly one gets it.  It names its holder (host, pid, a run id, when
it started) and when it was last renewed; a thread renews it every RENEW seconds, and
the run deletes it when it ends.  A run that was killed leaves it behind, and it is taken
over when its holder is a process of this host that no longer exists, or when it has not
been renewed for LEASE seconds (runs on other machines: their clocks may differ from ours
by less than that).  docs/storage.md says what this cannot do (a server that ignores
conditional writes, two runs that take over one stale lock in the same instant).
A download into a bucket holds `NAME.part.lock` beside the object the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from imagenet_prep.errors import LockedError
from imagenet_prep.layout import LOCK_NAME, STATE_DIR
from imagenet_prep.runtime.storage import RemotePath, errors

LEASE = 600  # seconds without renewal after which a holder elsewhere is taken for dead
RENEW = 60  # seconds between renewals

_held: dict[str, dict[str, Any]] = {}  # lock URL -> this process's record (nested use)


def lock_object(dataset: RemotePath) -> RemotePath:
    return dataset / STATE_DIR / LOCK_NAME


def _record() -> dict[str, Any]:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "run": uuid.uuid4().hex,
            "started": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "renewed": now}


def _read(lock: RemotePath) -> dict[str, Any] | None:
    """The holder's record; None when there is no lock; {} when it is not ours to read
    (damaged: judged by the object's age alone)."""
    try:
        text = lock.read_bytes()
    except FileNotFoundError:
        return None
    try:
        rec = json.loads(text)
        if isinstance(rec, dict) and isinstance(rec.get("renewed"), int | float):
            return rec
    except ValueError:
        pass
    try:
        modified = lock.info().get("LastModified")
    except FileNotFoundError:
        return None
    return {"renewed": modified.timestamp()} if isinstance(modified, datetime) else {}


def _gone(rec: dict[str, Any]) -> bool:
    """Whether the holder is known to be dead: a process of this host that is not running
    (or is this very process, which does not hold it), or silent for LEASE seconds."""
    if time.time() - float(rec.get("renewed", 0)) > LEASE:
        return True
    if rec.get("host") != socket.gethostname() or not isinstance(rec.get("pid"), int):
        return False
    if rec["pid"] == os.getpid():
        return True
    try:
        os.kill(rec["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: alive
        return False
    return False


def _refusal(subject: str, lock: RemotePath, rec: dict[str, Any]) -> LockedError:
    who = f"pid {rec.get('pid', '?')} on {rec.get('host', 'an unknown host')}"
    since = f", started {rec['started']}" if "started" in rec else ""
    return LockedError(
        f"{subject.replace('{who}', who + since)}; wait for it to finish (a run that died frees "
        f"it {LEASE // 60} minutes after its last renewal, or delete {lock} if you are sure "
        "no run is left)")


def _create(lock: RemotePath, rec: dict[str, Any]) -> bool:
    """Write the lock only where none is; False when one is there.  s3fs sends the write
    with If-None-Match; for other protocols, whose filesystems may ignore `mode`, the
    object is looked for first (a window of one request)."""
    if lock.protocol not in ("s3", "s3a") and lock.exists():
        return False
    try:
        with errors(lock.url, "write", lock.options):
            lock.fs.pipe_file(lock.path, json.dumps(rec).encode(), mode="create")
    except FileExistsError:
        return False
    return True


def _acquire(subject: str, lock: RemotePath) -> dict[str, Any]:
    rec = _record()
    for _ in range(2):  # once more after removing a dead holder's lock
        if _create(lock, rec):
            return rec
        holder = _read(lock)
        if holder is not None and not _gone(holder):
            raise _refusal(subject, lock, holder)
        if holder is not None:
            lock.unlink(missing_ok=True)
    raise _refusal(subject, lock, _read(lock) or {})


def _renew(lock: RemotePath, rec: dict[str, Any], stop: threading.Event) -> None:
    """Every RENEW seconds, while the lock is still this run's, stamp it anew."""
    while not stop.wait(RENEW):
        with contextlib.suppress(Exception):  # a failed renewal is tried again next time
            if (_read(lock) or {}).get("run") != rec["run"]:
                return  # taken over (this run was silent for LEASE): not ours to renew
            rec["renewed"] = time.time()
            lock.fs.pipe_file(lock.path, json.dumps(rec).encode())


@contextlib.contextmanager
def held(lock: RemotePath, subject: str, *, read_only: bool = False) -> Iterator[None]:
    """Hold the lock object `lock` for one run; with `read_only` take none, but refuse
    while another live run holds it.  `subject` is the refusal's start, with `{who}`
    where the holder is named."""
    if lock.url in _held:  # this process holds it already (a stage inside `prepare`)
        yield
        return
    if read_only:
        holder = _read(lock)
        if holder is not None and not _gone(holder):
            raise _refusal(subject, lock, holder)
        yield
        return
    rec = _acquire(subject, lock)
    _held[lock.url] = rec
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lock, rec, stop), daemon=True,
                               name="bucket-lock")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        del _held[lock.url]
        with contextlib.suppress(Exception):  # left behind, it is taken over as a dead one
            if (_read(lock) or {}).get("run") == rec["run"]:
                lock.unlink(missing_ok=True)


def bucket_lock(dataset: RemotePath, *, read_only: bool = False
                ) -> contextlib.AbstractContextManager[None]:
    """The dataset's lock, for one run (`read_only`: check, a report written elsewhere)."""
    return held(lock_object(dataset),
                f"{dataset}: another imagenet-prep run ({{who}}) is working on this dataset",
                read_only=read_only)
