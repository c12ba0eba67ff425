"""`wds`: WebDataset tar shards for streaming PyTorch training, as a shard format.

Each split's seeded order (the TFRecords' order) is cut by sample count or by
estimated size (input bytes plus tar overhead, known before anything is written).
A sample is three tar members sharing a key (the file name without its
extension): `KEY.cls` (label 0..999 as text), `KEY.jpg` (the bytes a TFRecord
stores) and `KEY.json` (WNID, file name, size, boxes, label); test samples have no
label: no `.cls`, and `wnid`/`label` are null.  Tar headers are fixed, so the bytes
depend only on the inputs and options.  The state record OUT/.imagenet-prep/wds.json
keeps each finished shard's CRC32C, so `check` can prove every byte; OUT/train.json
(validation.json, test.json) is the index that `wids.ShardListDataset` reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_prep import layout
from imagenet_prep.errors import OptionError, PrepError
from imagenet_prep.formats.resize import ResizeSpec, from_text
from imagenet_prep.formats.webdataset import (
    BLOCK,
    end_of_archive,
    member_parts,
    sample_keys,
    wids_index,
)
from imagenet_prep.runtime import variant
from imagenet_prep.runtime.files import write_if_changed
from imagenet_prep.runtime.pool import Workers
from imagenet_prep.runtime.storage import as_path
from imagenet_prep.shards import cards, engine
from imagenet_prep.shards.order import Bounds, count_bounds, size_bounds
from imagenet_prep.shards.planned_sizes import planned_sizes
from imagenet_prep.shards.timm_info import write_timm_info
from imagenet_prep.sources import metadata
from imagenet_prep.sources.catalog import Catalog
from imagenet_prep.sources.subset import Subset

SPLITS = tuple(layout.WDS_PREFIX)
DEFAULT_SPLITS = ("train", "val")
DEFAULT_SHARD_SIZE = 10**9
SAMPLE_OVERHEAD = 5 * BLOCK  # three headers, one block of .cls and one of .json
_INDEX_NAMES = frozenset(layout.wds_index_name(s) for s in SPLITS)


def sample_json(name: str, label: int, width: int, height: int, boxes: np.ndarray,
                index: int | None = None) -> bytes:
    """The sample's metadata: sorted keys, no spaces, so the bytes are fixed.  `label` is
    the dataset's label; `index`, given for a subset's relabelled sample, is the class's
    0..999, kept alongside as `imagenet_label`."""
    wnid = metadata.wnids()[label if index is None else index] if label >= 0 else None
    meta = {"boxes": boxes.tolist(), "filename": name, "height": height,
            "label": label if label >= 0 else None, "width": width, "wnid": wnid}
    if index is not None:
        meta["imagenet_label"] = index
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


class _Samples(engine.ShardEncoder):
    """A shard's samples as tar members (KEY.cls when labelled, KEY.jpg, KEY.json: the order
    webdataset's writer uses)."""

    def __init__(self, task: engine.ShardTask) -> None:
        cat = task.catalog
        self.keys = sample_keys(cat.names, partial(engine.image_where, cat), task.name)
        self.names, self.labels = cat.names, cat.out_labels().tolist()
        self.index = None if cat.label_map is None else cat.labels.tolist()
        spec = from_text(task.format.options.get("resize"))  # a resized variant: .jpg or .webp
        self.ext = "jpg" if spec is None else spec.extension

    def sample(self, i: int, image: bytes, width: int, height: int, boxes: np.ndarray
               ) -> list[bytes]:
        key, name, label = self.keys[i], self.names[i], self.labels[i]
        index = None if self.index is None else self.index[i]
        meta = sample_json(name, label, width, height, boxes, index)
        parts = member_parts(f"{key}.cls", str(label).encode()) if label >= 0 else []
        return parts + member_parts(f"{key}.{self.ext}", image) + member_parts(f"{key}.json", meta)

    def end(self, offset: int) -> list[bytes]:
        return [end_of_archive(offset)]


