"""`imagenet-prep wds`: WebDataset tar shards (and wids indexes) for streaming PyTorch training."""

from __future__ import annotations

import argparse
import contextlib
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
from imagenet_prep.errors import PrepError
from imagenet_prep.runtime.files import dataset_lock, ensure_dir
from imagenet_prep.shards.plan import parse_size
from imagenet_prep.shards.wds import DEFAULT_SPLITS, ON_BAD, SPLITS, write_wds
from imagenet_prep.sources.labels import SOURCES

DESCRIPTION = (
    "write OUT/train-NNNNNN.tar, OUT/validation-NNNNNN.tar (and test-NNNNNN.tar with "
    "--splits) and an index per split (OUT/train.json, ...) straight from the archives or "
    "from extracted folders. OUT defaults to DATASET/wds. DATASET supplies the box CSV "
    "(made from its bbox_train/ or the box archive when missing) and, with --from-folders, "
    "the images; without DATASET, --out is required and the CSV is made there.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=Path, nargs="?", metavar="DATASET")
    src = p.add_mutually_exclusive_group(required=True)
    add_archives(src)
    src.add_argument("--from-folders", nargs="?", const=True, default=False, type=Path,
                     metavar="DATASET",
                     help="read DATASET/train/WNID/, DATASET/val/WNID/ (and DATASET/test/)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="the shard folder (default: DATASET/wds)")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument("--shard-size", type=str, default=None, metavar="SIZE",
                     help="about this many bytes per shard, e.g. 500MB, 1GB, 1GiB (default 1GB)")
    cut.add_argument("--shard-samples", type=int, default=None, metavar="N",
                     help="N samples per shard instead")
    p.add_argument("--splits", type=split_list, default=DEFAULT_SPLITS,
                   help=f"comma-separated, from {','.join(SPLITS)} (default: train,val)")
    p.add_argument("--seed", type=int, default=0,
                   help="shuffle seed (default 0, the TFRecords' order)")
    p.add_argument("--labels", choices=SOURCES, default="auto",
                   help="validation label source when reading the archives")
    p.add_argument("--on-bad-image", choices=ON_BAD, default="fail",
                   help="an unreadable image stops the run (fail) or is left out and listed")
    add_workers(p, cluster=True)
    add_json(p)


def summary_lines(r: dict) -> list[str]:
    """One screen: shards, samples, size, conversions, throughput."""
    lines = []
    for split, s in r["splits"].items():
        lines.append(f"{split:<5} {s['shards']:>5} shards {s['samples']:>9} samples "
                     f"{s['bytes'] / 1e6:>10.1f} MB  {s['index']}")
    return lines + shard_run_lines(r)


def resolve(args: argparse.Namespace) -> tuple[Path | None, Path]:
    """(DATASET or None, OUT) from the positional, --from-folders DATASET and --out."""
    dataset = args.dataset
    if isinstance(args.from_folders, Path):
        if dataset is not None and dataset != args.from_folders:
            raise PrepError(f"two dataset folders given: {dataset} and {args.from_folders}")
        dataset = args.from_folders
    if args.from_folders and dataset is None:
        raise PrepError("--from-folders needs the dataset folder: wds --from-folders DATASET")
    out = args.out or (dataset / "wds" if dataset is not None else None)
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
        workers = stack.enter_context(open_workers(args, "out"))
        report = write_wds(
            args.out, dataset=dataset, archives=args.archives,
            from_folders=bool(args.from_folders), shard_size=size,
            shard_samples=args.shard_samples, seed=args.seed,
            workers=workers, on_bad_image=args.on_bad_image, splits=args.splits,
            labels=args.labels,
        )
    emit(report, args.json, summary_lines(report))
    return 0
