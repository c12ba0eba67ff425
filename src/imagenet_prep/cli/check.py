"""`imagenet-prep check`: prove a dataset complete, or list its problems."""

from __future__ import annotations

import argparse
from pathlib import Path

from imagenet_prep.check import check_dataset
from imagenet_prep.cli.common import add_json, emit

DESCRIPTION = ("check a dataset folder against what the archives held; "
               "exit 1 with a list of problems")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=Path, metavar="DATASET")
    add_json(p)


def run(args: argparse.Namespace) -> int:
    problems, checked = check_dataset(args.dataset)
    lines = [f"skipped bad image (--on-bad-image skip): {s['split']}/{s['name']}: {s['error']}"
             for s in checked.get("skipped_images", [])]
    lines += [f"problem: {p}" for p in problems[:50]]
    if len(problems) > 50:
        lines.append(f"... and {len(problems) - 50} more")
    lines.append(f"{args.dataset}: " + ("OK" if not problems else f"{len(problems)} problems"))
    emit({"ok": not problems, "problems": problems, "checked": checked}, args.json, lines)
    return 0 if not problems else 1
