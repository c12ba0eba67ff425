"""MosaicML Streaming's MDS shard format, written and read without `mosaicml-streaming`.

What its writer (`streaming.base.format.mds.writer.MDSWriter`, version 2) lays
down, with our columns (docs/mds.md):

- a shard: uint32 sample count n; n + 1 uint32 offsets (from the start of the file)
  of each sample and of the end; the writer's configuration as sorted-key JSON; then
  the samples back to back;
- a sample: one uint32 length per variable-size column, then each column's bytes,
  columns in sorted name order: `filename` (str, UTF-8), `i` (int: int64), `x`
  (jpeg: the JPEG bytes as they are), `y` (int: int64);
- index.json: `{"shards": [...], "version": 2}` with one entry per shard (its
  configuration, sample count and raw file's name, size and hashes).

All integers are little-endian.  Offsets are 32-bit, so a shard stays under 4 GiB.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

COLUMNS = {"filename": "str", "i": "int", "x": "jpeg", "y": "int"}  # name -> MDS encoding
NAMES = sorted(COLUMNS)
ENCODINGS = [COLUMNS[n] for n in NAMES]
SIZES = [8 if COLUMNS[n] == "int" else None for n in NAMES]  # fixed sizes; None: variable
MAX_SHARD = 2**32 - 1
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_HEADS = struct.Struct("<II")  # the lengths of filename and x


def config(size_limit: int) -> dict[str, Any]:
    """The writer's configuration, as in each shard and each index entry."""
    return {"column_encodings": ENCODINGS, "column_names": NAMES, "column_sizes": SIZES,
            "compression": None, "format": "mds", "hashes": [], "size_limit": size_limit,
            "version": 2}


def config_bytes(size_limit: int) -> bytes:
    return json.dumps(config(size_limit), sort_keys=True).encode()


def sample_pieces(filename: str, index: int, image: bytes, label: int) -> list[bytes]:
    """One sample's bytes as pieces (the image passed through, not copied)."""
    name = filename.encode()
    return [_HEADS.pack(len(name), len(image)) + name + _I64.pack(index), image,
            _I64.pack(label)]


def shard_header(sample_sizes: list[int], size_limit: int) -> bytes:
    """Count, offsets and configuration: what precedes the samples of a shard."""
    cfg = config_bytes(size_limit)
    n = len(sample_sizes)
    pos = 4 + 4 * (n + 1) + len(cfg)
    offsets = [pos]
    for size in sample_sizes:
        pos += size
        offsets.append(pos)
    if pos > MAX_SHARD:
        raise ValueError(f"a shard of {pos} bytes: MDS offsets hold 32 bits")
    return _U32.pack(n) + struct.pack(f"<{n + 1}I", *offsets) + cfg


def index_entry(name: str, samples: int, size: int, size_limit: int) -> dict[str, Any]:
    return {**config(size_limit), "raw_data": {"basename": name, "bytes": size, "hashes": {}},
            "samples": samples, "zip_data": None}


def index_text(entries: list[dict[str, Any]]) -> str:
    """index.json as MosaicML's writer dumps it (sorted keys)."""
    return json.dumps({"shards": entries, "version": 2}, sort_keys=True)


# --- reading (check) ----------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    filename: str
    index: int
    label: int
    image_offset: int
    image_size: int


def iter_shard(fd: int, size: int, size_limit: int) -> Iterator[Sample]:
    """The samples of the shard open as `fd` (`size` bytes); ValueError on any malformation."""
    head = os.pread(fd, 4, 0)
    if len(head) < 4:
        raise ValueError("shorter than its sample count")
    n = _U32.unpack(head)[0]
    table = os.pread(fd, 4 * (n + 1), 4)
    if len(table) != 4 * (n + 1):
        raise ValueError(f"{n} samples announced, the offsets are cut short")
    offsets = struct.unpack(f"<{n + 1}I", table)
    cfg = config_bytes(size_limit)
    if os.pread(fd, len(cfg), 4 + len(table)) != cfg:
        raise ValueError("its configuration is not the columns imagenet-prep writes")
    if offsets[0] != 4 + len(table) + len(cfg) or offsets[-1] != size:
        raise ValueError(f"offsets span {offsets[0]}..{offsets[-1]}, the file has {size} bytes")
    for k in range(n):
        start, end = offsets[k], offsets[k + 1]
        if end < start + _HEADS.size + 16:
            raise ValueError(f"sample {k}: {end - start} bytes")
        data = os.pread(fd, min(end - start, 4096), start)
        name_len, image_len = _HEADS.unpack_from(data)
        if _HEADS.size + name_len + 16 + image_len != end - start:
            raise ValueError(f"sample {k}: its column lengths do not add up to its size")
        pos = _HEADS.size + name_len
        if pos + 8 > len(data):
            raise ValueError(f"sample {k}: a file name of {name_len} bytes")
        filename = data[_HEADS.size:pos].decode()
        index = _I64.unpack_from(data, pos)[0]
        label = _I64.unpack(os.pread(fd, 8, end - 8))[0]
        yield Sample(filename, index, label, start + pos + 8, image_len)
