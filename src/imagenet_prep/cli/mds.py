"""`imagenet-prep mds`: MosaicML Streaming (MDS) shards, one streaming dataset per split."""

from __future__ import annotations

import argparse

from imagenet_prep.cli import common
from imagenet_prep.shards.order import parse_size

DESCRIPTION = (
    "write DATASET/mds/{train,val,test}/shard.NNNNN.mds and index.json, what "
    "streaming.StreamingDataset(local=DATASET/mds/train) reads (columns x: jpeg, y: int, "
    "i: int, filename: str, as MosaicML's ImageNet converter); straight from the archives or "
    "from extracted folders.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_image_source(p)
    p.add_argument("--shard-size", default="64MiB", metavar="SIZE",
                   help="about this many bytes per shard (default 64MiB, MosaicML's size_limit)")
    common.add_shard_options(p, common.ALL_SPLITS, common.ALL_SPLITS, ", the TFRecords' order")
    common.add_resize(p)
    common.default_splits_to_auto(p)


def run(args: argparse.Namespace) -> int:
    from imagenet_prep.shards.mds import write_mds

    return common.run_image_shards(args, write_mds, "index",
                                   shard_size=parse_size(args.shard_size))
