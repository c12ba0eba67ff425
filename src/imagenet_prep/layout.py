"""Every name imagenet-prep gives to something on disk, declared once.

The stages that write a dataset, `check` that proves it and `report` that shows it
all import their folder, file, state-record and shard names from here, so none of
them needs to import another's writer to know where things are.  The names are
the classic recipe's contract (docs/layout.md); changing one changes the product.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# --- the dataset folder ------------------------------------------------------------------

STATE_DIR = ".imagenet-prep"  # state records, reports and the lock live here
LOCK_NAME = "lock"  # STATE_DIR/lock: flock'ed on disk, a renewed object in a bucket
TMP_SUFFIX = ".ipart"  # a file being written is `.NAME.ipart` in its final folder
EXTRACT_SPLITS = ("train", "val", "test", "bbox_train", "bbox_val")  # DATASET/<split>/
FLAT_DIR = {"train": "train_flatten", "val": "val_flatten"}
SYNSETS_TXT = "synsets.txt"
VAL_BOX_DIR = "bbox_val/val"  # the validation box XMLs as extracted (the archive's val/)
BOX_CSV = "imagenet_2012_bounding_boxes.csv"
REPORT_HTML = "report.html"
WDS_DIR = "wds"  # DATASET/wds: the WebDataset shards that `prepare --wds` writes


def flat_name(split: str, wnid: str, name: str) -> str:
    """A file's name in FLAT_DIR[split]: train keeps the name, val gets the class as a prefix."""
    return name if split == "train" else f"{wnid}_{name}"


def tree_path(split: str, flat: str) -> str:
    """The class-tree path (`WNID/NAME`, relative to the split) a flat name stands for."""
    wnid, _, rest = flat.partition("_")
    return f"{wnid}/{flat if split == 'train' else rest}"


# --- state records (DATASET/.imagenet-prep/NAME.json) --------------------------------------


def extract_record(split: str) -> str:
    """`extract-train`, `extract-val`, ...: what extraction wrote of one split."""
    return f"extract-{split}"


VALTREE_RECORD = "valtree"
VALTREE_CLASSES = "valtree-classes.tsv"  # STATE_DIR/: NAME<TAB>WNID of every image valtree grouped
BBOX_RECORD = "bbox"
SYNSETS_RECORD = "synsets"
FLATTEN_RECORD = "flatten"
EXPECT_RECORD = "expect"  # what the dataset was asked to contain, written before any work
DAMAGED_RECORD = "damaged"  # files the last `check` found damaged, for the next run to redo
FILES_DIR = "files"  # per-task manifests of extracted files: STATE_DIR/files/SPLIT/KEY.tsv
PREPARE_RECORD = "prepare"  # stage timings of the last `prepare` runs


def class_tree_record(split: str) -> str:
    """The record holding the per-class counts of DATASET/<split>/WNID/ (train or val):
    extraction's for train, valtree's for val (extraction leaves val/ flat)."""
    return VALTREE_RECORD if split == "val" else extract_record(split)


# --- shard outputs -----------------------------------------------------------------------

@dataclass(frozen=True)
class TFRecordSplit:
    """Where a split's TFRecord shards and DALI indexes go, and the shards' name prefix."""

    folder: str
    prefix: str
    idx_folder: str


TFRECORD = {
    "train": TFRecordSplit("tfrecord_train", "train", "tfrecord_train_idx"),
    "val": TFRecordSplit("tfrecord_val", "validation", "tfrecord_val_idx"),
}
TFRECORD_RECORD = "tfrecord"
TFRECORD_REPORT = "tfrecord-report"
DALI_IDX_SUFFIX = ".idx"
TFRECORD_MAX_SHARDS = 99_999  # the reference's `%.5d` names hold five digits


def tfrecord_shard_name(split: str, k: int, shards: int) -> str:
    """`train-00000-of-01024`, `validation-00127-of-00128` (the reference's `%s-%.5d-of-%.5d`)."""
    return f"{TFRECORD[split].prefix}-{k:05d}-of-{shards:05d}"


def tfrecord_shard_pattern(split: str) -> re.Pattern[str]:
    """Matches a split's shard names; groups: shard number, total."""
    return re.compile(rf"{TFRECORD[split].prefix}-(\d{{5}})-of-(\d{{5}})")


WDS_PREFIX = {"train": "train", "val": "validation", "test": "test"}
WDS_RECORD = "wds"
WDS_REPORT = "wds-report"
WDS_SHARD_RE = re.compile(r"(train|validation|test)-(\d{6})\.tar")
WDS_MAX_SHARDS = 1_000_000  # six digits


def wds_shard_name(split: str, k: int) -> str:
    """`train-000000.tar`: the brace pattern train-{000000..000146}.tar names them all."""
    return f"{WDS_PREFIX[split]}-{k:06d}.tar"


