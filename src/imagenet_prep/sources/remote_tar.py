"""Tar archives in object storage: a header index from large block reads, kept in a cache,
and image reads grouped into few concurrent ranged requests.

One request per member would cost 1.28 M requests for the train archive.  Its headers
sit between images of ~110 kB, so every block of 16 MiB holds ~150 of them: the index
reads the archive front to back in blocks (a few ahead, in parallel), at most
size / block + a few requests, and is saved once per archive (keyed by URL, size and
ETag, with its format version) so that reruns and other datasets reuse it with no
request at all.  The same checks as for a local archive apply (tarindex.iter_members
runs over the blocks).  See docs/storage.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_prep.errors import CorruptArchiveError
from imagenet_prep.runtime.storage import RemotePath, errors

INDEX_VERSION = 1
INDEX_BLOCK = 16 << 20  # bytes per index request
READ_AHEAD = 3  # index blocks fetched ahead of the scan, in parallel
COALESCE_GAP = 1 << 16  # members closer than this in the archive share one request
MAX_GROUP = 16 << 20  # ... up to this many bytes
BATCH_IMAGES = 64  # images planned together (neighbours are looked for among them)
CONCURRENCY_ENV = "IMAGENET_PREP_CONCURRENCY"
CACHE_ENV = "IMAGENET_PREP_CACHE"


class Counts:
    """Requests and bytes this process sent, by purpose ("index", "images"); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by: dict[str, list[int]] = {}

    def add(self, what: str, nbytes: int) -> None:
        with self._lock:
            c = self.by.setdefault(what, [0, 0])
            c[0] += 1
            c[1] += nbytes

    def requests(self, what: str) -> int:
        return self.by.get(what, [0, 0])[0]


COUNTS = Counts()


def concurrency() -> int:
    """Requests in flight at once per shard writer (images are read ahead by this many)."""
    return max(1, int(os.environ.get(CONCURRENCY_ENV, "16")))


