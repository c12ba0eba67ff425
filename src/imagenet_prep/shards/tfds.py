"""`tfds`: a TensorFlow Datasets data directory of `imagenet2012`, as a shard format.

DATASET/tfds/imagenet2012/5.1.0/ holds the shards (`imagenet2012-train.tfrecord-00000-
of-01024` ...) and, once every shard of a split is in place, TFDS's metadata files, so
`tfds.load('imagenet2012', data_dir=DATASET/tfds)` reads it as if TFDS had prepared it.
The record order, shard count and cut are TFDS's (formats/tfds.py); the engine does
the rest (resume, Dask, conversion of CMYK/PNG by content, the state in
DATASET/.imagenet-prep/tfds.json with every shard's size and CRC32C).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_prep import layout
from imagenet_prep.errors import OptionError, PrepError
from imagenet_prep.formats import tfds
from imagenet_prep.formats import tfrecord as tfr
from imagenet_prep.formats.resize import ResizeSpec
from imagenet_prep.runtime import stage_state, variant
from imagenet_prep.runtime.files import write_if_changed
from imagenet_prep.runtime.pool import Workers
from imagenet_prep.runtime.storage import as_path
from imagenet_prep.shards import engine
from imagenet_prep.shards.order import Bounds
from imagenet_prep.shards.planned_sizes import planned_sizes
from imagenet_prep.sources.archives import TEST, TRAIN, VAL
from imagenet_prep.sources.catalog import Catalog
from imagenet_prep.sources.subset import Subset

SPLITS = tfds.SPLITS
DEFAULT_SPLITS = ("train", "val")
_METADATA = (tfds.INFO_FILE, tfds.FEATURES_FILE, tfds.LABELS_FILE)


class _Examples(engine.ShardEncoder):
    """A shard's records; the serialized Example bytes are summed for `numBytes`."""

    def __init__(self, cat: Catalog) -> None:
        self.names, self.labels = cat.names, cat.labels.tolist()
        self.example_bytes = 0

    def sample(self, i: int, image: bytes, width: int, height: int, boxes: np.ndarray
               ) -> list[bytes]:
        parts = tfds.example_parts(image, self.names[i], self.labels[i])
        self.example_bytes += sum(map(len, parts))
        return tfr.frame_parts(parts)

    def written(self) -> dict[str, Any]:
        return {"example_bytes": self.example_bytes}


@dataclass(frozen=True)
class TfdsFormat(engine.ShardFormat, record=layout.TFDS_RECORD, report=layout.TFDS_REPORT,
                 unit="records", title="TFDS shards", splits=SPLITS, sized=True,
                 needs_boxes=False):
    """Every split's shards and the metadata in one folder, DATASET/tfds/imagenet2012/5.1.0."""

    root: Path
    options: dict[str, Any]  # the builder's version: what fixes order, cut and records

    def folder(self, split: str) -> Path:
        return self.root / layout.TFDS_DATA

    def shard_name(self, split: str, k: int, shards: int) -> str:
        return tfds.shard_name(split, k, shards)

    def is_ours(self, name: str) -> bool:
        return bool(layout.TFDS_SHARD_RE.fullmatch(name)) or name in _METADATA

    def is_shard(self, split: str, name: str) -> bool:
        return bool(layout.TFDS_SHARD_RE.fullmatch(name))

    def order(self, split: str, cat: Catalog) -> np.ndarray:
        return tfds.record_order(cat.names, split)

    def bounds(self, split: str, cat: Catalog, order: np.ndarray) -> Bounds:
        """TFDS's count and cut, from the Examples' sizes (exact unless an image is converted
        to RGB JPEG or resized, whose new size is not known before it is written: a
        resized variant counts its images' sizes as planned_sizes estimates them)."""
        image_sizes = planned_sizes(cat, None, self.options.get("resize"))
        sizes = tfds.example_sizes(np.char.str_len(cat.names.raw), cat.labels, image_sizes)
        ends = tfds.shard_ends(len(cat), tfds.shard_count(int(sizes.sum()), len(cat)))
        return list(zip([0, *ends[:-1]], ends, strict=True))

    def encoder(self, task: engine.ShardTask) -> engine.ShardEncoder:
        return _Examples(task.catalog)

    def finish_split(self, split: str, entries: list[dict]) -> None:
        """Nothing per split: the metadata covers every split (write_metadata)."""

    def sources(self, dataset: Path, archives: Path | None, from_folders: bool,
                splits: tuple[str, ...]) -> str:
        if from_folders:
            return ", ".join(str(dataset / s) for s in splits)
        names = {"train": TRAIN, "val": VAL, "test": TEST}
        return ", ".join(f"{archives}/{names[s]}" for s in splits)

    def describe(self, split: str | None = None) -> dict[str, Any]:
        return {"folder": str(self.folder(split or "train"))}


def write_metadata(dataset: Path) -> None:
    """dataset_info.json, features.json and label.labels.txt, from the state (rewritten only
    when they differ)."""
    state = stage_state.load(dataset, layout.TFDS_RECORD) or {}
    folder = dataset / layout.TFDS_DATA
    for name, text in tfds.metadata_files(state).items():
        path = folder / name
        write_if_changed(path, text)


def write_tfds(
    dataset: Path, *, archives: Path | None = None, from_folders: bool = False,
    workers: Workers = None, on_bad_image: str = "fail",
    splits: tuple[str, ...] = DEFAULT_SPLITS, labels: str = "auto", subset: Subset | None = None,
    resize: ResizeSpec | None = None,
) -> dict[str, Any]:
    """Write the missing shards of DATASET/tfds, then its metadata; returns the run report.
    A subset keeps TFDS's labels 0..999 (its ClassLabel names the 1000 classes).  With
    `resize`, `dataset` is the variant's folder (runtime/variant.py)."""
    policy = engine.bad_image_policy(on_bad_image)
    if not from_folders and archives is None:
        raise PrepError("tfds needs --archives DIR, or --from-folders to read DATASET/train, "
                        "DATASET/val (and DATASET/test)")
    dataset = as_path(dataset)
    if resize is not None and (from_folders or resize.image_format != "jpeg"):
        raise OptionError("tfds --resize reads the archives (not --from-folders) and stores "
                          "JPEG, the encoding of TFDS's image feature (not --image-format webp)")
    variant.claim(dataset, resize)
    options: dict[str, Any] = {"version": tfds.VERSION}
    if resize is not None:
        options["resize"] = resize.text
    report = engine.write_shards(
        TfdsFormat(dataset, options), dataset=dataset, archives=archives,
        from_folders=from_folders, labels=labels, splits=splits, workers=workers,
        policy=policy, boxes_csv=None, subset=subset)
    write_metadata(dataset)
    return variant.with_summary(report, dataset, archives, resize)
