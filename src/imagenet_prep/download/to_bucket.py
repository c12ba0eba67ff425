"""One archive streamed from the mirror into an S3 multipart upload: checked, resumable.

Nothing touches a local disk.  The file is cut into parts of `part_size`; N worker
threads (`--connections`) each fetch the next part with one ranged request into
memory, so at most N parts are held (N x part size of RAM).  Parts are hashed into
the whole-file MD5 strictly in file order (a worker waits for the part before its
own), each part is uploaded with its own Content-MD5 (the server refuses a part
damaged on the way), and the upload is completed only when the whole-file MD5 and
size match the reference: otherwise it is aborted, so no object ever appears under
the final name unless it is whole and right.

Resume: beside the object, `NAME.part.json` records the upload ID, the source's
version, the part size, every finished part of the contiguous prefix (number,
size, ETag) and the MD5 state after that prefix (download/md5state.py); it is
rewritten as soon as the prefix grows (one small PUT per part).  A rerun
finds the upload (ListMultipartUploads), checks that every recorded part is still
there with the recorded size and ETag (ListParts), restores the MD5 state and
continues with the next part.  Parts uploaded after the last record are simply
uploaded again (same number: the new one replaces it).  Where the MD5 state cannot
be restored, the finished range is read again from the source and hashed (not
uploaded again).  While it runs, the download holds `NAME.part.lock` beside the
object (runtime/bucket_lock.py), as a download to a folder flocks `NAME.part`: two
runs never feed one upload.  Facts relied on: docs/storage.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from imagenet_prep.download import md5state
from imagenet_prep.download.s3parts import MultipartObject, Part, part_size_for
from imagenet_prep.download.sources import (
    RangeIgnored,
    Remote,
    Retryable,
    Source,
    SourceChanged,
    give_up,
)
from imagenet_prep.download.transfer import TransferOptions
from imagenet_prep.errors import PrepError
from imagenet_prep.runtime.bucket_lock import held
from imagenet_prep.runtime.files import write_atomic
from imagenet_prep.runtime.storage import RemotePath
from imagenet_prep.sources.archives import human_size

RECORD_VERSION = 1
MD5_METADATA = "md5"  # x-amz-meta-md5: the archive's MD5, set only when it is known up front


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass
class BucketOutcome:
    """What happened to one archive (the summary line and the --json report)."""

    md5: str
    size: int
    downloaded: int  # bytes read from the source by this run
    seconds: float
    connections: int
    part_size: int
    parts: int
    parts_uploaded: int  # by this run
    resumed_from: int = 0  # bytes already in the bucket when this run started
    restarts: list[str] = field(default_factory=list)
    retries: int = 0


def record_path(target: RemotePath) -> RemotePath:
    """`NAME.part.json` beside the object: what a rerun needs to continue the upload."""
    return RemotePath(target.url + ".part.json", target.options)


def load_record(target: RemotePath) -> dict[str, Any] | None:
    """The upload's record, None if absent or unreadable (then the upload starts anew)."""
    try:
        rec = json.loads(record_path(target).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return None
    if not isinstance(rec, dict) or rec.get("version") != RECORD_VERSION:
        return None
    return rec


def _save_record(target: RemotePath, remote: Remote, upload: str, part_size: int,
                 parts: list[Part], md5_state: str | None) -> None:
    rec = {"version": RECORD_VERSION, "name": remote.name, "url": remote.url,
           "size": remote.size, "etag": remote.etag, "last_modified": remote.last_modified,
           "upload_id": upload, "part_size": part_size, "md5_state": md5_state,
           "parts": [[p.number, p.size, p.etag] for p in parts]}
    write_atomic(record_path(target), json.dumps(rec, separators=(",", ":")) + "\n")


def _new_hash() -> Any:
    return md5state.ResumableMD5() if md5state.available() else hashlib.md5(
        usedforsecurity=False)


def _state_of(h: Any) -> str | None:
    return h.state() if isinstance(h, md5state.ResumableMD5) else None


@dataclass
class _Start:
    upload: str
    part_size: int
    parts: list[Part]  # the verified contiguous prefix, 1..k
    md5_state: str | None
    restarts: list[str]


def _resume_point(mp: MultipartObject, remote: Remote, rec: dict[str, Any] | None,
                  uploads: list[str]) -> tuple[_Start | None, str | None]:
    """The upload a rerun continues, or why it starts anew (None when nothing to say)."""
    if rec is None:
        return None, ("an unfinished upload was found without its record" if uploads
                      else None)
    upload = rec.get("upload_id")
    if upload not in uploads:
        return None, "its unfinished upload is gone from the bucket"
    if rec.get("size") != remote.size:
        return None, "its size on the server changed since the last run"
    if not remote.same_version(rec.get("etag"), rec.get("last_modified")):
        return None, "it changed on the server since the last run (ETag or Last-Modified)"
    try:
        recorded = [Part(int(n), int(s), str(e)) for n, s, e in rec.get("parts", [])]
        part_size = int(rec["part_size"])
    except (KeyError, TypeError, ValueError):
        return None, "its upload record is damaged"
    there = mp.parts(upload)
    if there is None:
        return None, "its unfinished upload is gone from the bucket"
    for i, p in enumerate(recorded, 1):
        if p.number != i or there.get(i) != p:
            return None, f"part {i} in the bucket is not the one recorded"
    state = rec.get("md5_state")
    if state is not None and not isinstance(state, str):
        return None, "its upload record is damaged"
    return _Start(upload, part_size, recorded, state, []), None


class _Upload:
    """The missing parts of one upload, over `connections` threads; see the module doc."""

    def __init__(self, source: Source, remote: Remote, mp: MultipartObject, start: _Start,
                 md5: Any, opts: TransferOptions, advance: Callable[[int], None]) -> None:
        self.source, self.remote, self.mp, self.opts, self.advance = (
            source, remote, mp, opts, advance)
        self.upload, self.part_size = start.upload, start.part_size
        assert remote.size is not None
        self.size = remote.size
        self.count = max(1, -(-self.size // self.part_size))
        self.md5 = md5
        self.done: dict[int, Part] = {p.number: p for p in start.parts}
        self.prefix = len(start.parts)  # parts 1..prefix are uploaded
        self.hashed = self.prefix  # parts 1..hashed are in self.md5
        self.states: dict[int, str | None] = {self.prefix: start.md5_state}
        self.next = self.prefix + 1
        self.saved = self.prefix
        self.cond = threading.Condition()
        self.abort = threading.Event()
        self.progressed = threading.Event()  # a part was uploaded, or a worker stopped
        self.uploaded = self.fetched = self.retries = 0
        self.threads: set[int] = set()
        self.local = threading.local()  # each worker's part buffer

    def span(self, n: int) -> tuple[int, int]:
        return (n - 1) * self.part_size, min(self.size, n * self.part_size)

    def checkpoint(self, target: RemotePath) -> None:
        """Record the contiguous prefix of uploaded parts (if it grew) and its MD5 state."""
        with self.cond:
            k = self.prefix
            if k == self.saved:
                return
            parts = [self.done[i] for i in range(1, k + 1)]
            state = self.states.get(k)
        _save_record(target, self.remote, self.upload, self.part_size, parts, state)
        with self.cond:
            self.saved = k
            for i in [i for i in self.states if i < k]:
                del self.states[i]

    def run(self, target: RemotePath) -> list[Part]:
        """Upload every missing part; returns all parts in order."""
        todo = self.count - self.prefix
        workers = max(1, min(self.opts.connections, todo))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload")
        futures = [pool.submit(self._worker) for _ in range(workers)] if todo else []
        ok = False
        try:
            for f in futures:  # a worker that stops (done or failed) wakes the loop too
                f.add_done_callback(lambda _: self.progressed.set())
            while futures:
                self.progressed.wait(self.opts.checkpoint_seconds)
                self.progressed.clear()
                finished = all(f.done() for f in futures)
                for f in futures:
                    if f.done() and f.exception() is not None:
                        raise f.exception()  # type: ignore[misc]
                self.checkpoint(target)
                if finished:
                    break
            ok = True
            return [self.done[i] for i in range(1, self.count + 1)]
        finally:
            if not ok:
                self.abort.set()
                with self.cond:
                    self.cond.notify_all()
                while any(not f.done() for f in futures):
                    self.source.interrupt()
                    wait(futures, timeout=0.2)
            pool.shutdown(wait=True, cancel_futures=True)
            if not ok:
                with contextlib.suppress(PrepError):
                    self.checkpoint(target)  # keep what is uploaded; a rerun continues

    def _worker(self) -> None:
        while not self.abort.is_set():
            with self.cond:
                if self.next > self.count:
                    return
                n = self.next
                self.next += 1
                self.threads.add(threading.get_ident())
            data = self._fetch(n)
            if data is None:
                return
            self._hash_in_order(n, data)
            if self.abort.is_set():
                return
            digest = hashlib.md5(data, usedforsecurity=False).digest()
            etag = self.mp.upload_part(self.upload, n, data, digest)
            with self.cond:
                self.done[n] = Part(n, len(data), etag)
                self.uploaded += 1
                while self.prefix + 1 in self.done:
                    self.prefix += 1
            self.progressed.set()

    def _fetch(self, n: int) -> bytearray | None:
        """Part n's bytes from the source, resuming within the part after a drop.

        Each worker fills one buffer of the part size, kept for its next part (a short
        last part gets its own), so memory stays at one part per connection.
        """
        start, end = self.span(n)
        buf = getattr(self.local, "buf", None)
        if buf is None or len(buf) != end - start:
            buf = bytearray(end - start)
            if end - start == self.part_size:
                self.local.buf = buf
        pos, attempt = start, 0
        while pos < end:
            if self.abort.is_set():
                return None
            before = pos
            try:
                for block in self.source.read(self.remote, pos, end, ranged=True):
                    block = block[:end - pos]
                    buf[pos - start:pos - start + len(block)] = block
                    pos += len(block)
                    self.advance(len(block))
                    with self.cond:
                        self.fetched += len(block)
                    if self.abort.is_set() or pos >= end:
                        break
                if pos < end and not self.abort.is_set():
                    raise Retryable("connection closed early")
            except Retryable as e:
                attempt = 1 if pos > before else attempt + 1
                with self.cond:
                    self.retries += 1
                if attempt >= self.opts.retry.limit(e):
                    raise give_up(self.remote.url, attempt, e, pieces=True) from None
                self.opts.retry.pause(attempt, self.abort)
        return buf

    def _hash_in_order(self, n: int, data: bytearray) -> None:
        with self.cond:
            while self.hashed != n - 1:
                if self.abort.is_set():
                    return
                self.cond.wait(0.5)
        self.md5.update(data)  # outside the lock: only part n's worker may be here
        with self.cond:
            self.states[n] = _state_of(self.md5)
            self.hashed = n
            self.cond.notify_all()


def _rebuild_md5(source: Source, remote: Remote, end: int, opts: TransferOptions
                 ) -> tuple[Any, int]:
    """Hash [0, end) read again from the source: the resume without a saved MD5 state.
    Returns the hash and the bytes read."""
    h = _new_hash()
    pos, attempt = 0, 0
    while pos < end:
        before = pos
        try:
            for block in source.read(remote, pos, end, ranged=True):
                block = block[:end - pos]
                h.update(block)
                pos += len(block)
                if pos >= end:
                    break
            if pos < end:
                raise Retryable("connection closed early")
        except Retryable as e:
            attempt = 1 if pos > before else attempt + 1
            if attempt >= opts.retry.limit(e):
                raise give_up(remote.url, attempt, e, pieces=True) from None
            opts.retry.pause(attempt)
    return h, pos


def _starting_point(mp: MultipartObject, target: RemotePath, remote: Remote,
                    wanted_part: int, want_md5: str | None, log: Callable[[str], None]
                    ) -> _Start:
    """The upload this run continues (announced), or a new one; stale uploads aborted."""
    uploads = mp.uploads()
    start, why = _resume_point(mp, remote, load_record(target), uploads)
    if start is not None:
        for other in uploads:
            if other != start.upload:
                mp.abort(other)
        return start
    name = remote.name
    for upload in uploads:
        mp.abort(upload)
    restarts = []
    if why:
        log(f"{name}: {why}; starting the upload anew from byte 0")
        restarts.append(why)
    assert remote.size is not None
    part_size = part_size_for(remote.size, wanted_part)
    metadata = {MD5_METADATA: want_md5} if want_md5 else {}
    upload = mp.create(metadata)
    _save_record(target, remote, upload, part_size, [], _state_of(_new_hash()))
    return _Start(upload, part_size, [], _state_of(_new_hash()), restarts)


def fetch_to_bucket(
    source: Source, remote: Remote, target: RemotePath, *, want_size: int | None,
    want_md5: str | None, opts: TransferOptions, log: Callable[[str], None],
    advance: Callable[[int], None],
) -> BucketOutcome:
    """Stream `remote` into the object `target`; complete it only if size and MD5 match.

    A wrong size or MD5 aborts the upload (no object under the name) and raises a
    one-line PrepError.  `advance(n)` reports bytes read from the source.
    """
    if remote.size is None or not remote.ranges:
        raise PrepError(f"{remote.url}: the server does not serve byte ranges (or does not "
                        "say the size), which streaming into a bucket needs; download to a "
                        "folder and copy it")
    with held(RemotePath(target.url + ".part.lock", target.options),
              f"{target}: another imagenet-prep download ({{who}}) is writing this object"):
        return _stream(source, remote, target, want_size=want_size, want_md5=want_md5,
                       opts=opts, log=log, advance=advance)


def _stream(
    source: Source, remote: Remote, target: RemotePath, *, want_size: int | None,
    want_md5: str | None, opts: TransferOptions, log: Callable[[str], None],
    advance: Callable[[int], None],
) -> BucketOutcome:
    t0 = time.monotonic()
    mp = MultipartObject(target)
    start = _starting_point(mp, target, remote, opts.part_size, want_md5, log)
    resumed_from = sum(p.size for p in start.parts)
    read_again = 0
    if start.parts:
        pct = 100 * resumed_from / remote.size if remote.size else 0.0
        log(f"{remote.name}: resuming at {pct:.1f}% ({len(start.parts)} parts, "
            f"{human_size(resumed_from)} of {human_size(remote.size)} already in the bucket)")
        advance(resumed_from)
    if start.md5_state is not None and md5state.available():
        md5: Any = md5state.ResumableMD5.from_state(start.md5_state)
    elif start.parts:
        log(f"{remote.name}: no saved MD5 state here; reading the first "
            f"{human_size(resumed_from)} again to hash them")
        md5, read_again = _rebuild_md5(source, remote, resumed_from, opts)
    else:
        md5 = _new_hash()
    job = _Upload(source, remote, mp, start, md5, opts, advance)
    try:
        parts = job.run(target)
    except RangeIgnored:
        raise PrepError(f"{remote.url}: the server ignored a Range request, which streaming "
                        "into a bucket needs; download to a folder and copy it") from None
    except SourceChanged as e:
        raise PrepError(f"{remote.url}: {e} on the server during the download; run again "
                        "to start it anew") from None
    size = sum(p.size for p in parts)
    digest = md5.hexdigest()
    outcome = BucketOutcome(
        md5=digest, size=size, downloaded=job.fetched + read_again, seconds=0.0,
        connections=len(job.threads), part_size=start.part_size, parts=len(parts),
        parts_uploaded=job.uploaded, resumed_from=resumed_from, restarts=start.restarts,
        retries=job.retries)
    _finish(mp, target, start.upload, parts, outcome, want_size, want_md5)
    outcome.seconds = time.monotonic() - t0
    return outcome


def _finish(mp: MultipartObject, target: RemotePath, upload: str, parts: list[Part],
            outcome: BucketOutcome, want_size: int | None, want_md5: str | None) -> None:
    """Complete the upload if size and MD5 check out, else abort it and raise."""
    problem = None
    if want_size is not None and outcome.size != want_size:
        problem = f"size {outcome.size:,} bytes, expected {want_size:,}"
    elif want_md5 is not None and outcome.md5 != want_md5:
        problem = f"MD5 {outcome.md5}, expected {want_md5}"
    if problem is None:
        mp.complete(upload, parts)
    else:
        mp.abort(upload)
    record_path(target).unlink(missing_ok=True)
    if problem is not None:
        raise PrepError(f"{target}: downloaded, but {problem}; the upload was aborted and "
                        "nothing is kept under that name (run again to download it anew)")
