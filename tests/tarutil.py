"""Helpers for tests that build small tars by hand."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def add_file(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def tar_bytes(files: dict[str, bytes], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in files.items():
            add_file(tf, name, data)
    return buf.getvalue()


def write_tar(path: Path, files: dict[str, bytes], fmt: int = tarfile.GNU_FORMAT) -> Path:
    path.write_bytes(tar_bytes(files, fmt))
    return path
