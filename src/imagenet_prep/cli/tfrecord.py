"""`imagenet-prep tfrecord`: TFRecord shards in TensorFlow's reference schema, no TensorFlow."""

from __future__ import annotations

import argparse
from functools import partial

from imagenet_prep.cli import common
from imagenet_prep.folders.bbox_csv import ensure_csv
from imagenet_prep.runtime import variant
from imagenet_prep.runtime.files import dataset_lock, ensure_dir
from imagenet_prep.runtime.storage import location
from imagenet_prep.shards.tfrecord import SPLITS, write_tfrecords

DESCRIPTION = ("write tfrecord_train/train-NNNNN-of-01024 and "
               "tfrecord_val/validation-NNNNN-of-00128 straight from the archives "
               "(or from extracted folders)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=location, metavar="DATASET")
    src = p.add_mutually_exclusive_group(required=True)
    common.add_archives(src)
    src.add_argument("--from-folders", action="store_true",
                     help="read DATASET/train/WNID/ and DATASET/val/WNID/ instead of archives")
    p.add_argument("--train-shards", type=int, default=1024, metavar="N")
    p.add_argument("--val-shards", type=int, default=128, metavar="N")
    p.add_argument("--dali-index", action="store_true",
                   help="also write NVIDIA DALI index files to tfrecord_{train,val}_idx/")
    common.add_shard_options(p, SPLITS, SPLITS)
    common.add_resize(p)


def run(args: argparse.Namespace) -> int:
    spec = common.resize_spec(args)
    ensure_dir(args.dataset)
    with dataset_lock(args.dataset), common.open_workers(args, "dataset") as workers:
        boxes = partial(ensure_csv, args.dataset, args.archives, workers)  # once inputs proven
        report = write_tfrecords(
            variant.folder_of(args.dataset, spec), resize=spec, archives=args.archives,
            from_folders=args.from_folders,
            train_shards=args.train_shards, val_shards=args.val_shards, seed=args.seed,
            workers=workers, dali_index=args.dali_index, on_bad_image=args.on_bad_image,
            labels=args.labels, splits=args.splits, boxes_csv=boxes, subset=common.subset_of(args),
        )
    common.emit_shards(report, args.json, "records", "folder")
    return 0
