"""Options and output shared by several commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagenet_prep.runtime.pool import Workers
from imagenet_prep.runtime.storage import location
from imagenet_prep.shards.engine import ON_BAD_IMAGE
from imagenet_prep.sources.labels import SOURCES

if TYPE_CHECKING:
    from imagenet_prep.sources.subset import Subset


def add_workers(p: argparse.ArgumentParser, cluster: bool = False) -> None:
    """--workers N; with `cluster`, also --scheduler / --dask-local (one of the three).

    A command that offers `cluster` must build its executor with `open_workers`.
    """
    g = p.add_mutually_exclusive_group() if cluster else p
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: the number of cores)")
    if cluster:
        g.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                       help="run the tasks on this Dask cluster; its workers must see the "
                            "archives and DATASET at the same paths (needs imagenet-prep[dask])")
        g.add_argument("--dask-local", type=int, default=None, metavar="N",
                       help="start a Dask LocalCluster of N worker processes for this run")


@contextlib.contextmanager
def open_workers(args: argparse.Namespace, dataset: str, archives: str | None = "archives"
                 ) -> Iterator[Workers]:
    """The `workers` value to pass to the stages, open for the duration of the block.

    `dataset` and `archives` name the attributes of `args` holding those folders.  On
    Dask they are made absolute in `args` (workers run in other working folders) and
    checked on every worker before any task runs.  Otherwise this is `args.workers`.
    """
    scheduler = getattr(args, "scheduler", None)
    local = getattr(args, "dask_local", None)
    if scheduler is None and local is None:
        yield args.workers
        return
    from imagenet_prep.runtime.dask_cluster import DaskExecutor

    if isinstance(getattr(args, dataset), Path):
        setattr(args, dataset, getattr(args, dataset).resolve())
    if archives is not None and isinstance(getattr(args, archives, None), Path):
        setattr(args, archives, Path(getattr(args, archives)).resolve())
    with DaskExecutor(
        dataset=getattr(args, dataset),
        archives=getattr(args, archives, None) if archives is not None else None,
        scheduler=scheduler, local_workers=local or 0,
    ) as executor:
        yield executor


def add_archives(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--archives", type=location, required=required, metavar="DIR",
                   help="folder (or s3://, gs://, az:// URL) holding the official ILSVRC2012 "
                        "archives")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a machine-readable report")


def split_list(text: str) -> tuple[str, ...]:
    return tuple(s for s in text.replace(" ", ",").split(",") if s)


def emit(report: Any, as_json: bool, lines: list[str]) -> None:
    """Print the report as JSON, or the human lines."""
    if as_json:
        json.dump(report, sys.stdout, indent=1, sort_keys=True, default=str)
        print()
    else:
        for line in lines:
            print(line)


def add_shard_options(p: argparse.ArgumentParser, splits: tuple[str, ...],
                      default: tuple[str, ...], seed_note: str = "", *, seed: bool = True
                      ) -> None:
    """--splits, --seed, --labels, --on-bad-image, the workers and --json: what every shard
    command (tfrecord, wds) takes."""
    shown = "both" if default == splits and len(splits) == 2 else ",".join(default)
    p.add_argument("--splits", type=split_list, default=default,
                   help=f"comma-separated, from {','.join(splits)} (default: {shown})")
    if seed:  # a format whose order is fixed (tfds: TFDS's own) takes none
        p.add_argument("--seed", type=int, default=0,
                       help=f"shuffle seed (default 0{seed_note})")
    p.add_argument("--labels", choices=SOURCES, default="auto",
                   help="validation label source when reading the archives")
    p.add_argument("--on-bad-image", choices=tuple(ON_BAD_IMAGE), default="fail",
                   help="an unreadable image stops the run (fail) or is left out and listed")
    add_subset_options(p)
    add_workers(p, cluster=True)
    add_json(p)


def add_subset_options(p: argparse.ArgumentParser) -> None:
    """--classes, --train-subset, --subset-labels: which part of ILSVRC2012 the dataset holds
    (every output stage takes them; a dataset keeps the subset it was first made with)."""
    from imagenet_prep.sources.subset import CLASS_LISTS, LABEL_RULES, TRAIN_LISTS

    g = p.add_argument_group("subset (docs/subsets.md)")
    g.add_argument("--classes", metavar="NAME|FILE", default=None,
                   help=f"only these classes: {', '.join(CLASS_LISTS)}, or a file of WNIDs")
    g.add_argument("--train-subset", metavar="NAME|FILE", default=None,
                   help=f"only these training images: {', '.join(TRAIN_LISTS)}, or a file of "
                        "training file names (validation keeps every image of the classes)")
    g.add_argument("--subset-labels", choices=LABEL_RULES, default="subset",
                   help="labels a subset's outputs write: its own 0..N-1 (TFRecord 1..N; "
                        "default) or ImageNet's 0..999 (TFRecord 1..1000)")


def subset_of(args: argparse.Namespace) -> Subset | None:
    """The subset the command line asks for (None: the dataset's own, or all)."""
    from imagenet_prep.sources.subset import resolve

    return resolve(args.classes, args.train_subset, args.subset_labels)


def emit_shards(r: dict, as_json: bool, unit: str, place: str) -> None:
    """A shard command's report, or one screen: per split its shards, `unit` (records,
    samples), size and `place` (its folder or index); then the run."""
    lines = [f"{split:<5} {s['shards']:>5} shards {s[unit]:>9} {unit} "
             f"{s['bytes'] / 1e6:>10.1f} MB  {s[place]}" for split, s in r["splits"].items()]
    emit(r, as_json, lines + shard_run_lines(r))


def shard_run_lines(r: dict) -> list[str]:
    """The lines a shard sink's report ends with: this run's throughput, conversions and
    left-out images (tfrecord and wds)."""
    lines: list[str] = []
    run = r["run"]
    if run["shards_written"]:
        lines.append(f"wrote {run['shards_written']} shards: {run['images']} images, "
                     f"{run['input_bytes'] / 1e6:.1f} MB read in {run['seconds']:.1f} s "
                     f"({run['images_per_s']:,.0f} images/s, {run['mb_per_s']:,.1f} MB/s)")
        lines.append(f"  indexing {run['index_seconds']:.1f} s, writing "
                     f"{run['write_seconds']:.1f} s")
        if run.get("requests") and run["images"]:  # images read from object storage
            lines.append(f"  {run['requests']} read requests, "
                         f"{run['requests'] / run['images']:.2f} per image, "
                         f"{run['read_bytes'] / run['images'] / 1e3:.1f} kB read per image")
    else:
        lines.append("all shards were already complete")
    if r["converted"]:
        kinds = Counter(c["reason"] for c in r["converted"])
        shown = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        lines.append(f"converted to RGB JPEG: {len(r['converted'])} ({shown})")
        lines += [f"  {c['split']}: {c['name']} ({c['reason']})" for c in r["converted"][:10]]
        if len(r["converted"]) > 10:
            lines.append(f"  ... {len(r['converted']) - 10} more in the JSON report")
    if r["skipped"]:
        lines.append(f"left out (unreadable): {len(r['skipped'])}")
        lines += [f"  {s['split']}: {s['error']}" for s in r["skipped"][:10]]
    if "variant" in r:  # a resized variant (runtime/variant.py)
        from imagenet_prep.runtime.variant import variant_lines

        lines += variant_lines(r["variant"])
    return lines


def add_resize(p: argparse.ArgumentParser) -> None:
    """--resize, --quality, --image-format: a resized variant (docs/resize.md)."""
    g = p.add_argument_group("resized variant (written to DATASET/variants/<tag>/)")
    g.add_argument("--resize", default="none", metavar="none|short=S|max=M|box=B",
                   help="store images resized: shorter side S, longer side at most M (never "
                        "enlarged), or exactly BxB (default none: the original bytes)")
    g.add_argument("--quality", type=int, default=None, metavar="Q",
                   help="encoder quality of resized images (default 90)")
    g.add_argument("--image-format", choices=("jpeg", "webp"), default=None,
                   help="encoding of resized images (default jpeg)")
    g.add_argument("--full-decode", action="store_true",
                   help="decode every JPEG at full size before resampling (slower, the exact "
                        "pixels of the reference path; default: a reduced decode when the "
                        "target allows)")


def resize_spec(args: argparse.Namespace) -> Any:
    """The ResizeSpec the options ask for, or None (no resizing)."""
    from imagenet_prep.formats.resize import parse

    return parse(args.resize, args.quality, args.image_format, args.full_decode)


# --- the commands that write a loader's shards (parquet, mds, tfds) ------------------------

ALL_SPLITS = ("train", "val", "test")


def add_image_source(p: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """DATASET, and where the images come from: --archives DIR or --from-folders (the group
    is returned for a command's own alternative)."""
    p.add_argument("dataset", type=location, metavar="DATASET")
    src = p.add_mutually_exclusive_group(required=True)
    add_archives(src)
    src.add_argument("--from-folders", action="store_true",
                     help="read DATASET/train/WNID/, DATASET/val/WNID/ (and DATASET/test/)")
    return src


def default_splits_to_auto(p: argparse.ArgumentParser) -> None:
    """--splits defaults to train and val, and test when its images are there."""
    p.set_defaults(splits=None)
    for action in p._actions:
        if action.dest == "splits":
            action.help = ("comma-separated, from train,val,test (default: train,val, and "
                           "test when its archive or folder is there)")


def run_image_shards(args: argparse.Namespace, write: Any, place: str, **options: Any) -> int:
    """Lock DATASET and write a format's shards into it (or into the resized variant the
    options ask for) with the source, order, split, label and subset options every such
    command shares; `options` are the format's own."""
    from imagenet_prep.runtime import variant
    from imagenet_prep.runtime.files import dataset_lock, ensure_dir

    spec = resize_spec(args)
    ensure_dir(args.dataset)
    with dataset_lock(args.dataset), open_workers(args, "dataset") as workers:
        report = write(
            variant.folder_of(args.dataset, spec), resize=spec, archives=args.archives,
            from_folders=args.from_folders, seed=args.seed, workers=workers,
            on_bad_image=args.on_bad_image, splits=args.splits, labels=args.labels,
            subset=subset_of(args), **options)
    emit_shards(report, args.json, "samples", place)
    return 0
