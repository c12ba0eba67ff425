"""WebDataset's tar conventions: fixed GNU tar headers, sample keys, reading samples back.

A sample is consecutive tar members sharing a key (the member name up to its first
dot); the writer builds headers from tarfile's own template so every shard's bytes
depend only on its samples (docs/webdataset.md).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from imagenet_prep.errors import PrepError
from imagenet_prep.sources.tarindex import Member, iter_members

INDEX_KIND = "wids-shard-index-v1"
BLOCK = tarfile.BLOCKSIZE


# --- tar members ----------------------------------------------------------------------

def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def tar_header(name: str, size: int) -> bytes:
    """tarfile's GNU header for a regular file (fixed owner, mode and time) named `name`.

    tarfile's `tobuf` costs ~40 us; three per sample would cost more than the rest of
    the sample, so the header is tarfile's own template with the name, size and
    checksum put in (~2 us).  Names over 100 bytes and sizes from 8 GiB (never
    images) take tarfile's way; the tests compare both for many names and sizes.
    """
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > 100 or size >= 8**11:
        return _tarinfo(name, size).tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    size_field = b"%011o\0" % size
    chksum = _TPL_SUM + sum(raw) + sum(size_field)
    return b"".join((raw, bytes(100 - len(raw)), _TPL_A, size_field, _TPL_B,
                     b"%06o\0" % chksum, _TPL_C))


_TPL = _tarinfo("x", 0).tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
_TPL_A, _TPL_B, _TPL_C = _TPL[100:124], _TPL[136:148], _TPL[155:]
# the checksum sums every byte with its own field read as spaces (8 * 32 = 256)
_TPL_SUM = sum(_TPL) - sum(_TPL[:100]) - sum(_TPL[124:136]) - sum(_TPL[148:156]) + 256
_PAD = bytes(BLOCK)


def member_parts(name: str, data: bytes) -> list[bytes]:
    """Header, data and padding of one member (the data object itself, not a copy)."""
    pad = -len(data) % BLOCK
    return [tar_header(name, len(data)), data, _PAD[:pad]] if pad else \
        [tar_header(name, len(data)), data]


def end_of_archive(offset: int) -> bytes:
    """Two zero blocks, then zeros to a multiple of 10240 bytes, as tarfile closes a tar."""
    end = offset + 2 * BLOCK
    return bytes(2 * BLOCK + (-end % tarfile.RECORDSIZE))


# --- samples --------------------------------------------------------------------------

def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def sample_key(name: str, where: str) -> str:
    """The file name without its extension; WebDataset splits a member name at its first dot."""
    key = _stem(name)
    if "." in key or not key:
        raise PrepError(f"{where}: {name!r} cannot be a WebDataset key (a dot before the "
                        "extension, or no name)")
    return key


def sample_keys(names: Sequence[str], where: Callable[[int], str], shard: str) -> list[str]:
    """The keys of a shard's samples; refuses a name that makes no key and a key seen twice.

    `where(i)` names image i in a message, so it is built only for a refusal.
    """
    keys = [_stem(n) for n in names]
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if "." in key or not key:
            sample_key(names[i], where(i))
        if key in seen:
            raise PrepError(f"{where(i)}: a second image with the key {key!r} in {shard}")
        seen.add(key)
    return keys


def wids_index(name: str, shards: list[tuple[str, int, int]]) -> str:
    """The wids shard index of (url relative to the index, samples, bytes) per shard."""
    doc = {"__kind__": INDEX_KIND, "wids_version": 1, "name": name,
           "shardlist": [{"url": u, "nsamples": n, "filesize": b} for u, n, b in shards]}
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def iter_samples(path: Path, label: str | None = None
                 ) -> Iterator[tuple[str, list[tuple[str, Member]]]]:
    """(key, [(ext, member)]) per sample in tar order; member names checked on the way.
    `label` names the shard in errors (the object a local copy was made of)."""
    key, group = None, []
    for m in iter_members(path, label=label):
        stem, dot, ext = m.name.partition(".")
        if not dot or "/" in m.name or not ext:
            raise PrepError(f"{label or path}: member {m.name!r} is not KEY.EXT")
        if stem != key:
            if group:
                yield key, group
            key, group = stem, []
        group.append((ext, m))
    if group:
        yield key, group
