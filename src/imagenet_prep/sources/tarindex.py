"""Header-only index of uncompressed tars, nested tars included, and positioned reads.

A tar has no table of contents, but its headers can be visited by seeking over the
data: indexing the 147 GB train archive reads ~2.5 M headers of 512 bytes, not the
images.  An inner tar's members sit at (outer data offset + inner offset), so any
image is one `pread` away and nothing has to be extracted to read it.
"""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from imagenet_prep.errors import CorruptArchiveError, UnsafeArchiveError
from imagenet_prep.runtime.storage import RemotePath, open_input
from imagenet_prep.runtime.window import Pread, Window

BLOCK = 512


@dataclass(frozen=True, slots=True)
class Member:
    """A regular file inside an archive: its name and where its bytes are in the archive file."""

    name: str
    offset: int
    size: int


def safe_member_name(archive: Path | str, name: str) -> str:
    """Return `name` normalised, or raise if it could land outside the output folder."""
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an empty or invalid name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refused")
    parts = name.split("/")
    if "" in parts or "." in parts:
        parts = [p for p in parts if p not in ("", ".")]
    if ".." in parts or "\\" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} points outside the output; refused")
    if not parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an empty name")
    return "/".join(parts)


def _check_kind(archive: Path | str, info: tarfile.TarInfo) -> bool:
    """True for a regular file, False for a directory, raise for anything else."""
    if info.isreg():
        return True
    if info.isdir():
        return False
    kind = (
        "symbolic link" if info.issym() else
        "hard link" if info.islnk() else
        "device file" if (info.ischr() or info.isblk()) else
        "FIFO" if info.isfifo() else f"type {info.type!r}"
    )
    raise UnsafeArchiveError(f"{archive}: member {info.name!r} is a {kind}; refused")


_FAST_TYPES = (b"0", b"\x00", b"5")  # plain file, old-style plain file, directory
_ENCODING = "utf-8"


def _plain_header(buf: bytes) -> tuple[str, int, bool] | None:
    """(name, size, is_dir) of an ordinary ustar/GNU header, or None for anything else.

    Parsing the 512 bytes here costs a few microseconds against ~30 for tarfile;
    every header that is not a plain file or directory with a valid checksum (long
    names, pax records, links, devices, damage) goes to tarfile instead.
    """
    magic = buf[257:263]
    if buf[156:157] not in _FAST_TYPES or magic not in (b"ustar\x00", b"ustar ") or buf[124] & 0x80:
        return None
    try:
        chksum = int(buf[148:156].split(b"\x00", 1)[0].strip() or b"0", 8)
        size = int(buf[124:136].split(b"\x00", 1)[0].strip() or b"0", 8)
    except ValueError:
        return None
    if chksum != sum(buf) - sum(buf[148:156]) + 256:
        return None
    name = buf[:100].split(b"\x00", 1)[0]
    is_dir = buf[156:157] == b"5"
    if buf[345] != 0:
        if magic != b"ustar\x00":  # GNU: tarfile would read these bytes as a prefix too
            return None
        name = buf[345:500].split(b"\x00", 1)[0] + b"/" + name  # POSIX ustar prefix
    if (is_dir and size) or (buf[156:157] == b"\x00" and name.endswith(b"/")):
        return None  # a directory with data, an old-style directory: tarfile's rules
    return name.decode(_ENCODING, "surrogateescape"), size, is_dir


