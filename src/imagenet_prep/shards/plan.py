"""Deterministic planning shared by the shard sinks (TFRecord, WebDataset).

Everything a shard writer needs is fixed here, in the main process, before any
shard is written: each split's catalog (from the archives or from folders), the
seeded permutation, the shard boundaries (by count or by estimated bytes, from
the inputs only), the boxes as compact arrays, and the state checks that let a
rerun write only the missing shards and refuse other options.  So shards can be
written in any order, by any number of workers, with the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from imagenet_prep.errors import PrepError
from imagenet_prep.runtime.files import is_tmp_name
from imagenet_prep.sources.archives import find_archive
from imagenet_prep.sources.boxes import parse_csv
from imagenet_prep.sources.catalog import (
    Catalog,
    Names,
    flat_from_archive,
    grouped_from_folder,
    train_from_archive,
    with_labels,
)

Boxes = dict[str, list[tuple[float, float, float, float]]]
NO_BOXES = np.zeros((0, 4), dtype=np.float32)


# --- order and boundaries ---------------------------------------------------------------

def shuffle_order(names: list[str], seed: int) -> np.ndarray:
    """A seeded permutation of range(len(names)): sort by keyed BLAKE2b of each name.

    Independent of platform, Python version and listing order; ties (never seen
    with 64 bits) keep catalog order.
    """
    key = str(seed).encode()
    digests = b"".join(hashlib.blake2b(n.encode(), digest_size=8, key=key).digest()
                       for n in names)
    hashes = np.frombuffer(digests, dtype=">u8")
    return np.argsort(hashes, kind="stable")


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Shard k holds [k*n//shards, (k+1)*n//shards): sizes differ by at most one."""
    return [(k * n // shards, (k + 1) * n // shards) for k in range(shards)]


def count_bounds(n: int, per_shard: int) -> list[tuple[int, int]]:
    """Consecutive runs of `per_shard` items; the last shard holds the rest."""
    return [(a, min(a + per_shard, n)) for a in range(0, n, per_shard)]


def size_bounds(costs: np.ndarray, limit: int) -> list[tuple[int, int]]:
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


# --- catalogs and boxes -----------------------------------------------------------------

def flat_from_folder(split: str, root: Path) -> Catalog:
    """Index a flat folder root/*.JPEG (the extracted test split), sorted, unlabelled."""
    with os.scandir(root) as it:
        rows = sorted((e.name, e.stat(follow_symlinks=False).st_size) for e in it
                      if e.is_file(follow_symlinks=False) and not is_tmp_name(e.name))
    if not rows:
        raise PrepError(f"{root}: no images")
    return Catalog(
        split=split, names=Names.of(r[0] for r in rows),
        labels=np.full(len(rows), -1, dtype=np.int16),
        sizes=np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)), root=root,
    )


def split_catalog(split: str, dataset: Path, archives: Path | None, from_folders: bool,
                  labels: str) -> Catalog | None:
    """The split's catalog (train, val or test), or None when its source is absent.

    From folders, train and val are class trees (DATASET/val after `valtree`) and
    test is flat; from archives, val labels come from `labels` (see labels.val_labels).
    """
    if from_folders:
        root = dataset / split
        if not root.is_dir():
            return None
        return flat_from_folder(split, root) if split == "test" else \
            grouped_from_folder(split, root)
    assert archives is not None
    archive = find_archive(archives, split)
    if archive is None:
        return None
    if split == "train":
        return train_from_archive(archive)
    if split == "test":
        return flat_from_archive(split, archive, None)
    from imagenet_prep.sources.labels import val_labels

    cat = flat_from_archive(split, archive, None)
    return with_labels(cat, val_labels(cat.names, archives=archives, dataset=dataset,
                                       source=labels))


def catalog_digest(cat: Catalog, *, sizes: bool = False) -> str:
    """SHA-256 of the catalog's names and labels (and sizes, when the plan depends on them)."""
    h = hashlib.sha256()
    cols = [cat.names, cat.labels.tolist()] + ([cat.sizes.tolist()] if sizes else [])
    for row in zip(*cols, strict=True):
        h.update(("\t".join(map(str, row)) + "\n").encode())
    return h.hexdigest()


