"""Give freed heap memory back to the system between the phases of a long run.

Building a catalog of 1.28 M images or reading 615k boxes frees many small objects;
glibc keeps that memory in the process (about 40-80 MB at ImageNet size) unless
asked to trim it.  Trimming before the pool forks keeps every worker, which starts
as a copy of the main process, that much smaller.  A no-op where there is no glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():  # type: ignore[no-untyped-def]
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Return the heap's free pages to the system (glibc's malloc_trim), if possible."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
