"""`imagenet-prep report`: one self-contained HTML page showing what a dataset holds."""

from __future__ import annotations

import argparse

from imagenet_prep.cli.common import add_json, add_workers, emit
from imagenet_prep.errors import PrepError
from imagenet_prep.layout import REPORT_HTML
from imagenet_prep.runtime.files import dataset_lock
from imagenet_prep.runtime.storage import location

DESCRIPTION = ("write one self-contained HTML page (no network, no script): counts, timings "
               "and check, size distributions from a sample of image headers, the converted "
               "files, and a contact sheet of train beside validation images per class. Reads "
               "the class folders, or the TFRecord shards when there are none")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=location, metavar="DATASET")  # a bucket URL too
    p.add_argument("--out", type=location, default=None, metavar="FILE",
                   help=f"where to write the page (default: DATASET/{REPORT_HTML})")
    p.add_argument("--classes", type=int, default=24, metavar="N",
                   help="classes on the contact sheet (default 24)")
    p.add_argument("--per-class", type=int, default=8, metavar="K",
                   help="train and validation thumbnails per class (default 8)")
    p.add_argument("--seed", type=int, default=0,
                   help="chooses the classes, the thumbnails and the sample (default 0)")
    p.add_argument("--sample", type=int, default=5000, metavar="N",
                   help="images per split whose headers feed the distributions (default 5000)")
    p.add_argument("--no-check", action="store_true",
                   help="leave out `check` (it reads every TFRecord: minutes at full scale)")
    add_workers(p)
    add_json(p)


def summary_lines(r: dict) -> list[str]:
    lines = [f"wrote {r['path']} ({r['bytes'] / 1e6:.2f} MB) in {r['seconds']:.1f} s"]
    for split, source in r["sources"].items():
        n, total = r["sampled"][split]
        lines.append(f"  {split:<5} {r['images'][split]:>9,} images from {source}; "
                     f"sampled {n:,} of {total:,}")
    lines.append(f"  contact sheet: {len(r['classes_shown'])} classes, "
                 f"{r['thumbnails']} thumbnails; converted files: {r['converted']}")
    if r["check"] is not None:
        lines.append("  check: " + ("OK" if r["check"] else "problems (see the page)"))
    return lines


def run(args: argparse.Namespace) -> int:
    from imagenet_prep.report import build_report

    if not args.dataset.is_dir():
        raise PrepError(f"{args.dataset}: not a folder")
    with dataset_lock(args.dataset, read_only=args.out is not None):  # --out: only reads
        r = build_report(args.dataset, args.out, classes=args.classes, per_class=args.per_class,
                         seed=args.seed, sample=args.sample, check=not args.no_check,
                         workers=args.workers)
    emit(r, args.json, summary_lines(r))
    return 0
