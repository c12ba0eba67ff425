"""`imagenet-prep check`: prove a dataset complete, or list its problems."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from imagenet_prep.check import check_dataset
from imagenet_prep.cli.common import add_json, add_workers, emit
from imagenet_prep.errors import NothingToCheck, PrepError
from imagenet_prep.layout import STATE_DIR
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.file_manifest import DAMAGED
from imagenet_prep.runtime.files import dataset_lock
from imagenet_prep.runtime.storage import location
from imagenet_prep.runtime.variant import missing_variants, variant_roots

DESCRIPTION = ("prove every output the dataset was asked to contain (counts, sizes, "
               "checksums, links); exit 1 with a list of problems, 8 when the folder holds "
               "no dataset; files found damaged are written again by the next run")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", type=location, metavar="DATASET")
    add_workers(p)
    add_json(p)


def _note_damaged(dataset: Path, damaged: list[str]) -> None:
    """Tell the next run which files to write again (or that none need it)."""
    with contextlib.suppress(OSError, PrepError):  # a read-only dataset is still checked
        if damaged:
            stage_state.save(dataset, DAMAGED, {"files": sorted(damaged)})
        else:
            stage_state.record_path(dataset, DAMAGED).unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        if (args.dataset / STATE_DIR).is_dir():  # never create state in a folder we only read
            # a run in progress holds the lock: say so instead of judging a half-made dataset
            stack.enter_context(dataset_lock(args.dataset, read_only=True))
        variants = variant_roots(args.dataset)
        missing = missing_variants(args.dataset)  # asked for, and gone
        try:
            problems, checked = check_dataset(args.dataset, workers=args.workers)
        except NothingToCheck:
            if not variants and not missing:
                raise
            problems, checked = [], {"outputs": []}
        problems += missing
        if checked:
            _note_damaged(args.dataset, checked.get("damaged", []))
        for root in variants:  # each resized variant is a dataset of its own (docs/resize.md)
            more, seen = check_dataset(root, workers=args.workers)
            _note_damaged(root, seen.get("damaged", []))
            problems += [p if p.startswith(str(root)) else f"{root}/{p}" for p in more]
            checked.setdefault("variants", {})[root.name] = {"ok": not more, **seen}
    lines = [f"skipped bad image (--on-bad-image skip): {s['split']}/{s['name']}: {s['error']}"
             for s in checked.get("skipped_images", [])]
    lines += [f"variant {name}: " + ("OK" if v["ok"] else "problems below")
              for name, v in checked.get("variants", {}).items()]
    lines += [f"problem: {p}" for p in problems[:50]]
    if len(problems) > 50:
        lines.append(f"... and {len(problems) - 50} more")
    held = f" (subset: {checked['subset']})" if checked.get("subset") else ""
    lines.append(f"{args.dataset}{held}: "
                 + ("OK" if not problems else f"{len(problems)} problems"))
    emit({"ok": not problems, "problems": problems, "checked": checked}, args.json, lines)
    return 0 if not problems else 1
