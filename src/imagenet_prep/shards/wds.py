"""`wds`: WebDataset tar shards for streaming PyTorch training, from the same catalog.

Each split's catalog is permuted by the same seeded hash as the TFRecords and cut
into shards by sample count or by estimated size (input bytes plus tar overhead,
so the cut is known before anything is written).  A sample is three tar members
sharing a key (the file name without its extension): `KEY.cls` (label 0..999 as
text), `KEY.jpg` (the bytes the TFRecord sink would store: kept, or converted to
RGB JPEG) and `KEY.json` (WNID, file name, size, boxes, label).  Test samples have
no label: no `.cls`, and `wnid`/`label` are null.

Tar headers are fixed (GNU format, mtime 0, uid/gid 0, no user names, mode 0644),
so the bytes depend only on the inputs and options.  One pool task per shard;
each shard streams to a temporary name, is fsynced and renamed.  The state record
OUT/.imagenet-prep/wds.json holds the options and each finished shard's samples,
size and CRC32C, so a rerun writes only missing shards, refuses other options, and
`check` can prove every byte.  Per split, OUT/train.json (validation.json,
test.json) is the shard index that `wids.ShardListDataset` reads.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

from imagenet_prep.errors import BadImageError, PrepError
from imagenet_prep.folders.bbox_csv import ensure_csv
from imagenet_prep.formats.images import jpeg_for_record
from imagenet_prep.formats.webdataset import (
    BLOCK,
    INDEX_KIND,
    end_of_archive,
    member_parts,
    sample_key,
)
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.files import atomic_file, ensure_dir, write_atomic
from imagenet_prep.shards.plan import (
    box_arrays,
    catalog_digest,
    check_state,
    count_bounds,
    finished,
    image_where,
    load_boxes,
    remove_stale_tmp,
    shard_boxes,
    shuffle_order,
    size_bounds,
    split_catalog,
    write_parts,
)
from imagenet_prep.shards.run import shard_notes, timed_run, write_shards
from imagenet_prep.sources import metadata
from imagenet_prep.sources.catalog import Catalog

STATE = "wds"
REPORT = "wds-report"
SPLITS = ("train", "val", "test")
DEFAULT_SPLITS = ("train", "val")
ON_BAD = ("fail", "skip")
PREFIX = {"train": "train", "val": "validation", "test": "test"}
DEFAULT_SHARD_SIZE = 10**9

SAMPLE_OVERHEAD = 5 * BLOCK  # three headers, one block of .cls and one of .json
_SHARD_RE = re.compile(r"(train|validation|test)-(\d{6})\.tar")
_INDEX_NAMES = frozenset(f"{p}.json" for p in PREFIX.values())


def shard_name(split: str, k: int) -> str:
    """`train-000000.tar`: the brace pattern train-{000000..000146}.tar names them all."""
    return f"{PREFIX[split]}-{k:06d}.tar"


def index_name(split: str) -> str:
    return f"{PREFIX[split]}.json"


def is_ours(name: str) -> bool:
    """A file name this sink writes in its folder (shards and indexes)."""
    return bool(_SHARD_RE.fullmatch(name)) or name in _INDEX_NAMES


def sample_json(name: str, label: int, width: int, height: int, boxes: np.ndarray) -> bytes:
    """The sample's metadata: sorted keys, no spaces, so the bytes are fixed."""
    wnid = metadata.wnids()[label] if label >= 0 else None
    return json.dumps({
        "boxes": boxes.tolist(), "filename": name, "height": height,
        "label": label if label >= 0 else None, "width": width, "wnid": wnid,
    }, sort_keys=True, separators=(",", ":")).encode()


def sample_parts(key: str, image: bytes, meta: bytes, label: int) -> list[bytes]:
    """KEY.cls (when labelled), KEY.jpg, KEY.json: the order webdataset's writer uses."""
    parts = member_parts(f"{key}.cls", str(label).encode()) if label >= 0 else []
    return parts + member_parts(f"{key}.jpg", image) + member_parts(f"{key}.json", meta)


# --- one shard (runs in a worker) -----------------------------------------------------

_NO_BOXES = np.zeros((0, 4), dtype=np.float64)


