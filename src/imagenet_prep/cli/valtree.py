"""`imagenet-prep valtree`: group validation images into class folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from imagenet_prep.cli.common import add_archives, add_json, add_subset_options, emit, subset_of
from imagenet_prep.folders.valtree import valtree
from imagenet_prep.runtime.files import dataset_lock
from imagenet_prep.sources.labels import SOURCES

DESCRIPTION = "move val/*.JPEG into val/WNID/ using cross-checked validation labels"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=Path, metavar="DATASET")
    add_archives(p)
    p.add_argument("--labels", choices=SOURCES, default="auto",
                   help="label source (auto: devkit and box XMLs when present, cross-checked)")
    add_subset_options(p)
    add_json(p)


def run(args: argparse.Namespace) -> int:
    with dataset_lock(args.dataset):
        rec = valtree(args.dataset, args.archives, args.labels, subset_of(args))
    emit(rec, args.json, [f"val: {rec['files']} images in {len(rec['classes'])} class folders "
                          f"({rec['moved']} moved now)"])
    return 0
