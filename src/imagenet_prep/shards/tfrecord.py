"""`tfrecord`: the reference's TFRecord shards, straight from the archives or from folders.

The catalog of each split (sorted) is permuted by a seeded hash of each file name
(platform-independent, like TFDS's ordering) and cut into shards whose sizes
differ by at most one.  One pool task per shard, a pure function of its images,
their boxes and its output name, so the bytes do not depend on `--workers` or on
the route (archives or folders give the same catalog).  A shard is written under
a temporary name and renamed; the state record `.imagenet-prep/tfrecord.json`
holds the options and what each finished shard contains, so a rerun writes only
the missing shards and refuses other options.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_prep.errors import BadImageError, PrepError
from imagenet_prep.folders.bbox_csv import ensure_csv
from imagenet_prep.formats.images import jpeg_for_record
from imagenet_prep.formats.tfrecord import (
    bytes_feature,
    bytes_feature_parts,
    encode_example_parts,
    float_feature,
    frame_parts,
    idx_text,
    int64_feature,
    record_spans,
)
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.files import atomic_file, ensure_dir, is_tmp_name, write_atomic
from imagenet_prep.shards.plan import (
    NO_BOXES,
    box_arrays,
    catalog_digest,
    check_state,
    finished,
    image_where,
    load_boxes,
    remove_stale_tmp,
    shard_bounds,
    shard_boxes,
    shuffle_order,
    split_catalog,
    write_parts,
)
from imagenet_prep.shards.run import shard_notes, timed_run, write_shards
from imagenet_prep.sources import metadata
from imagenet_prep.sources.archives import TRAIN, VAL
from imagenet_prep.sources.catalog import Catalog

STATE = "tfrecord"
REPORT = "tfrecord-report"
SPLITS = ("train", "val")
ON_BAD = ("fail", "skip")


@dataclass(frozen=True)
class Layout:
    """Where a split's shards and DALI indexes go, and their name prefix."""

    folder: str
    prefix: str
    idx_folder: str


LAYOUT = {
    "train": Layout("tfrecord_train", "train", "tfrecord_train_idx"),
    "val": Layout("tfrecord_val", "validation", "tfrecord_val_idx"),
}
IDX_SUFFIX = ".idx"


def shard_name(split: str, k: int, shards: int) -> str:
    """`train-00000-of-01024`, `validation-00127-of-00128` (the reference's `%s-%.5d-of-%.5d`)."""
    return f"{LAYOUT[split].prefix}-{k:05d}-of-{shards:05d}"


# --- one shard (runs in a worker) -----------------------------------------------------

@dataclass(frozen=True)
class ShardTask:
    """Everything one shard needs: its images in record order and their boxes."""

    split: str
    name: str
    path: Path
    idx_path: Path | None
    catalog: Catalog
    box_counts: np.ndarray | None  # boxes per record (train), None for val
    boxes: np.ndarray | None  # (sum of box_counts, 4) float32, in record order
    on_bad_image: str


_STATIC = {
    "image/colorspace": bytes_feature([b"RGB"]),
    "image/channels": int64_feature([3]),
    "image/format": bytes_feature([b"JPEG"]),
}
_EMPTY_BOXES = {
    **{f"image/object/bbox/{k}": float_feature([]) for k in ("xmin", "ymin", "xmax", "ymax")},
    "image/object/bbox/label": int64_feature([]),
}


@cache
def _class_features(label: int) -> dict[str, bytes]:
    """Label, synset and text features of a class (1..1000), encoded once per process."""
    wnid = metadata.wnids()[label - 1]
    return {
        "image/class/label": int64_feature([label]),
        "image/class/synset": bytes_feature([wnid.encode()]),
        "image/class/text": bytes_feature([metadata.imagenet_metadata()[wnid].encode()]),
    }


def example_parts(image: bytes, height: int, width: int, name: str, label: int,
                  boxes: np.ndarray) -> list[bytes]:
    """The reference's 15-key Example; `label` is 1..1000, `boxes` an (n, 4) float32 array."""
    if len(boxes):
        box_features = {
            f"image/object/bbox/{k}": float_feature(boxes[:, j].tolist())
            for j, k in enumerate(("xmin", "ymin", "xmax", "ymax"))
        }
        box_features["image/object/bbox/label"] = int64_feature([label] * len(boxes))
    else:
        box_features = _EMPTY_BOXES
    return encode_example_parts({
        **_STATIC, **_class_features(label), **box_features,
        "image/encoded": bytes_feature_parts(image),
        "image/height": int64_feature([height]),
        "image/width": int64_feature([width]),
        "image/filename": bytes_feature([name.encode()]),
    })


