"""`imagenet-prep verify`: catch a truncated or corrupt download before hours of extraction."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from imagenet_prep.cli.common import add_archives, add_json, emit, split_list
from imagenet_prep.sources.archives import verify_archives, verify_passed

DESCRIPTION = ("check archive sizes and MD5s against the official values (or the folder's "
               "MD5SUMS); exit 1 on any mismatch")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_archives(p, required=True)
    p.add_argument("--quick", action="store_true",
                   help="compare exact sizes only (seconds instead of a full read)")
    p.add_argument("--require", type=split_list, nargs="+", action="extend", default=[],
                   metavar="NAME",
                   help="archive file names or roles (train, val, test, bbox_train, bbox_val, "
                        "devkit) whose absence is an error")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="files hashed at once (default: the number of cores)")
    add_json(p)


def run(args: argparse.Namespace) -> int:
    require = [name for group in args.require for name in group]
    statuses = verify_archives(
        args.archives, quick=args.quick, workers=args.workers, require=require,
    )
    width = max(len(s.name) for s in statuses)
    lines = [
        f"{s.status:<8} {s.name:<{width}}  {s.detail}"
        + ("  (required)" if s.required and s.status == "MISSING" else "")
        for s in statuses
    ]
    emit([asdict(s) for s in statuses], args.json, lines)
    return 0 if verify_passed(statuses) else 1
