"""`imagenet-prep synsets`: write DATASET/synsets.txt."""

from __future__ import annotations

import argparse

from imagenet_prep.cli.common import add_archives, add_json, add_subset_options, emit, subset_of
from imagenet_prep.folders.synsets import write_synsets
from imagenet_prep.runtime.files import dataset_lock
from imagenet_prep.runtime.storage import location

DESCRIPTION = "write synsets.txt (WNID description per class, devkit words when present)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=location, metavar="DATASET")  # a bucket URL too
    add_archives(p)
    add_subset_options(p)
    add_json(p)


def run(args: argparse.Namespace) -> int:
    with dataset_lock(args.dataset):
        rec = write_synsets(args.dataset, args.archives, subset_of(args))
    emit(rec, args.json, [f"synsets.txt: {rec['classes']} classes ({rec['source']} descriptions)"])
    return 0
