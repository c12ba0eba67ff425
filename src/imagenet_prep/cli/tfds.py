"""`imagenet-prep tfds`: a TensorFlow Datasets data directory of imagenet2012, no TensorFlow."""

from __future__ import annotations

import argparse

from imagenet_prep.cli import common
from imagenet_prep.errors import OptionError
from imagenet_prep.runtime.files import dataset_lock, ensure_dir
from imagenet_prep.shards.tfds import DEFAULT_SPLITS, SPLITS, write_tfds

DESCRIPTION = (
    "write DATASET/tfds/imagenet2012/5.1.0/ (imagenet2012-train.tfrecord-NNNNN-of-NNNNN, "
    "..., dataset_info.json, features.json, label.labels.txt) straight from the archives or "
    "from extracted folders, so that tfds.load('imagenet2012', data_dir=DATASET/tfds) reads "
    "it; --splits train,val,test adds the unlabelled test split")


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = common.add_image_source(p)
    src.add_argument("--describe-tfrecords", action="store_true",
                     help="write no shards: only TFDS metadata in DATASET/tfds/"
                          "imagenet2012_reference/1.0.0/ that reads DATASET's reference "
                          "TFRecords in place (tfds.builder_from_directory)")
    common.add_shard_options(p, SPLITS, DEFAULT_SPLITS, seed=False)
    common.add_resize(p)


def run(args: argparse.Namespace) -> int:
    from imagenet_prep.runtime import variant

    spec = common.resize_spec(args)
    ensure_dir(args.dataset)
    if args.describe_tfrecords:
        if spec is not None:
            raise OptionError("--describe-tfrecords writes no images: it takes no --resize")
        from imagenet_prep.shards.tfds_reference import write_reference_metadata

        with dataset_lock(args.dataset):
            done = write_reference_metadata(args.dataset)
        common.emit(done, args.json, [f"{done['folder']}: " + ", ".join(
            f"{split} {n} records" for split, n in done["splits"].items())])
        return 0
    with dataset_lock(args.dataset), common.open_workers(args, "dataset") as workers:
        report = write_tfds(
            variant.folder_of(args.dataset, spec), resize=spec, archives=args.archives,
            from_folders=args.from_folders, workers=workers, on_bad_image=args.on_bad_image,
            splits=args.splits, labels=args.labels, subset=common.subset_of(args),
        )
    common.emit_shards(report, args.json, "records", "folder")
    return 0