_NO_BOXES = NO_BOXES


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Write one shard (and its DALI index); returns what it holds."""
    cat = task.catalog
    starts = None if task.box_counts is None else np.concatenate(
        ([0], np.cumsum(task.box_counts)))
    converted: list[list[str]] = []
    skipped: list[list[str]] = []
    spans: list[tuple[int, int]] = []
    offset = 0
    # fsync before the rename: once the state lists a shard, its bytes are on disk
    with cat.open() as src, atomic_file(task.path, fsync=True) as f:
        fd = f.fileno()  # records go straight to the file with writev, never via f's buffer
        for i in range(len(cat)):
            data = src.read(i)
            try:
                image, width, height, reason = jpeg_for_record(data, image_where(cat, i))
            except BadImageError as e:
                if task.on_bad_image == "fail":
                    raise
                skipped.append([cat.names[i], str(e)])
                continue
            if reason is not None:
                converted.append([cat.names[i], reason])
            boxes = _NO_BOXES if starts is None or task.boxes is None else \
                task.boxes[starts[i]:starts[i + 1]]
            parts = example_parts(image, height, width, cat.names[i], int(cat.labels[i]) + 1,
                                  boxes)
            # ~45 small pieces around the image: joined, they cost 3 CRC calls and iovecs
            k = next(j for j, p in enumerate(parts) if p is image)
            parts = frame_parts([b"".join(parts[:k]), image, b"".join(parts[k + 1:])])
            size = sum(map(len, parts))
            write_parts(fd, parts, size)
            spans.append((offset, size))
            offset += size
    if task.idx_path is not None:
        write_atomic(task.idx_path, idx_text(spans), fsync=False)
    return {
        "split": task.split, "name": task.name, "records": len(spans), "bytes": offset,
        "input_bytes": cat.total_bytes(), "converted": converted, "skipped": skipped,
    }


# --- planning (main process) ----------------------------------------------------------

def _options(train_shards: int, val_shards: int, seed: int) -> dict:
    """What fixes the bytes of every shard.  `on_bad_image` is not among them: a shard
    finished without skipping is the same under both choices, and one that skipped
    images is redone under `fail` (which then stops on the bad image)."""
    return {"train_shards": train_shards, "val_shards": val_shards, "seed": seed}


def _start_over(dataset: Path) -> str:
    folders = ", ".join(str(dataset / f) for lay in LAYOUT.values()
                        for f in (lay.folder, lay.idx_folder))
    return (f"to start over, delete {folders} and "
            f"{stage_state.record_path(dataset, STATE)}")


def write_tfrecords(
    dataset: Path, *, archives: Path | None = None, from_folders: bool = False,
    train_shards: int = 1024, val_shards: int = 128, seed: int = 0, workers: int | None = None,
    dali_index: bool = False, on_bad_image: str = "fail", splits: tuple[str, ...] = SPLITS,
    labels: str = "auto",
) -> dict[str, Any]:
    """Write the shards that are missing; returns the run report (also saved as JSON)."""
    dataset = Path(dataset)
    if on_bad_image not in ON_BAD:
        raise PrepError(f"on_bad_image must be one of {', '.join(ON_BAD)}, not {on_bad_image!r}")
    if train_shards < 1 or val_shards < 1:
        raise PrepError("shard counts must be at least 1")
    if not from_folders and archives is None:
        raise PrepError("tfrecord needs --archives DIR, or --from-folders to read DATASET/train "
                        "and DATASET/val")
    unknown = [s for s in splits if s not in LAYOUT]
    if unknown:
        raise PrepError(f"unknown split {unknown[0]!r}; choose from {', '.join(LAYOUT)}")
    t0 = time.monotonic()
    ensure_dir(dataset)
    shards_of = {"train": train_shards, "val": val_shards}
    cats: dict[str, Catalog] = {}
    for split in ("val", "train"):
        if split in splits:
            cat = split_catalog(split, dataset, archives, from_folders, labels)
            if cat is not None:
                cats[split] = cat
    if not cats:
        where = (f"{dataset}/train, {dataset}/val" if from_folders else
                 f"{archives}/{TRAIN}, {archives}/{VAL}")
        raise PrepError(f"nothing to convert: none of {where} exists")
    by_name, boxes_sha = ({}, None)
    if "train" in cats:
        by_name, boxes_sha = load_boxes(ensure_csv(dataset, archives, workers, STATE))
    split_info = {s: {"images": len(c), "digest": catalog_digest(c),
                      "boxes_sha256": boxes_sha if s == "train" else None}
                  for s, c in cats.items()}
    options = _options(train_shards, val_shards, seed)
    state = check_state(
        stage_state.load(dataset, STATE), options, split_info, stage=STATE,
        what=f"{dataset}: the TFRecords", start_over=_start_over(dataset),
        folders={s: dataset / LAYOUT[s].folder for s in LAYOUT},
        is_ours=lambda name: not is_tmp_name(name))
    stage_state.save(dataset, STATE, state)  # before any shard exists: a rerun can always compare

    plans: dict[str, tuple[np.ndarray, list[tuple[int, int]]]] = {}
    boxes_of: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for split, cat in cats.items():
        lay = LAYOUT[split]
        remove_stale_tmp(ensure_dir(dataset / lay.folder))
        if dali_index:
            remove_stale_tmp(ensure_dir(dataset / lay.idx_folder))
        plans[split] = (shuffle_order(cat.names, seed), shard_bounds(len(cat), shards_of[split]))
        if split == "train":
            boxes_of[split] = box_arrays(cat, by_name)
    by_name.clear()

    def make_task(split: str, k: int) -> ShardTask:
        """Built lazily, a pool window at a time: only a few shards' catalogs exist at once."""
        cat, (order, bounds), lay = cats[split], plans[split], LAYOUT[split]
        name = shard_name(split, k, shards_of[split])
        idx = order[bounds[k][0]:bounds[k][1]]
        counts = boxes = None
        if split in boxes_of:
            counts, boxes = shard_boxes(boxes_of[split], idx)
        return ShardTask(
            split=split, name=name, path=dataset / lay.folder / name,
            idx_path=dataset / lay.idx_folder / (name + IDX_SUFFIX) if dali_index else None,
            catalog=cat.subset(idx), box_counts=counts, boxes=boxes, on_bad_image=on_bad_image,
        )

    todo: list[tuple[str, int]] = []
    for split in cats:
        for k in range(shards_of[split]):
            name = shard_name(split, k, shards_of[split])
            path = dataset / LAYOUT[split].folder / name
            entry = state["shards"].get(name)
            if finished(path, split, entry) and not (
                    on_bad_image == "fail" and entry and entry["skipped"]):
                if dali_index:
                    _ensure_idx(dataset, split, name, path)
            else:
                todo.append((split, k))

    t_write = time.monotonic()
    run = write_shards(
        write_shard, (make_task(s, k) for s, k in todo),
        images=sum(b - a for s, k in todo for a, b in [plans[s][1][k]]), workers=workers,
        state=state, state_dir=dataset, state_name=STATE, count_key="records", desc="tfrecord")
    run = timed_run(run, len(todo), t0, t_write)
    report = _report(dataset, state, cats, shards_of, run, dali_index, from_folders)
    stage_state.save(dataset, REPORT, report)
    return report


