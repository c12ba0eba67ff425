"""`imagenet-prep bbox`: the reference's box CSV from bbox_train/ or straight from its archive."""

from __future__ import annotations

import argparse
from pathlib import Path

from imagenet_prep.cli.common import (
    add_archives,
    add_json,
    add_subset_options,
    add_workers,
    emit,
    open_workers,
    subset_of,
)
from imagenet_prep.folders.bbox_csv import CSV_NAME, write_bbox_csv
from imagenet_prep.runtime.files import dataset_lock, ensure_dir

DESCRIPTION = (f"write {CSV_NAME} from the training box XMLs "
               "(as TensorFlow's process_bounding_boxes.py)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=Path, metavar="DATASET")
    add_archives(p)
    add_subset_options(p)
    add_workers(p, cluster=True)
    add_json(p)


def run(args: argparse.Namespace) -> int:
    ensure_dir(args.dataset)
    with dataset_lock(args.dataset), open_workers(args, "dataset") as workers:
        s = write_bbox_csv(args.dataset, archives=args.archives, workers=workers,
                           subset=subset_of(args))
    if s["skipped"]:
        lines = [f"{s['csv']}: already complete ({s['boxes_written']} boxes, "
                 f"{s['images']} images)"]
    else:
        rate = s["xml_files"] / s["seconds"] if s["seconds"] else 0.0
        lines = [
            f"{s['csv']}: {s['boxes_written']} boxes from {s['images']} images",
            f"  {s['xml_files']} XML files from {s['source']}; skipped {s['files_skipped']} "
            f"files and {s['boxes_skipped']} boxes",
            f"  {s['seconds']:.1f} s, {rate:,.0f} XML files/s",
        ]
    emit(s, args.json, lines)
    return 0
