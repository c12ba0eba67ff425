"""`tfrecord`: the reference's TFRecord shards (and DALI indexes), as a shard format.

A split's seeded order is cut into a fixed number of shards (1024 train, 128
validation by default) whose sizes differ by at most one; a record is the reference's
15-key Example.  The engine (shards/engine.py) does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_prep import layout
from imagenet_prep.errors import OptionError, PrepError
from imagenet_prep.formats import tfrecord as tfr
from imagenet_prep.formats.resize import PIL_FORMAT, ResizeSpec, from_text
from imagenet_prep.runtime import variant
from imagenet_prep.runtime.files import write_atomic
from imagenet_prep.runtime.pool import Workers
from imagenet_prep.runtime.storage import as_path
from imagenet_prep.shards import engine
from imagenet_prep.shards.order import Bounds, shard_bounds
from imagenet_prep.sources import metadata
from imagenet_prep.sources.archives import TRAIN, VAL
from imagenet_prep.sources.catalog import Catalog
from imagenet_prep.sources.subset import Subset

SPLITS = tuple(layout.TFRECORD)
STATE, REPORT = layout.TFRECORD_RECORD, layout.TFRECORD_REPORT  # report/ imports these,
LAYOUT = layout.TFRECORD  # and this


@cache
def _before_image(label: int, index: int | None = None) -> bytes:
    """The entries whose keys sort before image/encoded, once per class: `label` is what
    image/class/label holds (1..1000, or 1..N for a subset), `index` the class's 0..999
    (label - 1 unless given)."""
    wnid = metadata.wnids()[label - 1 if index is None else index]
    return b"".join(tfr.feature_entry(k, v) for k, v in (
        ("image/channels", tfr.int64_feature([3])),
        ("image/class/label", tfr.int64_feature([label])),
        ("image/class/synset", tfr.bytes_feature([wnid.encode()])),
        ("image/class/text", tfr.bytes_feature([metadata.imagenet_metadata()[wnid].encode()])),
        ("image/colorspace", tfr.bytes_feature([b"RGB"])),
    ))


def _box_entries(label: int, boxes: np.ndarray) -> bytes:
    """image/object/bbox/{label,xmax,xmin,ymax,ymin} (key order): one value per box."""
    xmin, ymin, xmax, ymax = boxes.T.tolist()
    return b"".join((
        tfr.feature_entry("image/object/bbox/label", tfr.int64_feature([label] * len(xmin))),
        tfr.feature_entry("image/object/bbox/xmax", tfr.float_feature(xmax)),
        tfr.feature_entry("image/object/bbox/xmin", tfr.float_feature(xmin)),
        tfr.feature_entry("image/object/bbox/ymax", tfr.float_feature(ymax)),
        tfr.feature_entry("image/object/bbox/ymin", tfr.float_feature(ymin)),
    ))


_FORMAT = tfr.feature_entry("image/format", tfr.bytes_feature([b"JPEG"]))
_NO_BOXES = _box_entries(0, np.zeros((0, 4), dtype=np.float32))


def _format_entry(name: str) -> bytes:
    """image/format of a resized variant: JPEG or WEBP, what the stored bytes are."""
    return tfr.feature_entry("image/format", tfr.bytes_feature([name.encode()]))


def example_parts(image: bytes, width: int, height: int, name: str, label: int,
                  boxes: np.ndarray, index: int | None = None, image_format: bytes = _FORMAT
                  ) -> list[bytes]:
    """The reference's 15-key Example (label 1..1000, boxes an (n, 4) float32 array) as its
    bytes before the image, the image, the rest.  The entries are laid out here in key
    order, as encode_example sorts them (the tests compare the two), since building and
    sorting a dict per record cost half of the record's time."""
    feature_head, _ = tfr.bytes_feature_parts(image)
    head = b"".join((_before_image(label, index),
                     tfr.entry_head("image/encoded", len(feature_head) + len(image)), feature_head))
    tail = b"".join((
        tfr.feature_entry("image/filename", tfr.bytes_feature([name.encode()])), image_format,
        tfr.feature_entry("image/height", tfr.int64_feature([height])),
        _box_entries(label, boxes) if len(boxes) else _NO_BOXES,
        tfr.feature_entry("image/width", tfr.int64_feature([width])),
    ))
    return [tfr.example_head(len(head) + len(image) + len(tail)) + head, image, tail]


class _Records(engine.ShardEncoder):
    """A shard's records; with `idx`, the DALI index is written beside it afterwards."""

    def __init__(self, cat: Catalog, idx: Path | bool, image_format: bytes = _FORMAT) -> None:
        self.names, self.labels, self.idx = cat.names, cat.labels.tolist(), idx
        self.out = cat.out_labels().tolist()  # a subset's labels, else the same as labels
        self.sizes: list[int] = []
        self.image_format = image_format

    def sample(self, i: int, image: bytes, width: int, height: int, boxes: np.ndarray
               ) -> list[bytes]:
        label, index = self.out[i] + 1, self.labels[i]
        parts = example_parts(image, width, height, self.names[i], label, boxes,
                              None if label == index + 1 else index, self.image_format)
        self.sizes.append(16 + sum(map(len, parts)))
        return tfr.frame_parts(parts)

    def written(self) -> dict[str, Any]:
        if self.idx:
            # an empty shard (fewer images than shards) has an empty index
            offsets = accumulate(self.sizes[:-1], initial=0) if self.sizes else []
            write_atomic(self.idx, tfr.idx_text(list(zip(offsets, self.sizes, strict=True))),
                         fsync=False)
        return {}