def _ensure_idx(dataset: Path, split: str, name: str, shard: Path) -> None:
    """A finished shard without its index (an earlier run had no --dali-index, or was killed
    between the two renames): derive the index from the shard's record headers."""
    idx = dataset / LAYOUT[split].idx_folder / (name + IDX_SUFFIX)
    if not idx.is_file():
        write_atomic(idx, idx_text(record_spans(shard)), fsync=False)


def _report(dataset: Path, state: dict, cats: dict[str, Catalog], shards_of: dict[str, int],
            run: dict[str, Any], dali_index: bool, from_folders: bool) -> dict[str, Any]:
    """Per split totals from the state (this run's shards and earlier ones), conversions,
    left-out images, and this run's figures."""
    entries_of = {split: [state["shards"][shard_name(split, k, shards_of[split])]
                          for k in range(shards_of[split])] for split in cats}
    splits = {
        split: {
            "folder": str(dataset / LAYOUT[split].folder), "shards": shards_of[split],
            "records": sum(e["records"] for e in entries),
            "bytes": sum(e["bytes"] for e in entries),
            "images": len(cats[split]),
        } for split, entries in entries_of.items()
    }
    converted, skipped = shard_notes(entries_of)
    return {
        "dataset": str(dataset), "source": "folders" if from_folders else "archives",
        "options": state["options"], "dali_index": dali_index, "splits": splits,
        "converted": converted, "skipped": skipped, "run": run,
    }
