"""`imagenet-prep parquet`: Parquet shards in the Hugging Face Hub's imagenet-1k schema."""

from __future__ import annotations

import argparse

from imagenet_prep.cli import common
from imagenet_prep.shards.order import parse_size

DESCRIPTION = (
    "write DATASET/parquet/data/{train,validation,test}-NNNNN-of-NNNNN.parquet (image "
    "{bytes, path}, label: the Hub's imagenet-1k schema) and DATASET/parquet/README.md, the "
    "card `datasets.load_dataset(DATASET/parquet)` reads; straight from the archives or from "
    "extracted folders. Needs pyarrow (pip install 'imagenet-prep[parquet]').")


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_image_source(p)
    p.add_argument("--shard-size", default="500MB", metavar="SIZE",
                   help="about this many bytes per file (default 500MB, as datasets cuts)")
    p.add_argument("--row-group-size", default="4MB", metavar="SIZE",
                   help="about this many image bytes per row group, the unit a streaming "
                        "reader fetches (default 4MB)")
    common.add_shard_options(p, common.ALL_SPLITS, common.ALL_SPLITS, ", the TFRecords' order")
    common.add_resize(p)
    common.default_splits_to_auto(p)


def run(args: argparse.Namespace) -> int:
    from imagenet_prep.shards.parquet import write_parquet

    return common.run_image_shards(args, write_parquet, "folder",
                                   shard_size=parse_size(args.shard_size),
                                   row_group_size=parse_size(args.row_group_size))
