"""A read-only, seekable file over a byte range that a function reads.

Handed to code that wants a file (tarfile over a member of an archive, the S3 client
over a part's buffer), it reads in the caller's chunk sizes: nothing copies the whole
range at once.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

Pread = Callable[[int, int], Any]  # (size, offset) -> bytes-like, as os.pread without the fd


class Window(io.RawIOBase):
    """Bytes [start, start + length) of what `pread` reads."""

    def __init__(self, pread: Pread, start: int, length: int) -> None:
        super().__init__()
        self._pread, self._start, self._length, self._pos = pread, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buf: Any) -> int:
        want = min(len(buf), max(0, self._length - self._pos))
        data = self._pread(want, self._start + self._pos) if want else b""
        memoryview(buf).cast("B")[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def __len__(self) -> int:
        return self._length