@dataclass(frozen=True)
class TFRecordFormat(engine.ShardFormat, record=STATE, report=REPORT, unit="records",
                     title="TFRecords", splits=SPLITS):
    """DATASET/tfrecord_{train,val}/ and, with `dali_index`, tfrecord_{train,val}_idx/."""

    root: Path
    options: dict[str, int]  # train_shards, val_shards, seed
    dali_index: bool

    def folder(self, split: str) -> Path:
        return self.root / LAYOUT[split].folder

    def idx_path(self, split: str, name: str) -> Path:
        return self.root / LAYOUT[split].idx_folder / (name + layout.DALI_IDX_SUFFIX)

    def folders(self, split: str) -> tuple[Path, ...]:
        idx = (self.root / LAYOUT[split].idx_folder,) if self.dali_index else ()
        return (self.folder(split), *idx)

    def shard_name(self, split: str, k: int, shards: int) -> str:
        return layout.tfrecord_shard_name(split, k, shards)

    def is_shard(self, split: str, name: str) -> bool:
        return bool(layout.tfrecord_shard_pattern(split).fullmatch(name))

    def bounds(self, split: str, cat: Catalog, order: np.ndarray) -> Bounds:
        return shard_bounds(len(cat), self.options[f"{split}_shards"])

    def encoder(self, task: engine.ShardTask) -> engine.ShardEncoder:
        spec = from_text(self.options.get("resize"))  # a resized variant (formats/resize.py)
        fmt = _FORMAT if spec is None else _format_entry(PIL_FORMAT[spec.image_format])
        return _Records(task.catalog, self.dali_index and self.idx_path(task.split, task.name),
                        fmt)

    def finish_split(self, split: str, entries: list[dict]) -> None:
        """A finished shard without its index (an earlier run had no --dali-index, or was
        killed between the two renames): derive the index from the record headers."""
        for e in entries if self.dali_index else ():
            idx = self.idx_path(split, e["name"])
            if not idx.is_file():
                spans = tfr.record_spans(self.folder(split) / e["name"])
                write_atomic(idx, tfr.idx_text(spans), fsync=False)

    def sources(self, dataset: Path, archives: Path | None, from_folders: bool,
                splits: tuple[str, ...]) -> str:
        return f"{dataset}/train, {dataset}/val" if from_folders else \
            f"{archives}/{TRAIN}, {archives}/{VAL}"

    def asked(self) -> dict[str, Any]:
        return {**self.options, "dali_index": self.dali_index}

    def describe(self, split: str | None = None) -> dict[str, Any]:
        return super().describe(split) if split else \
            {"dataset": str(self.root), "dali_index": self.dali_index}


def write_tfrecords(
    dataset: Path, *, archives: Path | None = None, from_folders: bool = False,
    train_shards: int = 1024, val_shards: int = 128, seed: int = 0, workers: Workers = None,
    dali_index: bool = False, on_bad_image: str = "fail", splits: tuple[str, ...] = SPLITS,
    labels: str = "auto", boxes_csv: engine.BoxSource, subset: Subset | None = None,
    resize: ResizeSpec | None = None,
) -> dict[str, Any]:
    """Write the shards that are missing; returns the run report (also saved as JSON).
    Train records take their boxes from `boxes_csv` (None: no boxes); `subset` (None: the
    dataset's recorded one, else all) restricts the images and sets the labels.  With
    `resize`, `dataset` is the variant's folder (runtime/variant.py) and records store
    resized images."""
    policy = engine.bad_image_policy(on_bad_image)
    if train_shards < 1 or val_shards < 1:
        raise PrepError("shard counts must be at least 1")
    for option, n in (("--train-shards", train_shards), ("--val-shards", val_shards)):
        if n > layout.TFRECORD_MAX_SHARDS:  # the reference's names hold five digits
            raise OptionError(f"{option} {n}: at most {layout.TFRECORD_MAX_SHARDS:,}, the "
                              "most shard names of five digits (train-NNNNN-of-NNNNN) can hold")
    if not from_folders and archives is None:
        raise PrepError("tfrecord needs --archives DIR, or --from-folders to read DATASET/train "
                        "and DATASET/val")
    dataset = as_path(dataset)
    options: dict[str, Any] = {"train_shards": train_shards, "val_shards": val_shards,
                               "seed": seed}
    if resize is not None and from_folders:
        raise OptionError("--resize reads the archives: give --archives, not --from-folders")
    variant.claim(dataset, resize)
    if resize is not None:
        options["resize"] = resize.text
    report = engine.write_shards(
        TFRecordFormat(dataset, options, dali_index), dataset=dataset, archives=archives,
        from_folders=from_folders, labels=labels, splits=splits, workers=workers, policy=policy,
        boxes_csv=boxes_csv, subset=subset)
    return variant.with_summary(report, dataset, archives, resize)
