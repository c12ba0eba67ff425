"""`imagenet-prep tfrecord`: TFRecord shards in TensorFlow's reference schema, no TensorFlow."""

from __future__ import annotations

import argparse
from pathlib import Path

from imagenet_prep.cli.common import (
    add_archives,
    add_json,
    add_workers,
    emit,
    open_workers,
    shard_run_lines,
    split_list,
)
from imagenet_prep.runtime.files import dataset_lock, ensure_dir
from imagenet_prep.shards.tfrecord import ON_BAD, write_tfrecords
from imagenet_prep.sources.labels import SOURCES

DESCRIPTION = ("write tfrecord_train/train-NNNNN-of-01024 and "
               "tfrecord_val/validation-NNNNN-of-00128 straight from the archives "
               "(or from extracted folders)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=Path, metavar="DATASET")
    src = p.add_mutually_exclusive_group(required=True)
    add_archives(src)
    src.add_argument("--from-folders", action="store_true",
                     help="read DATASET/train/WNID/ and DATASET/val/WNID/ instead of archives")
    p.add_argument("--splits", type=split_list, default=("train", "val"),
                   help="comma-separated, from train,val (default: both)")
    p.add_argument("--train-shards", type=int, default=1024, metavar="N")
    p.add_argument("--val-shards", type=int, default=128, metavar="N")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    p.add_argument("--labels", choices=SOURCES, default="auto",
                   help="validation label source when reading the archives")
    p.add_argument("--dali-index", action="store_true",
                   help="also write NVIDIA DALI index files to tfrecord_{train,val}_idx/")
    p.add_argument("--on-bad-image", choices=ON_BAD, default="fail",
                   help="an unreadable image stops the run (fail) or is left out and listed")
    add_workers(p, cluster=True)
    add_json(p)


def summary_lines(r: dict) -> list[str]:
    """One screen: shards, records, size, conversions, throughput."""
    lines = []
    for split, s in r["splits"].items():
        lines.append(f"{split:<5} {s['shards']:>5} shards {s['records']:>9} records "
                     f"{s['bytes'] / 1e6:>10.1f} MB  {s['folder']}")
    return lines + shard_run_lines(r)


def run(args: argparse.Namespace) -> int:
    ensure_dir(args.dataset)
    with dataset_lock(args.dataset), open_workers(args, "dataset") as workers:
        report = write_tfrecords(
            args.dataset, archives=args.archives, from_folders=args.from_folders,
            train_shards=args.train_shards, val_shards=args.val_shards, seed=args.seed,
            workers=workers, dali_index=args.dali_index, on_bad_image=args.on_bad_image,
            labels=args.labels, splits=args.splits,
        )
    emit(report, args.json, summary_lines(report))
    return 0
