"""`imagenet-prep flatten`: train_flatten/ and val_flatten/ as hard links (no extra bytes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from imagenet_prep.cli.common import add_json, add_subset_options, emit, split_list, subset_of
from imagenet_prep.folders.flatten import MODES, flatten
from imagenet_prep.runtime.files import dataset_lock

DESCRIPTION = "make train_flatten/ and val_flatten/ (hard links by default)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=Path, metavar="DATASET")
    p.add_argument("--mode", choices=MODES, default="hardlink")
    p.add_argument("--splits", type=split_list, default=("train", "val"))
    add_subset_options(p)
    add_json(p)


def run(args: argparse.Namespace) -> int:
    with dataset_lock(args.dataset):
        summary = flatten(args.dataset, args.splits, args.mode, subset_of(args))
    emit(summary, args.json, [f"{k}_flatten: {v['files']} files ({v['mode']})"
                              for k, v in summary.items()])
    return 0