def cache_dir() -> Path:
    """Where archive indexes are kept: $IMAGENET_PREP_CACHE, else the user's cache folder."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imagenet-prep" / "tarindex"


# --- block reads for the index -----------------------------------------------------------

class BlockReader:
    """`pread(n, offset)` over a remote object, served from aligned blocks fetched a few
    ahead; a front-to-back scan fetches each block once."""

    def __init__(self, loc: RemotePath, size: int, block: int | None = None) -> None:
        self.loc, self.size, self.block = loc, size, block or INDEX_BLOCK
        self._blocks: dict[int, Future[bytes]] = {}
        self._pool = ThreadPoolExecutor(READ_AHEAD + 1, thread_name_prefix="tarindex")
        self._last = -(-size // self.block) - 1

    def _fetch(self, k: int) -> bytes:
        start = k * self.block
        end = min(self.size, start + self.block)
        with errors(self.loc.url, options=self.loc.options):
            data = self.loc.fs.cat_file(self.loc.path, start=start, end=end)
        COUNTS.add("index", len(data))
        if len(data) != end - start:
            raise CorruptArchiveError(f"{self.loc}: short read at byte {start}")
        return data

    def _get(self, k: int) -> bytes:
        for j in range(k, min(k + READ_AHEAD, self._last) + 1):
            if j not in self._blocks:
                self._blocks[j] = self._pool.submit(self._fetch, j)
        return self._blocks[k].result()

    def pread(self, n: int, offset: int) -> bytes:
        end = min(offset + n, self.size)
        if offset >= end:
            return b""
        k0, k1 = offset // self.block, (end - 1) // self.block
        for j in [j for j in self._blocks if j < k0]:  # behind the scan: never read again
            self._blocks.pop(j).cancel()
        base = k0 * self.block
        if k0 == k1:
            return self._get(k0)[offset - base:end - base]
        return b"".join(self._get(k) for k in range(k0, k1 + 1))[offset - base:end - base]

    def close(self) -> None:
        for f in self._blocks.values():
            f.cancel()
        self._blocks.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


# --- the cached index --------------------------------------------------------------------

@dataclass
class TarIndex:
    """Members of a remote tar (nested: of every inner tar too), as arrays.

    `parent[i]` is the outer member (index into the outer arrays) holding member i, or
    -1 in a flat tar; offsets are absolute in the archive, as tarindex.Member's.
    """

    outer_names: np.ndarray
    outer_offsets: np.ndarray
    outer_sizes: np.ndarray
    names: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    parent: np.ndarray


def _cache_file(loc: RemotePath) -> Path:
    key = hashlib.sha256(loc.url.encode()).hexdigest()[:16]
    return cache_dir() / f"{loc.name}.{key}.npz"


def _identity(loc: RemotePath, nested: bool) -> dict[str, Any]:
    return {"version": INDEX_VERSION, "url": loc.url, "size": loc.stat().st_size,
            "etag": loc.etag(), "nested": nested}


def _load(path: Path, ident: dict[str, Any]) -> TarIndex | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["identity"])) != ident:
                return None
            return TarIndex(**{k: z[k] for k in TarIndex.__dataclass_fields__})
    except (OSError, ValueError, KeyError):  # absent, damaged, another format: scan again
        return None


def _save(path: Path, ident: dict[str, Any], idx: TarIndex) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.ipart")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, identity=np.array(json.dumps(ident, sort_keys=True)),
                     **{k: getattr(idx, k) for k in TarIndex.__dataclass_fields__})
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written costs a scan next time, nothing else
        tmp.unlink(missing_ok=True)


def _names(names: list[str]) -> np.ndarray:
    return np.array([n.encode("utf-8", "surrogateescape") for n in names], dtype=bytes) \
        if names else np.zeros(0, dtype="S1")


def _scan(loc: RemotePath, size: int, nested: bool) -> TarIndex:
    """Read every header through block reads, with tarindex's checks.  Members are turned
    into arrays a tar at a time (a class of the train archive), so no Python object per
    member outlives its class: memory stays near the arrays' (~60 MB for 1.28 M)."""
    from imagenet_prep.sources.tarindex import iter_members

    reader = BlockReader(loc, size)
    outer: list[Any] = []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def part(members: list[Any], parent: int) -> None:
        parts.append((_names([m.name for m in members]),
                      np.array([m.offset for m in members], dtype=np.int64),
                      np.array([m.size for m in members], dtype=np.int64),
                      np.full(len(members), parent, dtype=np.int32)))

    try:
        members = iter_members(loc, pread=reader.pread, total=size)
        if not nested:
            part(list(members), -1)
        for m in members if nested else ():
            outer.append(m)
            part(list(iter_members(loc, pread=reader.pread, total=size, start=m.offset,
                                   length=m.size, label=f"{loc}:{m.name}")), len(outer) - 1)
    finally:
        reader.close()
    width = max((p[0].dtype.itemsize for p in parts), default=1)
    return TarIndex(
        outer_names=_names([m.name for m in outer]),
        outer_offsets=np.array([m.offset for m in outer], dtype=np.int64),
        outer_sizes=np.array([m.size for m in outer], dtype=np.int64),
        names=np.concatenate([p[0].astype(f"S{width}") for p in parts]) if parts
        else _names([]),
        offsets=np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64),
        sizes=np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64),
        parent=np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.int32))


def tar_index(loc: RemotePath, nested: bool) -> TarIndex:
    """The archive's index: from the cache when it matches the object's size and ETag,
    else scanned and saved."""
    ident = _identity(loc, nested)
    path = _cache_file(loc)
    idx = _load(path, ident)
    if idx is None:
        idx = _scan(loc, ident["size"], nested)
        _save(path, ident, idx)
    return idx


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def flat_members(loc: RemotePath) -> Iterator[Any]:
    """tarindex.iter_members for a remote flat tar, from its index."""
    from imagenet_prep.sources.tarindex import Member

    idx = tar_index(loc, nested=False)
    for name, off, size in zip(idx.names, idx.offsets.tolist(), idx.sizes.tolist(),
                               strict=True):
        yield Member(_decode(name), off, size)


def nested_members(loc: RemotePath) -> Iterator[tuple[Any, Iterator[Any]]]:
    """tarindex.iter_nested for a remote tar of tars, from its index."""
    from imagenet_prep.sources.tarindex import Member

    idx = tar_index(loc, nested=True)
    bounds = np.searchsorted(idx.parent, np.arange(len(idx.outer_names) + 1))
    for k, (name, off, size) in enumerate(zip(idx.outer_names, idx.outer_offsets.tolist(),
                                              idx.outer_sizes.tolist(), strict=True)):
        a, b = int(bounds[k]), int(bounds[k + 1])
        inner = (Member(_decode(n), o, s) for n, o, s in zip(
            idx.names[a:b], idx.offsets[a:b].tolist(), idx.sizes[a:b].tolist(), strict=True))
        yield Member(_decode(name), off, size), inner