def load_boxes(csv: Path | None) -> tuple[Boxes, str | None]:
    """name -> boxes in CSV order, and the CSV's SHA-256 (None: no boxes available)."""
    if csv is None:
        return {}, None
    data = csv.read_bytes()
    out: Boxes = {}
    for name, box in parse_csv(data.decode("ascii", errors="replace"), str(csv)):
        out.setdefault(name, []).append(box)
    return out, hashlib.sha256(data).hexdigest()


BoxArrays = tuple[np.ndarray, np.ndarray, np.ndarray]


def box_arrays(cat: Catalog, by_name: Boxes, dtype: type = np.float32) -> BoxArrays:
    """(boxes per catalog image, where each image's boxes start, all boxes as (n, 4)).

    Compact arrays (~25 MB for ImageNet in float32) instead of a dict of lists.
    float32 is what an Example stores, rounded from the CSV's decimal through a
    double as the reference; float64 keeps the CSV's decimals exactly.
    """
    counts = np.fromiter((len(by_name.get(n, ())) for n in cat.names), dtype=np.int32,
                         count=len(cat))
    starts = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
    flat = [b for n in cat.names for b in by_name.get(n, ())]
    boxes = np.asarray(flat, dtype=np.float64).astype(dtype).reshape(-1, 4)
    return counts, starts, boxes


def shard_boxes(arrays: BoxArrays, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(boxes per image, their boxes in that order) for the images `idx` of one shard."""
    all_counts, starts, all_boxes = arrays
    pieces = [all_boxes[starts[i]:starts[i + 1]] for i in idx]
    return all_counts[idx], (np.concatenate(pieces) if pieces else NO_BOXES)


# --- helpers for the shard writers ----------------------------------------------------

def image_where(cat: Catalog, i: int) -> str:
    """Name an image for messages: the archive member, or the file."""
    if cat.archive is None:
        return str(cat.path(i))
    if cat.split == "train":
        return f"{cat.archive}:{cat.wnid(i)}.tar:{cat.names[i]}"
    return f"{cat.archive}:{cat.names[i]}"


def write_parts(fd: int, parts: list[bytes], size: int) -> None:
    """One writev for a record or sample (no copies of the image bytes); finish a (rare)
    short write with plain writes."""
    done = os.writev(fd, parts)
    if done < size:
        rest = memoryview(b"".join(parts))[done:]
        while rest:
            rest = rest[os.write(fd, rest):]


# --- state: resume and refusal ---------------------------------------------------------

def check_state(
    state: dict | None, options: dict, splits: dict[str, dict], *, stage: str, what: str,
    folders: dict[str, Path], is_ours: Callable[[str], bool], start_over: str,
) -> dict:
    """The state to continue from; refuse a rerun whose options or inputs differ.

    Without a state, a split folder (`folders`) holding files of ours (`is_ours`) was
    written by a run that nothing recorded: refused rather than overwritten.
    """
    if state is None:
        for d in dict.fromkeys(folders.values()):
            if d.is_dir() and any(is_ours(e) for e in os.listdir(d)):
                raise PrepError(f"{d}: holds files that no {stage} run recorded; " + start_over)
        return {"options": options, "splits": splits, "shards": {}}
    old = state.get("options", {})
    if old != options:
        was = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(old.items()))
        raise PrepError(
            f"{what} were started with other options ({was}); rerun with those, or "
            + start_over)
    for split, info in splits.items():
        before = state["splits"].get(split)
        if before is not None and before != info:
            raise PrepError(
                f"{folders[split]}: written from other {split} images or boxes "
                f"({before['images']} images before, {info['images']} now); " + start_over)
        state["splits"][split] = info
    return state


def finished(path: Path, split: str, entry: dict | None) -> bool:
    """A shard is finished when its final file has the size its state entry records.

    A shard renamed into place after the last state save is simply written again
    (same bytes), so the state never has to be saved after every shard.
    """
    if entry is None or entry.get("split") != split:
        return False
    try:
        return path.stat().st_size == entry["bytes"]
    except FileNotFoundError:
        return False


def remove_stale_tmp(folder: Path) -> None:
    """Temporary files of a killed run: each run holds the dataset lock, so none is live."""
    for name in os.listdir(folder):
        if is_tmp_name(name):
            (folder / name).unlink(missing_ok=True)
