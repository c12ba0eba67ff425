"""`imagenet-prep parquet`: Parquet shards in the Hugging Face Hub's imagenet-1k schema."""

from __future__ import annotations

import argparse
from pathlib import Path

from imagenet_prep.cli import common
from imagenet_prep.runtime.files import dataset_lock, ensure_dir
from imagenet_prep.shards.order import parse_size

DESCRIPTION = (
    "write DATASET/parquet/data/{train,validation,test}-NNNNN-of-NNNNN.parquet (image "
    "{bytes, path}, label: the Hub's imagenet-1k schema) and DATASET/parquet/README.md, the "
    "card `datasets.load_dataset(DATASET/parquet)` reads; straight from the archives or from "
    "extracted folders. Needs pyarrow (pip install 'imagenet-prep[parquet]').")
ALL = ("train", "val", "test")


def add_source(p: argparse.ArgumentParser) -> None:
    """DATASET and where the images come from: what the parquet and mds commands share."""
    p.add_argument("dataset", type=Path, metavar="DATASET")
    src = p.add_mutually_exclusive_group(required=True)
    common.add_archives(src)
    src.add_argument("--from-folders", action="store_true",
                     help="read DATASET/train/WNID/, DATASET/val/WNID/ and DATASET/test/")


def default_splits_to_auto(p: argparse.ArgumentParser) -> None:
    """--splits defaults to train and val, and test when its images are there."""
    p.set_defaults(splits=None)
    for action in p._actions:
        if action.dest == "splits":
            action.help = ("comma-separated, from train,val,test (default: train,val, and "
                           "test when its archive or folder is there)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source(p)
    p.add_argument("--shard-size", default="500MB", metavar="SIZE",
                   help="about this many bytes per file (default 500MB, as datasets cuts)")
    p.add_argument("--row-group-size", default="4MB", metavar="SIZE",
                   help="about this many image bytes per row group, the unit a streaming "
                        "reader fetches (default 4MB)")
    common.add_shard_options(p, ALL, ALL, ", the TFRecords' order")
    common.add_resize(p)
    default_splits_to_auto(p)


def run(args: argparse.Namespace) -> int:
    from imagenet_prep.runtime import variant
    from imagenet_prep.shards.parquet import write_parquet

    spec = common.resize_spec(args)
    ensure_dir(args.dataset)
    with dataset_lock(args.dataset), common.open_workers(args, "dataset") as workers:
        report = write_parquet(
            variant.folder_of(args.dataset, spec), resize=spec, archives=args.archives,
            from_folders=args.from_folders,
            shard_size=parse_size(args.shard_size), row_group_size=parse_size(args.row_group_size),
            seed=args.seed, workers=workers, on_bad_image=args.on_bad_image, splits=args.splits,
            labels=args.labels, subset=common.subset_of(args))
    common.emit_shards(report, args.json, "samples", "folder")
    return 0
