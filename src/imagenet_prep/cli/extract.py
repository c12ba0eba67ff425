"""`imagenet-prep extract`: the seed's folders straight from the archives."""

from __future__ import annotations

import argparse
from pathlib import Path

from imagenet_prep.cli.common import (
    add_archives,
    add_json,
    add_resize,
    add_subset_options,
    add_workers,
    emit,
    open_workers,
    resize_spec,
    split_list,
    subset_of,
)
from imagenet_prep.folders.extract import SPLITS, extract
from imagenet_prep.runtime import variant
from imagenet_prep.runtime.files import dataset_lock, ensure_dir
from imagenet_prep.sources.labels import SOURCES

DESCRIPTION = "extract train/val/test images and box XMLs in one pass (no inner tars on disk)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_archives(p, required=True)
    p.add_argument("--out", type=Path, required=True, metavar="DATASET")
    p.add_argument("--splits", type=split_list, default=SPLITS,
                   help=f"comma-separated, from {','.join(SPLITS)} (default: all present)")
    p.add_argument("--labels", choices=SOURCES, default="auto",
                   help="validation label source (a subset picks its validation images by it)")
    add_subset_options(p)
    add_workers(p, cluster=True)
    add_json(p)
    add_resize(p)


def run(args: argparse.Namespace) -> int:
    spec = resize_spec(args)
    ensure_dir(args.out)
    with dataset_lock(args.out), open_workers(args, "out") as workers:
        summary = extract(args.archives, variant.folder_of(args.out, spec), args.splits, workers,
                          subset=subset_of(args), labels=args.labels, resize=spec)
    lines = [
        f"{split:<10} {s['files']:>9} files {s['bytes'] / 1e6:>10.1f} MB"
        + ("  (already done)" if s.get("skipped") else f"  {s['seconds']:.1f} s")
        for split, s in summary.items()
    ]
    if spec is not None and (rec := variant.record(variant.folder_of(args.out, spec))):
        lines += variant.variant_lines({"tag": spec.tag, **rec})
    emit(summary, args.json, lines or ["no archives found"])
    return 0