@dataclass(frozen=True)
class WdsFormat(engine.ShardFormat, record=layout.WDS_RECORD, report=layout.WDS_REPORT,
                unit="samples", title="WebDataset shards", splits=SPLITS, box_dtype=np.float64,
                sized=True):
    """OUT/train-NNNNNN.tar, ... and one wids index per split, all in one folder."""

    root: Path
    options: dict[str, Any]  # seed, shard_samples or shard_size, resize (a variant)

    def folder(self, split: str) -> Path:
        return self.root

    def shard_name(self, split: str, k: int, shards: int) -> str:
        return layout.wds_shard_name(split, k)

    def is_ours(self, name: str) -> bool:
        return bool(layout.WDS_SHARD_RE.fullmatch(name)) or name in _INDEX_NAMES

    def is_shard(self, split: str, name: str) -> bool:
        return bool(layout.WDS_SHARD_RE.fullmatch(name))

    def bounds(self, split: str, cat: Catalog, order: np.ndarray) -> Bounds:
        if "shard_samples" in self.options:
            bounds = count_bounds(len(cat), self.options["shard_samples"])
        else:
            sizes = planned_sizes(cat, order, self.options.get("resize"))
            bounds = size_bounds((sizes + (-sizes % BLOCK)) + SAMPLE_OVERHEAD,
                                 self.options["shard_size"])
        if len(bounds) > layout.WDS_MAX_SHARDS:  # names hold six digits
            raise OptionError(f"{split}: {len(bounds):,} shards, more than the "
                              f"{layout.WDS_MAX_SHARDS:,} six-digit names hold; choose larger "
                              "shards (--shard-size or --shard-samples)")
        return bounds

    def encoder(self, task: engine.ShardTask) -> engine.ShardEncoder:
        return _Samples(task)

    def finish_split(self, split: str, entries: list[dict]) -> None:
        """The split's wids index: shard URLs relative to it, with sample counts."""
        text = wids_index(f"imagenet-{layout.WDS_PREFIX[split]}",
                          [(e["name"], e["samples"], e["bytes"]) for e in entries])
        path = self.root / layout.wds_index_name(split)
        write_if_changed(path, text)
        write_timm_info(self.root)  # timm's split table, from the indexes

    def sources(self, dataset: Path, archives: Path | None, from_folders: bool,
                splits: tuple[str, ...]) -> str:
        return ", ".join(str(dataset / s) for s in splits) if from_folders else \
            f"the {', '.join(splits)} archives in {archives}"

    def describe(self, split: str | None = None) -> dict[str, Any]:
        index = {"index": str(self.root / layout.wds_index_name(split))} if split else {}
        return {**super().describe(split), **index}


def write_wds(
    out: Path, *, dataset: Path | None = None, archives: Path | None = None,
    from_folders: bool = False, shard_size: int | None = None, shard_samples: int | None = None,
    seed: int = 0, workers: Workers = None, on_bad_image: str = "fail",
    splits: tuple[str, ...] = DEFAULT_SPLITS, labels: str = "auto", boxes_csv: engine.BoxSource,
    subset: Subset | None = None, resize: ResizeSpec | None = None,
) -> dict[str, Any]:
    """Write the missing shards into `out` and each split's index; returns the run report.

    With `from_folders`, `dataset` holds the images (train/WNID/, val/WNID/, test/);
    `boxes_csv` is the box CSV the train samples take their boxes from (None: none).
    The state and report live in out/.imagenet-prep.  With `resize`, samples store resized
    images (formats/resize.py) and `dataset` is the variant's folder (or None: `out`).
    """
    policy = engine.bad_image_policy(on_bad_image)
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
    out = as_path(out)
    if resize is not None and from_folders:
        raise OptionError("--resize reads the archives: give --archives, not --from-folders")
    for folder in dict.fromkeys((out, *((as_path(dataset),) if dataset is not None else ()))):
        variant.claim(folder, resize)
    cut: dict[str, Any] = {"shard_samples": shard_samples} if shard_samples is not None else \
        {"shard_size": shard_size}
    report = engine.write_shards(
        WdsFormat(out, {"seed": seed, **cut, **({"resize": resize.text} if resize else {})}),
        dataset=out if dataset is None else as_path(dataset),
        archives=archives, from_folders=from_folders, labels=labels, splits=splits,
        workers=workers, policy=policy, boxes_csv=boxes_csv, subset=subset)
    cards.write_wds_card(out)  # so Hugging Face `datasets` reads the folder without guessing
    return variant.with_summary(report, out, archives, resize)
