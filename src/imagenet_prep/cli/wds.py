"""`imagenet-prep wds`: WebDataset tar shards (and wids indexes) for streaming PyTorch training."""

from __future__ import annotations

import argparse
import contextlib
from functools import partial
from pathlib import Path

from imagenet_prep.cli import common
from imagenet_prep.errors import PrepError
from imagenet_prep.folders.bbox_csv import ensure_csv
from imagenet_prep.layout import WDS_DIR
from imagenet_prep.runtime import variant
from imagenet_prep.runtime.files import dataset_lock, ensure_dir
from imagenet_prep.runtime.storage import location
from imagenet_prep.shards.order import parse_size
from imagenet_prep.shards.wds import DEFAULT_SPLITS, SPLITS, write_wds

DESCRIPTION = (
    "write OUT/train-NNNNNN.tar, OUT/validation-NNNNNN.tar (and test-NNNNNN.tar with "
    "--splits) and an index per split (OUT/train.json, ...) straight from the archives or "
    "from extracted folders. OUT defaults to DATASET/wds. DATASET supplies the box CSV "
    "(made from its bbox_train/ or the box archive when missing) and, with --from-folders, "
    "the images; without DATASET, --out is required and the CSV is made there.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=location, nargs="?", metavar="DATASET")
    src = p.add_mutually_exclusive_group(required=True)
    common.add_archives(src)
    src.add_argument("--from-folders", nargs="?", const=True, default=False, type=Path,
                     metavar="DATASET",
                     help="read DATASET/train/WNID/, DATASET/val/WNID/ (and DATASET/test/)")
    p.add_argument("--out", type=location, metavar="DIR",
                   help="the shard folder (default: DATASET/wds)")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument("--shard-size", type=str, default=None, metavar="SIZE",
                     help="about this many bytes per shard, e.g. 500MB, 1GB, 1GiB (default 1GB)")
    cut.add_argument("--shard-samples", type=int, default=None, metavar="N",
                     help="N samples per shard instead")
    common.add_shard_options(p, SPLITS, DEFAULT_SPLITS, ", the TFRecords' order")
    common.add_resize(p)


def resolve(args: argparse.Namespace) -> tuple[Path | None, Path]:
    """(DATASET or None, OUT) from the positional, --from-folders DATASET and --out."""
    dataset = args.dataset
    if isinstance(args.from_folders, Path):
        if dataset is not None and dataset != args.from_folders:
            raise PrepError(f"two dataset folders given: {dataset} and {args.from_folders}")
        dataset = args.from_folders
    if args.from_folders and dataset is None:
        raise PrepError("--from-folders needs the dataset folder: wds --from-folders DATASET")
    spec = common.resize_spec(args)
    out = args.out or (variant.folder_of(dataset, spec) / WDS_DIR if dataset is not None
                       else None)
    if out is None:
        raise PrepError("give --out DIR (or DATASET, for DATASET/wds)")
    return dataset, out


def run(args: argparse.Namespace) -> int:
    dataset, args.out = resolve(args)
    if dataset is not None and (args.scheduler or args.dask_local):
        dataset = dataset.resolve()  # cluster workers run in other working folders
    size = parse_size(args.shard_size) if args.shard_size is not None else None
    ensure_dir(args.out)
    with contextlib.ExitStack() as stack:
        if dataset is not None and dataset.resolve() != args.out.resolve():
            ensure_dir(dataset)
            stack.enter_context(dataset_lock(dataset))  # its box CSV may be written
        stack.enter_context(dataset_lock(args.out))
        workers = stack.enter_context(common.open_workers(args, "out"))
        boxes = partial(ensure_csv, dataset if dataset is not None else args.out, args.archives,
                        workers)  # made once the inputs are proven
        spec = common.resize_spec(args)
        report = write_wds(
            args.out, resize=spec,
            dataset=variant.folder_of(dataset, spec) if dataset is not None else None,
            archives=args.archives,
            from_folders=bool(args.from_folders), shard_size=size,
            shard_samples=args.shard_samples, seed=args.seed,
            workers=workers, on_bad_image=args.on_bad_image, splits=args.splits,
            labels=args.labels, boxes_csv=boxes, subset=common.subset_of(args),
        )
    common.emit_shards(report, args.json, "samples", "index")
    return 0