@dataclass(frozen=True)
class ShardTask:
    """Everything one shard needs: its images in sample order and their boxes."""

    split: str
    name: str
    path: Path
    catalog: Catalog
    box_counts: np.ndarray | None  # boxes per sample (train), None otherwise
    boxes: np.ndarray | None  # (sum of box_counts, 4) float64, in sample order
    on_bad_image: str


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Write one shard; returns what it holds (samples, bytes, CRC32C, conversions)."""
    cat = task.catalog
    starts = None if task.box_counts is None else np.concatenate(
        ([0], np.cumsum(task.box_counts)))
    converted: list[list[str]] = []
    skipped: list[list[str]] = []
    keys: set[str] = set()
    offset = crc = samples = 0
    # fsync before the rename: once the state lists a shard, its bytes are on disk
    with cat.open() as src, atomic_file(task.path, fsync=True) as f:
        fd = f.fileno()  # samples go straight to the file with writev, never via f's buffer
        for i in range(len(cat)):
            name, where = cat.names[i], image_where(cat, i)
            key = sample_key(name, where)
            if key in keys:
                raise PrepError(f"{where}: a second image with the key {key!r} in {task.name}")
            keys.add(key)
            try:
                image, width, height, reason = jpeg_for_record(src.read(i), where)
            except BadImageError as e:
                if task.on_bad_image == "fail":
                    raise
                skipped.append([name, str(e)])
                continue
            if reason is not None:
                converted.append([name, reason])
            boxes = _NO_BOXES if starts is None or task.boxes is None else \
                task.boxes[starts[i]:starts[i + 1]]
            label = int(cat.labels[i])
            parts = sample_parts(key, image, sample_json(name, label, width, height, boxes),
                                 label)
            size = sum(map(len, parts))
            write_parts(fd, parts, size)
            for part in parts:
                crc = google_crc32c.extend(crc, part)
            offset += size
            samples += 1
        tail = end_of_archive(offset)
        write_parts(fd, [tail], len(tail))
        crc = google_crc32c.extend(crc, tail)
        offset += len(tail)
    return {
        "split": task.split, "name": task.name, "samples": samples, "bytes": offset,
        "crc32c": crc, "input_bytes": cat.total_bytes(), "converted": converted,
        "skipped": skipped,
    }


# --- planning (main process) ----------------------------------------------------------

def plan_bounds(cat: Catalog, order: np.ndarray, shard_size: int | None,
                shard_samples: int | None) -> list[tuple[int, int]]:
    """Shard boundaries over the permuted catalog, from input counts and sizes only."""
    if shard_samples is not None:
        return count_bounds(len(cat), shard_samples)
    assert shard_size is not None
    sizes = cat.sizes[order]
    costs = (sizes + (-sizes % BLOCK)) + SAMPLE_OVERHEAD
    return size_bounds(costs, shard_size)


def _options(shard_size: int | None, shard_samples: int | None, seed: int) -> dict:
    """What fixes the bytes of every shard (`on_bad_image` is not, as for the TFRecords)."""
    cut = {"shard_samples": shard_samples} if shard_samples is not None else \
        {"shard_size": shard_size}
    return {"seed": seed, **cut}


def index_doc(split: str, entries: list[dict]) -> dict[str, Any]:
    """The wids shard index: shard URLs relative to the index file, with sample counts."""
    return {
        "__kind__": INDEX_KIND, "wids_version": 1, "name": f"imagenet-{PREFIX[split]}",
        "shardlist": [{"url": e["name"], "nsamples": e["samples"], "filesize": e["bytes"]}
                      for e in entries],
    }


def index_text(split: str, entries: list[dict]) -> str:
    return json.dumps(index_doc(split, entries), indent=1, sort_keys=True) + "\n"


def write_wds(
    out: Path, *, dataset: Path | None = None, archives: Path | None = None,
    from_folders: bool = False, shard_size: int | None = None, shard_samples: int | None = None,
    seed: int = 0, workers: int | None = None, on_bad_image: str = "fail",
    splits: tuple[str, ...] = DEFAULT_SPLITS, labels: str = "auto",
) -> dict[str, Any]:
    """Write the missing shards into `out` and each split's index; returns the run report.

    `dataset` holds the box CSV (made from its bbox_train/ or the box archive when
    missing) and, with `from_folders`, the images (train/WNID/, val/WNID/, test/);
    without it, `out` plays that part.  The state and report live in out/.imagenet-prep.
    """
    out = Path(out)
    if on_bad_image not in ON_BAD:
        raise PrepError(f"on_bad_image must be one of {', '.join(ON_BAD)}, not {on_bad_image!r}")
    if shard_size is not None and shard_samples is not None:
        raise PrepError("give --shard-size or --shard-samples, not both")
    if shard_samples is None and shard_size is None:
        shard_size = DEFAULT_SHARD_SIZE
    if (shard_samples is not None and shard_samples < 1) or (
            shard_size is not None and shard_size < 1):
        raise PrepError("the shard size and the samples per shard must be at least 1")
    if from_folders and dataset is None:
        raise PrepError("wds --from-folders needs the dataset folder that holds train/ and val/")
    if not from_folders and archives is None:
        raise PrepError("wds needs --archives DIR, or --from-folders DATASET")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise PrepError(f"unknown split {unknown[0]!r}; choose from {', '.join(SPLITS)}")
    dataset = Path(dataset) if dataset is not None else out
    t0 = time.monotonic()
    ensure_dir(out)
    cats: dict[str, Catalog] = {}
    for split in ("val", "train", "test"):
        if split in splits:
            cat = split_catalog(split, dataset, archives, from_folders, labels)
            if cat is not None:
                cats[split] = cat
    if not cats:
        where = ", ".join(str(dataset / s) for s in splits) if from_folders else \
            f"the {', '.join(splits)} archives in {archives}"
        raise PrepError(f"nothing to convert: none of {where} exists")
    by_name, boxes_sha = ({}, None)
    if "train" in cats:
        by_name, boxes_sha = load_boxes(ensure_csv(dataset, archives, workers, STATE))
    plans: dict[str, tuple[np.ndarray, list[tuple[int, int]]]] = {}
    for split, cat in cats.items():
        order = shuffle_order(cat.names, seed)
        plans[split] = (order, plan_bounds(cat, order, shard_size, shard_samples))
    split_info = {s: {"images": len(c), "digest": catalog_digest(c, sizes=True),
                      "boxes_sha256": boxes_sha if s == "train" else None,
                      "shards": len(plans[s][1])}
                  for s, c in cats.items()}
    options = _options(shard_size, shard_samples, seed)
    state = check_state(
        stage_state.load(out, STATE), options, split_info, stage=STATE,
        what=f"{out}: the WebDataset shards", folders=dict.fromkeys(SPLITS, out),
        is_ours=is_ours, start_over=f"to start over, delete {out}")
    stage_state.save(out, STATE, state)  # before any shard exists: a rerun can always compare
    remove_stale_tmp(out)
    boxes_of = {"train": box_arrays(cats["train"], by_name, np.float64)} if "train" in cats \
        else {}
    by_name.clear()

    def make_task(split: str, k: int) -> ShardTask:
        """Built lazily, a pool window at a time: only a few shards' catalogs exist at once."""
        order, bounds = plans[split]
        idx = order[bounds[k][0]:bounds[k][1]]
        counts = boxes = None
        if split in boxes_of:
            counts, boxes = shard_boxes(boxes_of[split], idx)
        name = shard_name(split, k)
        return ShardTask(split=split, name=name, path=out / name, catalog=cats[split].subset(idx),
                         box_counts=counts, boxes=boxes, on_bad_image=on_bad_image)

    todo: list[tuple[str, int]] = []
    for split in cats:
        for k in range(len(plans[split][1])):
            name = shard_name(split, k)
            entry = state["shards"].get(name)
            if not finished(out / name, split, entry) or (
                    on_bad_image == "fail" and entry and entry["skipped"]):
                todo.append((split, k))

    t_write = time.monotonic()
    run = write_shards(
        write_shard, (make_task(s, k) for s, k in todo),
        images=sum(b - a for s, k in todo for a, b in [plans[s][1][k]]), workers=workers,
        state=state, state_dir=out, state_name=STATE, count_key="samples", desc="wds")
    for split in cats:
        text = index_text(split, _entries(state, split))
        path = out / index_name(split)
        if not path.is_file() or path.read_text() != text:
            write_atomic(path, text)
    report = _report(out, state, cats, timed_run(run, len(todo), t0, t_write), from_folders)
    stage_state.save(out, REPORT, report)
    return report


def _entries(state: dict, split: str) -> list[dict]:
    """The state entries of a split's planned shards, in shard order."""
    n = state["splits"][split]["shards"]
    return [state["shards"][shard_name(split, k)] for k in range(n)]


def _report(out: Path, state: dict, cats: dict[str, Catalog], run: dict[str, Any],
            from_folders: bool) -> dict[str, Any]:
    """Per split totals from the state (this run's shards and earlier ones), conversions,
    left-out images, and this run's figures."""
    entries_of = {split: _entries(state, split) for split in cats}
    splits = {
        split: {
            "folder": str(out), "index": str(out / index_name(split)), "shards": len(entries),
            "samples": sum(e["samples"] for e in entries),
            "bytes": sum(e["bytes"] for e in entries), "images": len(cats[split]),
        } for split, entries in entries_of.items()
    }
    converted, skipped = shard_notes(entries_of)
    return {
        "folder": str(out), "source": "folders" if from_folders else "archives",
        "options": state["options"], "splits": splits, "converted": converted,
        "skipped": skipped, "run": run,
    }
