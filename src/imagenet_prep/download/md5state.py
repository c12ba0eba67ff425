"""An MD5 whose running state can be saved and restored: resuming a streamed upload.

A download into a bucket never has the whole file anywhere it could read back (the
parts of an unfinished multipart upload cannot be read), so a rerun can only finish
the whole-file MD5 from the state the hash had after the last uploaded part.
hashlib cannot export that state.  OpenSSL's low-level `MD5_CTX` is a plain,
documented struct (openssl/md5.h: A, B, C, D, Nl, Nh, data[16], num: 92 bytes), and
the libcrypto that hashlib itself uses exports `MD5_Init` / `MD5_Update` /
`MD5_Final`, so the same C code hashes at hashlib's speed and the 92 bytes are the
state.  Where that library cannot be loaded (not Linux, or an OpenSSL built
without the deprecated API) `available()` is False and the caller re-reads the
finished range from the source instead (docs/storage.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache
from typing import Any

CTX_SIZE = 92  # sizeof(MD5_CTX) on every OpenSSL ABI (its fields are 32-bit words)
_BUFFER = 128  # room to spare in case a build pads the struct


@cache
def _libcrypto() -> Any | None:
    """libcrypto with the MD5 functions typed, or None (then no saved state: see module)."""
    if not sys.platform.startswith("linux"):
        return None  # macOS aborts the process when its system libcrypto is loaded this way
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        fns = (lib.MD5_Init, lib.MD5_Update, lib.MD5_Final)
    except (OSError, AttributeError):
        return None
    for fn in fns:
        fn.restype = ctypes.c_int
    lib.MD5_Init.argtypes = [ctypes.c_void_p]
    lib.MD5_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.MD5_Final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


def available() -> bool:
    return _libcrypto() is not None


class ResumableMD5:
    """hashlib.md5's interface (update, hexdigest) plus `state()` and `from_state()`."""

    def __init__(self) -> None:
        lib = _libcrypto()
        if lib is None:
            raise RuntimeError("no libcrypto MD5 here; check available() first")
        self._lib = lib
        self._ctx = ctypes.create_string_buffer(_BUFFER)
        if lib.MD5_Init(self._ctx) != 1:
            raise RuntimeError("MD5_Init failed")

    @classmethod
    def from_state(cls, state: str) -> ResumableMD5:
        """The hash as it was when `state()` returned `state` (hex)."""
        raw = bytes.fromhex(state)
        if len(raw) != CTX_SIZE:
            raise ValueError(f"an MD5 state is {CTX_SIZE} bytes, got {len(raw)}")
        md5 = cls()
        ctypes.memmove(md5._ctx, raw, CTX_SIZE)
        return md5

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if isinstance(data, bytes):
            ptr: Any = data  # ctypes passes a bytes object's own buffer, no copy
            n = len(data)
        else:
            view = memoryview(data).cast("B")
            n = view.nbytes
            ptr = (ctypes.c_char * n).from_buffer_copy(view) if view.readonly else \
                (ctypes.c_char * n).from_buffer(view)
        if n and self._lib.MD5_Update(self._ctx, ptr, n) != 1:
            raise RuntimeError("MD5_Update failed")

    def state(self) -> str:
        """The running state as hex (what `from_state` takes)."""
        return self._ctx.raw[:CTX_SIZE].hex()

    def hexdigest(self) -> str:
        """The digest so far (this object keeps hashing: Final runs on a copy)."""
        ctx = ctypes.create_string_buffer(self._ctx.raw, _BUFFER)
        out = ctypes.create_string_buffer(16)
        if self._lib.MD5_Final(out, ctx) != 1:
            raise RuntimeError("MD5_Final failed")
        return out.raw.hex()
