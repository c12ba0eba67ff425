"""A finished shard's bytes against its state entry: the first proof every shard check makes."""

from __future__ import annotations

from pathlib import Path

from imagenet_prep.runtime.file_manifest import file_crc32c
from imagenet_prep.runtime.storage import RemotePath


def shard_bytes_problems(path: Path | RemotePath, entry: dict | None,
                         local: Path | None = None) -> list[str]:
    """The shard's size and CRC32C against what the run that wrote it recorded (a format
    whose entries carry no CRC32C is held to its size only); `local`: a copy of an
    object in a bucket, read instead of it."""
    if entry is None:
        return [f"{path}: not recorded by any run"]
    copy = local or path
    size = copy.stat().st_size
    if size != entry["bytes"]:
        return [f"{path}: {size} bytes, the state records {entry['bytes']}"]
    if "crc32c" in entry and file_crc32c(copy, 1 << 22) != entry["crc32c"]:
        return [f"{path}: CRC32C mismatch: the shard changed after it was written"]
    return []
