"""`imagenet-prep mds`: MosaicML Streaming (MDS) shards, one streaming dataset per split."""

from __future__ import annotations

import argparse

from imagenet_prep.cli import common
from imagenet_prep.cli.parquet import ALL, add_source, default_splits_to_auto
from imagenet_prep.runtime.files import dataset_lock, ensure_dir
from imagenet_prep.shards.order import parse_size

DESCRIPTION = (
    "write DATASET/mds/{train,val,test}/shard.NNNNN.mds and index.json, what "
    "streaming.StreamingDataset(local=DATASET/mds/train) reads (columns x: jpeg, y: int, "
    "i: int, filename: str, as MosaicML's ImageNet converter); straight from the archives or "
    "from extracted folders.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source(p)
    p.add_argument("--shard-size", default="64MiB", metavar="SIZE",
                   help="about this many bytes per shard (default 64MiB, MosaicML's size_limit)")
    common.add_shard_options(p, ALL, ALL, ", the TFRecords' order")
    common.add_resize(p)
    default_splits_to_auto(p)


def run(args: argparse.Namespace) -> int:
    from imagenet_prep.runtime import variant
    from imagenet_prep.shards.mds import write_mds

    spec = common.resize_spec(args)
    ensure_dir(args.dataset)
    with dataset_lock(args.dataset), common.open_workers(args, "dataset") as workers:
        report = write_mds(
            variant.folder_of(args.dataset, spec), resize=spec, archives=args.archives,
            from_folders=args.from_folders,
            shard_size=parse_size(args.shard_size), seed=args.seed, workers=workers,
            on_bad_image=args.on_bad_image, splits=args.splits, labels=args.labels,
            subset=common.subset_of(args))
    common.emit_shards(report, args.json, "samples", "index")
    return 0