# --- image reads -------------------------------------------------------------------------

@dataclass
class _Group:
    """One ranged request covering images near each other in the archive."""

    start: int
    end: int
    members: list[int]
    future: Future[bytes] | None = None
    data: bytes | None = None
    left: int = 0  # members not read yet


class ImageFetcher:
    """Image bytes of a catalog in a bucket, read in catalog order.

    The catalog is planned in windows of BATCH_IMAGES images: within a window, members
    less than COALESCE_GAP apart in the archive share one ranged request.  Requests are
    sent ahead of the reader, up to `concurrency()` of them in flight at any time (a
    sliding window: a slow request does not hold back the next ones), and a request's
    bytes are dropped once its images are read, so memory holds at most a window of
    images plus the requests in flight.
    """

    def __init__(self, loc: RemotePath, offsets: np.ndarray, sizes: np.ndarray) -> None:
        from imagenet_prep.sources.remote_reads import RangeReader

        self.loc, self.offsets, self.sizes = loc, offsets, sizes
        self.window = concurrency()
        self.batch = max(BATCH_IMAGES, self.window)
        self.requests = 0
        self.bytes = 0
        self._reader = RangeReader(loc, self.window)
        self._plan = self._plan_groups()
        self._group_of: dict[int, _Group] = {}  # image -> its sent request
        self._sent: list[_Group] = []  # sent, not all of whose images are read yet
        self._lock = threading.Lock()
        self._in_flight = 0

    def _groups(self, first: int, last: int) -> list[_Group]:
        """Requests covering images [first, last), neighbours in the archive merged;
        in the order the reader needs them (by their first image in catalog order)."""
        order = sorted(range(first, last), key=lambda i: int(self.offsets[i]))
        groups: list[_Group] = []
        for i in order:
            a, b = int(self.offsets[i]), int(self.offsets[i] + self.sizes[i])
            g = groups[-1] if groups else None
            if g is not None and a - g.end <= COALESCE_GAP and b - g.start <= MAX_GROUP:
                g.end = max(g.end, b)
                g.members.append(i)
            else:
                groups.append(_Group(a, b, [i]))
        return sorted(groups, key=lambda g: min(g.members))

    def _plan_groups(self) -> Iterator[_Group]:
        n = len(self.sizes)
        for first in range(0, n, self.batch):
            yield from self._groups(first, min(n, first + self.batch))

    def _send_next(self) -> bool:
        g = next(self._plan, None)
        if g is None:
            return False
        g.left = len(g.members)
        with self._lock:
            self._in_flight += 1
        g.future = self._reader.submit(g.start, g.end)
        g.future.add_done_callback(self._landed)
        for i in g.members:
            self._group_of[i] = g
        self._sent.append(g)
        return True

    def _landed(self, _: Future[bytes]) -> None:
        with self._lock:
            self._in_flight -= 1

    def _top_up(self) -> None:
        """Send requests until `window` are in flight (or the held images reach a window
        beyond the reader's position)."""
        while len(self._sent) < self.window + self.batch and self._in_flight < self.window:
            if not self._send_next():
                return

    def _data(self, g: _Group) -> bytes:
        if g.data is None:
            assert g.future is not None
            with errors(self.loc.url, options=self.loc.options):
                data = g.future.result()
            COUNTS.add("images", len(data))
            self.requests += 1
            self.bytes += len(data)
            if len(data) != g.end - g.start:
                raise CorruptArchiveError(f"{self.loc}: truncated: short read at byte {g.start}")
            g.data = data
        return g.data

    def read(self, i: int) -> bytes:
        while i not in self._group_of:
            if not self._send_next():
                raise IndexError(i)
        self._top_up()
        g = self._group_of.pop(i)
        data = self._data(g)
        a = int(self.offsets[i]) - g.start
        g.left -= 1
        if g.left == 0:  # every image of the request read: its bytes can go
            self._sent.remove(g)
        return data[a:a + int(self.sizes[i])]

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "read_bytes": self.bytes}

    def close(self) -> None:
        for g in self._sent:
            if g.future is not None:
                g.future.cancel()
        self._sent.clear()
        self._group_of.clear()
        self._reader.close()