def iter_members(
    archive: Path | str | RemotePath, *, fd: int | None = None, start: int = 0,
    length: int | None = None, label: str | None = None, pread: Pread | None = None,
    total: int | None = None,
) -> Iterator[Member]:
    """Yield the regular-file members of an uncompressed tar (or of a tar inside one).

    Only headers are read.  Offsets are absolute in the file `archive`.  Unsafe
    members raise `UnsafeArchiveError`; a truncated or foreign file raises
    `CorruptArchiveError`; directories are skipped.  `pread` and `total` (its size)
    read another kind of file (remote_tar's block reads); an archive in object storage
    given alone is listed from its cached index.
    """
    if isinstance(archive, RemotePath) and pread is None:
        from imagenet_prep.sources.remote_tar import flat_members

        yield from flat_members(archive)
        return
    label = label or str(archive)
    own = fd is None and pread is None
    if own:
        try:
            fd = os.open(archive, os.O_RDONLY)
        except FileNotFoundError:
            raise CorruptArchiveError(f"{label}: archive not found") from None
    try:
        if pread is None:
            assert fd is not None
            total, pread = os.fstat(fd).st_size, partial(os.pread, fd)
        assert total is not None
        if length is None:
            length = total - start
        if length == 0:
            raise CorruptArchiveError(f"{label}: empty file, not a tar archive")
        _sniff(label, pread(BLOCK, start))
        window = Window(pread, start, length)
        try:
            tf = tarfile.open(fileobj=window, mode="r:")  # type: ignore[arg-type]
        except tarfile.TarError as e:
            raise CorruptArchiveError(f"{label}: not a readable tar archive ({e})") from None
        seen: set[str] = set()
        pos = 0  # offset of the next header, relative to `start`
        while True:
            buf = pread(BLOCK, start + pos) if pos + BLOCK <= length else b""
            plain = _plain_header(buf) if len(buf) == BLOCK else None
            if plain is not None:
                raw_name, size, is_dir = plain
                data_at = pos + BLOCK
                pos = data_at + -(-size // BLOCK) * BLOCK
                name = safe_member_name(label, raw_name)
                if is_dir:
                    continue
            else:
                if buf and buf.count(0) == BLOCK:  # end-of-archive marker
                    break
                tf.firstmember = None
                tf.offset = pos
                window.seek(pos)
                try:
                    info = tf.next()
                except tarfile.TarError as e:
                    raise CorruptArchiveError(f"{label}: corrupt tar header ({e})") from None
                if info is None:
                    break
                tf.members.clear()  # keep memory flat: we yield, we do not collect
                pos = tf.offset
                name = safe_member_name(label, info.name)
                if not _check_kind(label, info):
                    continue
                data_at, size = info.offset_data, info.size
            if data_at + size > length:
                raise CorruptArchiveError(
                    f"{label}: truncated: member {name!r} needs {data_at + size} "
                    f"bytes, the archive has {length}"
                )
            if name in seen:
                raise CorruptArchiveError(f"{label}: duplicate member name {name!r}")
            seen.add(name)
            yield Member(name, start + data_at, size)
        _check_end(label, pread, start, pos, length)
    finally:
        if own and fd is not None:
            os.close(fd)


def _sniff(label: str, head: bytes) -> None:
    """Name the common wrong-file cases before tarfile gives a vaguer error."""
    if head[:2] == b"\x1f\x8b":
        raise CorruptArchiveError(f"{label}: is gzip-compressed, expected an uncompressed tar")
    lowered = head[:64].lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        raise CorruptArchiveError(f"{label}: is an HTML page (a failed download?), not a tar")
    if len(head) < BLOCK:
        raise CorruptArchiveError(f"{label}: truncated: shorter than one tar header")


def _check_end(label: str, pread: Pread, start: int, end_offset: int, length: int) -> None:
    """A complete tar ends with two zero blocks; tarfile alone stops silently at a cut."""
    tail = pread(2 * BLOCK, start + end_offset)
    if end_offset + 2 * BLOCK > length or len(tail) < 2 * BLOCK or tail.count(0) != len(tail):
        raise CorruptArchiveError(
            f"{label}: truncated or corrupt near byte {end_offset}: no end-of-archive marker "
            "(an interrupted download? compare with `imagenet-prep verify`)"
        )


def iter_nested(archive: Path | str | RemotePath
                ) -> Iterator[tuple[Member, Iterator[Member]]]:
    """Yield (inner tar member, iterator over its members) for a tar of tars."""
    if isinstance(archive, RemotePath):  # from its cached index (remote_tar)
        from imagenet_prep.sources.remote_tar import nested_members

        yield from nested_members(archive)
        return
    fd = os.open(archive, os.O_RDONLY)
    try:
        # The outer headers (1000 for ImageNet) are checked in full before any inner
        # tar is read, so an unsafe or damaged outer member stops the run up front.
        for outer in list(iter_members(archive, fd=fd)):
            label = f"{archive}:{outer.name}"
            yield outer, iter_members(archive, fd=fd, start=outer.offset, length=outer.size,
                                      label=label)
    finally:
        os.close(fd)


GZ_READ = 1 << 20  # compressed bytes per read
GZ_OUT = 8 << 20  # at most this much decompressed per step: memory stays bounded


class _GzStream:
    """The decompressed bytes of a gzip file, consumed front to back from one buffer.

    Reading through tarfile's stream mode costs ~100 us per member (10 s per 100,000
    XMLs); slicing members out of a large decompressed buffer costs a few.  zlib checks
    the gzip trailer (CRC and length) at the end, which tarfile's own reader does not.
    `buf[pos:]` is what is not consumed yet.
    """

    def __init__(self, f: io.BufferedReader, label: str) -> None:
        self._f, self._label = f, label
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.buf, self.pos = b"", 0

    def _more(self) -> bool:
        """Decompress the next step onto the buffer; False once the gzip stream has ended."""
        z = self._z
        if z.eof:
            return False
        src = z.unconsumed_tail or self._f.read(GZ_READ)
        if not src:
            raise CorruptArchiveError(f"{self._label}: truncated: the gzip stream ends early "
                                      "(an interrupted download?)")
        try:
            out = z.decompress(src, GZ_OUT)
        except zlib.error as e:
            raise CorruptArchiveError(f"{self._label}: not a readable .tar.gz ({e})") from None
        self.buf = self.buf[self.pos:] + out
        self.pos = 0
        return True

    def ensure(self, n: int) -> bool:
        """Make `n` unconsumed bytes available; False if the stream ends first."""
        while len(self.buf) - self.pos < n:
            if not self._more():
                return False
        return True

    def read(self, n: int = -1) -> bytes:
        """File-like read, for tarfile when it takes over the rest of the stream."""
        if n is None or n < 0:
            while self._more():
                pass
            n = len(self.buf) - self.pos
        else:
            self.ensure(n)
        data = self.buf[self.pos:self.pos + n]
        self.pos += len(data)
        return data

    def drain(self) -> None:
        """Read to the end of the gzip stream, so its CRC and length are checked."""
        self.buf, self.pos = b"", 0
        while self._more():
            self.buf = b""


def iter_gz_members(archive: Path | RemotePath) -> Iterator[tuple[str, bytes]]:
    """Stream (safe name, bytes) of the regular files of a small .tar.gz (box XMLs, devkit).

    A gzip stream cannot be indexed, so it is read once, in order; members are
    checked as in `iter_members`.  Plain headers are parsed here; at the first
    other one (long names, pax records, links) tarfile reads the rest of the stream.
    """
    try:
        f = open_input(archive)
    except FileNotFoundError:
        raise CorruptArchiveError(f"{archive}: archive not found") from None
    with f:
        if f.peek(2)[:2] != b"\x1f\x8b":
            raise CorruptArchiveError(f"{archive}: not a readable .tar.gz (not a gzip file)")
        s = _GzStream(f, str(archive))
        while True:
            full = s.ensure(BLOCK)
            head = s.buf[s.pos:s.pos + BLOCK]
            plain = _plain_header(head) if full else None
            if plain is None:
                if not full or head.count(0) == BLOCK:
                    # the end-of-archive marker, or a stream ending between members
                    # (tarfile accepts both); the rest is read for the gzip CRC check
                    s.drain()
                    return
                yield from _gz_rest(archive, s)
                return
            raw_name, size, is_dir = plain
            name = safe_member_name(archive, raw_name)
            step = BLOCK + size + (-size % BLOCK)
            if not s.ensure(step):
                raise CorruptArchiveError(f"{archive}: truncated: member {name!r} needs "
                                          f"{size} bytes")
            start = s.pos + BLOCK
            s.pos += step
            if not is_dir:
                yield name, s.buf[start:start + size]


def _gz_rest(archive: Path, stream: _GzStream) -> Iterator[tuple[str, bytes]]:
    """The members from the stream's position on, read by tarfile (any header it knows)."""
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tf:  # type: ignore[call-overload]
            for info in tf:
                name = safe_member_name(archive, info.name)
                if not _check_kind(archive, info):
                    continue
                f = tf.extractfile(info)
                assert f is not None
                yield name, f.read()
        stream.drain()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise CorruptArchiveError(f"{archive}: not a readable .tar.gz ({e})") from None


class ArchiveReader:
    """Positioned reads from one archive file; safe to share across threads, one per process."""

    def __init__(self, path: Path | str | RemotePath) -> None:
        if isinstance(path, RemotePath):  # one ranged request per read (extraction)
            self.path: Path | RemotePath = path
            self.fd = -1
            return
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDONLY)

    def read(self, offset: int, size: int) -> bytes:
        if isinstance(self.path, RemotePath):
            data = self.path.read_bytes(offset, offset + size) if size else b""
        else:
            data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise CorruptArchiveError(f"{self.path}: truncated: short read at byte {offset}")
        return data

    def copy_to(self, offset: int, size: int, out_fd: int) -> None:
        """Copy a member's bytes into an open file, in the kernel when the OS allows."""
        if self.fd < 0:
            view = memoryview(self.read(offset, size))
            while view:
                view = view[os.write(out_fd, view):]
            return
        done = 0
        while done < size:
            try:
                n = os.copy_file_range(self.fd, out_fd, size - done, offset + done)
            except OSError:
                n = 0
            if n == 0:  # unsupported here, or EOF: fall back to a plain read and write
                chunk = self.read(offset + done, min(size - done, 1 << 22))
                n = os.write(out_fd, chunk)
            done += n

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