def wds_index_name(split: str) -> str:
    """The wids shard index of a split: `train.json`, `validation.json`, `test.json`."""
    return f"{WDS_PREFIX[split]}.json"


# --- Hugging Face and MosaicML outputs (issue 15) -------------------------------------------

HF_CARD = "README.md"  # a Hugging Face dataset card: DATASET/parquet/, DATASET/wds/, DATASET/
CARD_RECORD = "card"  # the root card: its SHA-256, or why it was not written
PARQUET_DIR = "parquet"  # DATASET/parquet: README.md and data/SPLIT-NNNNN-of-NNNNN.parquet
PARQUET_DATA = "data"
PARQUET_RECORD = "parquet"
PARQUET_REPORT = "parquet-report"
HF_SPLIT = {"train": "train", "val": "validation", "test": "test"}  # the Hub's split names
PARQUET_SHARD_RE = re.compile(r"(train|validation|test)-(\d{5})-of-(\d{5})\.parquet")


def parquet_shard_name(split: str, k: int, shards: int) -> str:
    """`train-00000-of-00294.parquet`: the Hub's own shard names."""
    return f"{HF_SPLIT[split]}-{k:05d}-of-{shards:05d}.parquet"


MDS_DIR = "mds"  # DATASET/mds/SPLIT/: index.json and shard.NNNNN.mds, one MosaicML dataset each
MDS_SPLIT = {"train": "train", "val": "val", "test": "test"}  # MosaicML's converter's folders
MDS_INDEX = "index.json"
MDS_RECORD = "mds"
MDS_REPORT = "mds-report"
MDS_SHARD_RE = re.compile(r"shard\.(\d{5,})\.mds")


def mds_shard_name(k: int) -> str:
    """`shard.00000.mds`: the name MosaicML's writer gives shard k."""
    return f"shard.{k:05d}.mds"


# --- subsets and label maps (docs/subsets.md) ---------------------------------------------

SUBSET_RECORD = "subset"  # which classes and training files the dataset holds
SUBSET_CLASSES = "subset-classes.txt"  # STATE_DIR/: the subset's sorted WNIDs
SUBSET_TRAIN = "subset-train.txt"  # STATE_DIR/: its sorted training file names, when listed
LABEL_FILES = ("labels.json", "labels.csv")  # DATASET/: every class with every numbering


# --- resized variants (docs/resize.md) ------------------------------------------------------

VARIANTS_DIR = "variants"  # DATASET/variants/<tag>/: a dataset of its own, same layout
VARIANT_RECORD = "variant"  # VARIANT/.imagenet-prep/variant.json: options and library versions
VARIANT_LIBRARIES = ("pillow", "libjpeg", "libjpeg_turbo", "libwebp", "simplejpeg")  # its keys


def variant_folder(tag: str) -> str:
    """`variants/short256`: where the variant `tag` (formats/resize.py) lives under DATASET."""
    return f"{VARIANTS_DIR}/{tag}"


# --- TensorFlow Datasets, torchvision, timm (issue 15) ----------------------------------

TFDS_DIR = "tfds"  # DATASET/tfds: a TFDS data_dir (`tfds.load(..., data_dir=DATASET/tfds)`)
TFDS_NAME, TFDS_VERSION = "imagenet2012", "5.1.0"  # the builder and version TFDS reads
TFDS_DATA = f"{TFDS_DIR}/{TFDS_NAME}/{TFDS_VERSION}"  # shards and metadata files, together
TFDS_SPLIT = {"train": "train", "val": "validation", "test": "test"}
TFDS_SHARD_RE = re.compile(rf"{TFDS_NAME}-(train|validation|test)\.tfrecord-(\d{{5}})-of-(\d{{5}})")
TFDS_RECORD = "tfds"
TFDS_REPORT = "tfds-report"
TORCHVISION_META = "meta.bin"  # DATASET/meta.bin: what torchvision.datasets.ImageNet loads
TORCHVISION_RECORD = "torchvision-meta"
TIMM_INFO = "_info.json"  # beside the WebDataset shards: timm's wds reader's split table
TFDS_REFERENCE = "imagenet2012_reference"  # DATASET/tfds/NAME/1.0.0: TFDS's view of TFRECORD
TFDS_REFERENCE_VERSION = "1.0.0"


# --- what a shard stage's record lists: delete both to start that stage over -------------

# Relative to the record's root (DATASET, or DATASET/wds for the WebDataset, whose state
# lives inside its folder: "." there means the folder itself).
SHARD_FOLDERS: dict[str, tuple[str, ...]] = {
    TFRECORD_RECORD: tuple(f for s in TFRECORD.values() for f in (s.folder, s.idx_folder)),
    WDS_RECORD: (".",),
    PARQUET_RECORD: (PARQUET_DIR,),
    MDS_RECORD: (MDS_DIR,),
    TFDS_RECORD: (TFDS_DATA,),
}
