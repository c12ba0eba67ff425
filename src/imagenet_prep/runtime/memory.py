"""Give freed heap memory back to the system between the phases of a long run, or keep
it where a worker refills the same amount again and again.

Building a catalog of 1.28 M images or reading 615k boxes frees many small objects;
glibc keeps that memory in the process (about 40-80 MB at ImageNet size) unless
asked to trim it.  Trimming before the pool forks keeps every worker, which starts
as a copy of the main process, that much smaller.  A no-op where there is no glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


@cache
def _libc_function(name: str):  # type: ignore[no-untyped-def]
    lib = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):
        return None


def _malloc_trim():  # type: ignore[no-untyped-def]
    return _libc_function("malloc_trim")


def release_free_memory() -> None:
    """Return the heap's free pages to the system (glibc's malloc_trim), if possible."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def keep_freed_memory(size: int) -> None:
    """Let this process keep up to `size` bytes of freed heap instead of handing it back.

    A worker that holds a whole shard's images before writing them (MDS: the header
    lists every offset) frees them all at once; glibc then returns those pages to the
    system and the next shard faults them in again, zeroed by the kernel: a third of
    the run's system time on tmpfs.  Raising the trim threshold (and keeping image-sized
    blocks off mmap) reuses them; the process holds at most one shard more.
    """
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(M_TRIM_THRESHOLD, size)
        mallopt(M_MMAP_THRESHOLD, min(size, 32 << 20))
