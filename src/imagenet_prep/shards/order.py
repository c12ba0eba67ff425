"""The seeded order of a split and where its shards are cut, from the inputs only.

Fixed in the main process before any shard is written, so shards can be written
in any order, by any number of workers, with the same bytes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from imagenet_prep.errors import PrepError
from imagenet_prep.sources.names import Names


def shuffle_order(names: Names | Sequence[str], seed: int) -> np.ndarray:
    """A seeded permutation of range(len(names)): sort by keyed BLAKE2b of each name.

    Independent of platform, Python version and listing order; ties (never seen
    with 64 bits) keep catalog order.  The digests go into one 8-byte-a-name buffer
    (10 MB for ImageNet's training names, not a list of 1.28 M objects).
    """
    key = str(seed).encode()
    encoded = names.encoded() if isinstance(names, Names) else (n.encode() for n in names)
    digests = bytearray(8 * len(names))
    for i, name in enumerate(encoded):
        digests[8 * i:8 * i + 8] = hashlib.blake2b(name, digest_size=8, key=key).digest()
    hashes = np.frombuffer(digests, dtype=">u8")
    return np.argsort(hashes, kind="stable")


Bounds = list[tuple[int, int]]


def shard_bounds(n: int, shards: int) -> Bounds:
    """Shard k holds [k*n//shards, (k+1)*n//shards): sizes differ by at most one."""
    return [(k * n // shards, (k + 1) * n // shards) for k in range(shards)]


def count_bounds(n: int, per_shard: int) -> Bounds:
    """Consecutive runs of `per_shard` items; the last shard holds the rest."""
    return [(a, min(a + per_shard, n)) for a in range(0, n, per_shard)]


def size_bounds(costs: np.ndarray, limit: int) -> Bounds:
    """Cut items (in order) into runs whose summed cost stays within `limit`.

    Greedy: a shard takes items while the total fits; an item larger than the
    limit gets a shard of its own.  Costs come from the inputs, so the cut is
    known before anything is written.
    """
    cum = np.cumsum(costs, dtype=np.int64)
    bounds, start, n = [], 0, len(costs)
    while start < n:
        base = int(cum[start - 1]) if start else 0
        end = max(int(np.searchsorted(cum, base + limit, side="right")), start + 1)
        bounds.append((start, end))
        start = end
    return bounds


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """Bytes from `500MB`, `1GB`, `1.5GiB` or a plain number (SI and binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise PrepError(f"size {text!r}: expected a number with an optional unit such as "
                        "500MB, 1GB or 1GiB")
    n = int(float(m.group(1)) * _UNITS[unit])
    if n < 1:
        raise PrepError(f"size {text!r}: must be at least one byte")
    return n
