"""One file: parallel ranged download into `NAME.part`, resumable, checked, then renamed.

Layout next to the final name:
  NAME.part       the data, written in place (os.pwrite) at its final offsets
  NAME.part.json  what is done: total size, the server's ETag / Last-Modified,
                  and the finished byte ranges (written atomically every few seconds,
                  after an fdatasync of NAME.part, so it never claims bytes not on disk)
  NAME.bad        a complete download whose size or MD5 is wrong (kept for inspection)

The missing ranges are cut into pieces handed out in file order to N worker
threads (each with its own connection), so at any moment the pieces in flight
are adjacent and the finished prefix grows steadily.  The MD5 follows that
prefix in its own thread, reading back the bytes just written (still in the
page cache): the digest is ready moments after the last byte arrives, whatever N.
hashlib state cannot be saved, so on a resume the same thread first reads the
part already on disk, while the rest downloads, instead of a separate pass
before or after.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagenet_prep.download.ranges import RangeSet
from imagenet_prep.download.sources import (
    CHUNK,
    RangeIgnored,
    Remote,
    Retryable,
    RetryPolicy,
    Source,
    SourceChanged,
    give_up,
)
from imagenet_prep.errors import PrepError
from imagenet_prep.runtime.files import os_error, write_atomic
from imagenet_prep.sources.archives import human_size

STATE_VERSION = 1
MAX_CHANGES = 2  # restarts because the file changed on the server, before giving up


@dataclass(frozen=True)
class TransferOptions:
    """How to fetch: connections, retries, how often progress is saved, piece sizes."""

    connections: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    checkpoint_seconds: float = 2.0
    min_piece: int = 64 << 10
    max_piece: int = 128 << 20  # small enough that N pieces in flight stay in the page cache
    part_size: int = 32 << 20  # into a bucket: bytes per multipart part (N parts in memory)


@dataclass
class Outcome:
    """What happened to one file (the CLI's summary line and --json report)."""

    md5: str
    size: int
    downloaded: int
    seconds: float
    connections: int
    resumed_from: int = 0
    restarts: list[str] = field(default_factory=list)
    md5_seconds_after: float = 0.0
    retries: int = 0


def part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def state_path(final: Path) -> Path:
    return final.with_name(final.name + ".part.json")


def bad_path(final: Path) -> Path:
    return final.with_name(final.name + ".bad")


def load_state(final: Path) -> dict[str, Any] | None:
    """The side file's record, None if absent or unreadable (then the file restarts)."""
    try:
        state = json.loads(state_path(final).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        return None
    return state


def bytes_done(final: Path, remote: Remote) -> int:
    """Bytes of `remote` a resume would keep (0 unless the side file matches it)."""
    ranges, _why = _resume_point(load_state(final), remote, _size_or_none(part_path(final)))
    return ranges.done()


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _resume_point(state: dict[str, Any] | None, remote: Remote, part_size: int | None
                  ) -> tuple[RangeSet, str | None]:
    """What a rerun keeps, and why it restarts when it keeps nothing of an earlier run."""
    if state is None:
        why = None if not part_size else "found without its progress record"
        return RangeSet(), why
    if state.get("size") != remote.size:
        return RangeSet(), "its size on the server changed since the last run"
    if not remote.same_version(state.get("etag"), state.get("last_modified")):
        return RangeSet(), "it changed on the server since the last run (ETag or Last-Modified)"
    if part_size != remote.size and remote.size is not None:
        return RangeSet(), "the .part file does not have the expected size"
    try:
        return RangeSet(state.get("done", [])), None
    except (TypeError, ValueError):
        return RangeSet(), "its progress record is damaged"


class _Progress:
    """The finished ranges, shared by the writers, the MD5 thread and the checkpoints."""

    def __init__(self, ranges: RangeSet) -> None:
        self.ranges = ranges
        self.cond = threading.Condition()

    def add(self, start: int, end: int) -> int:
        """Record [start, end) as written; returns how many bytes were new."""
        with self.cond:
            before = self.ranges.done()
            self.ranges.add(start, end)
            self.cond.notify_all()
            return self.ranges.done() - before

    def done(self) -> int:
        with self.cond:
            return self.ranges.done()

    def snapshot(self) -> list[list[int]]:
        with self.cond:
            return self.ranges.as_list()


class _PrefixHasher:
    """MD5 of the contiguous finished prefix, following it as pieces land (own thread)."""

    def __init__(self, fd: int, progress: _Progress, abort: threading.Event) -> None:
        self._fd, self._progress, self._abort = fd, progress, abort
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._pos = 0
        self._target: int | None = None
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="md5", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        cond = self._progress.cond
        try:
            while True:
                with cond:
                    while True:
                        if self._abort.is_set():
                            return
                        end = self._progress.ranges.prefix()
                        if self._target is not None:
                            if self._pos >= self._target:
                                return
                            end = min(end, self._target)
                        if end > self._pos:
                            break
                        cond.wait(0.5)
                while self._pos < end and not self._abort.is_set():
                    n = os.preadv(self._fd, [view[:min(CHUNK, end - self._pos)]], self._pos)
                    if n <= 0:
                        raise OSError(0, "the .part file is shorter than its record")
                    self._md5.update(view[:n])
                    self._pos += n
        except OSError as e:
            self._error = e

    def finish(self, size: int) -> str:
        """Hash up to `size` and return the hex digest."""
        with self._progress.cond:
            self._target = size
            self._progress.cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise PrepError(f"cannot read back the download ({self._error.strerror})")
        if self._pos != size:
            raise PrepError("the download stopped before its end")
        return self._md5.hexdigest()

    def stop(self) -> None:
        self._abort.set()
        with self._progress.cond:
            self._progress.cond.notify_all()
        self._thread.join()


PIECES_PER_CONNECTION = 8  # so the MD5 never trails the download by more than ~1/8 of a file


def _pieces(missing: list[tuple[int, int]], opts: TransferOptions) -> list[tuple[int, int]]:
    """Cut the missing ranges into pieces, in file order, several per connection.

    Workers take pieces in order, so the finished prefix (what the MD5 can read)
    trails the newest byte by at most the pieces in flight.
    """
    left = sum(b - a for a, b in missing)
    per = max(1, opts.connections) * PIECES_PER_CONNECTION
    size = min(opts.max_piece, max(opts.min_piece, math.ceil(left / per)))
    out = []
    for a, b in missing:
        out += [(s, min(b, s + size)) for s in range(a, b, size)]
    return out


def _pwrite_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class _Transfer:
    """One attempt at the missing bytes of one file, over `connections` threads."""

    def __init__(self, source: Source, remote: Remote, fd: int, part: Path, final: Path,
                 ranges: RangeSet, ranged: bool, opts: TransferOptions,
                 advance: Callable[[int], None]) -> None:
        self.source, self.remote, self.fd, self.part, self.final = source, remote, fd, part, final
        self.progress = _Progress(ranges)
        self.ranged, self.opts, self.advance = ranged, opts, advance
        self.abort = threading.Event()
        self.connections_used: set[int] = set()
        self.retries = 0
        if ranged and remote.size is not None:
            self.queue = deque(_pieces(ranges.missing(remote.size), opts))
        else:
            self.queue = deque([(0, remote.size)])
        self.lock = threading.Lock()

    def checkpoint(self) -> None:
        """Save progress: data first (fdatasync), then the record that claims it."""
        done = self.progress.snapshot()
        try:
            os.fdatasync(self.fd)
        except OSError as e:
            raise os_error(self.part, e) from None
        save_state(self.final, self.remote, done)

    def run(self) -> tuple[str, int, float]:
        """Fetch every missing piece; returns (md5, connections used, md5 seconds after)."""
        workers = max(1, min(self.opts.connections if self.ranged else 1, len(self.queue)))
        hasher = _PrefixHasher(self.fd, self.progress, self.abort)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download")
        ok = False
        futures: list = []
        try:
            futures += [pool.submit(self._worker) for _ in range(workers)]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=self.opts.checkpoint_seconds,
                                     return_when=FIRST_EXCEPTION)
                for f in done:
                    if f.exception() is not None:
                        raise f.exception()  # type: ignore[misc]
                if pending:
                    self.checkpoint()
            t_last = time.monotonic()
            size = self.remote.size if self.remote.size is not None else self.progress.done()
            md5 = hasher.finish(size)
            ok = True
            return md5, len(self.connections_used), time.monotonic() - t_last
        finally:
            if not ok:
                self.abort.set()
                hasher.stop()
                while any(not f.done() for f in futures):
                    self.source.interrupt()  # again each time: a worker may have just asked
                    wait(futures, timeout=0.2)
            pool.shutdown(wait=True, cancel_futures=True)
            if not ok:
                with contextlib.suppress(PrepError):
                    self.checkpoint()  # keep what arrived; a rerun resumes from here

    def _worker(self) -> None:
        while not self.abort.is_set():
            with self.lock:
                if not self.queue:
                    return
                start, end = self.queue.popleft()
                self.connections_used.add(threading.get_ident())
            self._piece(start, end)

    def _piece(self, start: int, end: int | None) -> None:
        """Fetch [start, end), resuming within the piece after a drop; bounded retries."""
        retry = self.opts.retry
        attempt = 0
        while not self.abort.is_set():
            pos = start if self.ranged else 0  # without Range the stream restarts at byte 0
            before = self.progress.done()
            try:
                for block in self.source.read(self.remote, pos, end, ranged=self.ranged):
                    if end is not None and pos + len(block) > end:
                        block = block[:end - pos]
                    try:
                        _pwrite_all(self.fd, block, pos)
                    except OSError as e:
                        raise os_error(self.part, e) from None
                    self.advance(self.progress.add(pos, pos + len(block)))
                    pos += len(block)
                    if self.abort.is_set() or (end is not None and pos >= end):
                        break
                if end is None or pos >= end or self.abort.is_set():
                    return
                raise Retryable("connection closed early")
            except Retryable as e:
                if self.ranged:
                    start = pos
                attempt = 1 if self.progress.done() > before else attempt + 1
                with self.lock:
                    self.retries += 1
                if attempt >= retry.limit(e):
                    raise give_up(self.remote.url, attempt, e, pieces=True) from None
                retry.pause(attempt, self.abort)


def save_state(final: Path, remote: Remote, done: list[list[int]]) -> None:
    record = {"version": STATE_VERSION, "name": remote.name, "url": remote.url,
              "size": remote.size, "etag": remote.etag, "last_modified": remote.last_modified,
              "done": done}
    # No fsync of its own: the data it claims was fdatasynced before it was written, so
    # whichever version survives a crash claims nothing that is not on disk (and a lost
    # or empty record only means a restart from byte 0).
    write_atomic(state_path(final), json.dumps(record, indent=1) + "\n", fsync=False)


def _open_locked(part: Path) -> int:
    """Open (create) NAME.part and hold a kernel lock on it: one download per file."""
    try:
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise os_error(part, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PrepError(f"{part}: another imagenet-prep run is downloading this file") from None
    return fd


def _reset(fd: int, part: Path, size: int | None) -> None:
    """Empty NAME.part and give it its final size (sparse): a clean restart from byte 0."""
    try:
        os.ftruncate(fd, 0)
        if size:
            os.ftruncate(fd, size)
    except OSError as e:
        raise os_error(part, e) from None


def _starting_point(fd: int, final: Path, remote: Remote, log: Callable[[str], None],
                    advance: Callable[[int], None]) -> tuple[RangeSet, list[str]]:
    """What an earlier run left that this one keeps (announced), and why it restarted if not."""
    name = remote.name
    ranges, why = _resume_point(load_state(final), remote, os.fstat(fd).st_size)
    restarts = []
    if why:
        log(f"{name}: {why}; restarting from byte 0")
        restarts.append(why)
    if ranges.done() and not (remote.ranges and remote.size is not None):
        log(f"{name}: the server ignores Range requests; restarting from byte 0 "
            "with one connection")
        restarts.append("the server ignores Range requests")
        advance(-ranges.done())
        ranges = RangeSet()
    if ranges.done():
        pct = 100 * ranges.done() / remote.size if remote.size else 0.0
        log(f"{name}: resuming at {pct:.1f}% ({human_size(ranges.done())} of "
            f"{human_size(remote.size or 0)} already on disk)")
    return ranges, restarts


def fetch_file(
    source: Source, remote: Remote, final: Path, *, want_size: int | None, want_md5: str | None,
    opts: TransferOptions, log: Callable[[str], None], advance: Callable[[int], None],
) -> Outcome:
    """Download `remote` to `final`, resuming NAME.part; rename only after size and MD5 pass.

    A wrong size or MD5 leaves the data as NAME.bad and raises a one-line PrepError.
    `advance(n)` reports new bytes on disk (negative after a restart drops some).
    """
    part, name = part_path(final), remote.name
    t0 = time.monotonic()
    fd = _open_locked(part)
    try:
        ranges, restarts = _starting_point(fd, final, remote, log, advance)
        resumed_from = ranges.done()
        ranged = remote.ranges and remote.size is not None
        changes = retries = 0
        while True:
            if not ranges.done():
                _reset(fd, part, remote.size)
            save_state(final, remote, ranges.as_list())
            job = _Transfer(source, remote, fd, part, final, ranges, ranged, opts, advance)
            try:
                md5, used, after = job.run()
                break
            except RangeIgnored:
                if not ranged:
                    raise PrepError(f"{remote.url}: the server answered a plain request "
                                    "as a ranged one") from None
                log(f"{name}: the server ignored a Range request; restarting from byte 0 "
                    "with one connection")
                restarts.append("the server ignored a Range request")
                ranged = False
            except SourceChanged as e:
                changes += 1
                if changes > MAX_CHANGES:
                    raise PrepError(f"{remote.url}: keeps changing on the server ({e}); "
                                    "try again later or another mirror") from None
                new = opts.retry.call(lambda: source.probe(name), remote.url)
                if new.size != remote.size:
                    raise PrepError(f"{remote.url}: changed on the server during the download "
                                    f"(now {new.size} bytes, was {remote.size}); run again"
                                    ) from None
                log(f"{name}: {e} on the server during the download; restarting from byte 0")
                restarts.append(f"{e} during the download")
                remote = new
            finally:
                retries += job.retries
            advance(-job.progress.done())
            ranges = RangeSet()
            resumed_from = 0
        size = os.fstat(fd).st_size
        outcome = Outcome(md5=md5, size=size, downloaded=size - resumed_from,
                          seconds=time.monotonic() - t0, connections=used,
                          resumed_from=resumed_from, restarts=restarts, md5_seconds_after=after,
                          retries=retries)
        _finish(fd, part, final, outcome, want_size, want_md5)
        outcome.seconds = time.monotonic() - t0  # the final fsync and rename included
        return outcome
    finally:
        os.close(fd)


def _finish(fd: int, part: Path, final: Path, outcome: Outcome, want_size: int | None,
            want_md5: str | None) -> None:
    """Rename NAME.part to NAME if size and MD5 check out, else to NAME.bad and raise."""
    problem = None
    if want_size is not None and outcome.size != want_size:
        problem = f"size {outcome.size:,} bytes, expected {want_size:,}"
    elif want_md5 is not None and outcome.md5 != want_md5:
        problem = f"MD5 {outcome.md5}, expected {want_md5}"
    try:
        os.fsync(fd)
        target = final if problem is None else bad_path(final)
        os.replace(part, target)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_path(final))
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise os_error(final, e) from None
    if problem is not None:
        raise PrepError(f"{final}: downloaded, but {problem}; kept as {bad_path(final).name} "
                        "(run again to download it anew)")
