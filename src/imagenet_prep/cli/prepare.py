"""`imagenet-prep prepare`: everything, in order, resumable."""

from __future__ import annotations

import argparse
import sys

from imagenet_prep.cli.common import (
    add_archives,
    add_json,
    add_resize,
    add_subset_options,
    add_workers,
    emit,
    open_workers,
    resize_spec,
    subset_of,
)
from imagenet_prep.cli.download import add_source_arguments, credentials, transfer_options
from imagenet_prep.download import DEFAULT_BASE_URL
from imagenet_prep.errors import PrepError
from imagenet_prep.folders.flatten import MODES
from imagenet_prep.prepare import prepare, summary_lines
from imagenet_prep.runtime import variant
from imagenet_prep.runtime.bucket_outputs import refuse_folder_stages
from imagenet_prep.runtime.files import dataset_lock, ensure_dir
from imagenet_prep.runtime.storage import location
from imagenet_prep.sources.labels import SOURCES
from imagenet_prep.stages import TARGETS, PrepareOptions, roles_used, selected

DESCRIPTION = "run the whole preparation (disk plan, verify, extract, ..., tfrecord); reruns resume"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_archives(p, required=True)
    p.add_argument("--out", type=location, required=True, metavar="DATASET")
    p.add_argument("--only", choices=tuple(TARGETS), default="all",
                   help="pytorch: class trees + flat folders; tensorflow: box CSV + TFRecords")
    p.add_argument("--force", action="store_true", help="run even if the disk plan says no")
    p.add_argument("--verify", choices=("quick", "full", "none"), default="quick",
                   help="check archive sizes (quick), sizes and MD5s (full), or skip")
    p.add_argument("--flatten-mode", choices=MODES, default="hardlink")
    p.add_argument("--labels", choices=SOURCES, default="auto")
    p.add_argument("--train-shards", type=int, default=1024)
    p.add_argument("--val-shards", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="TFRecord shuffle seed")
    p.add_argument("--dali-index", action="store_true")
    p.add_argument("--on-bad-image", choices=("fail", "skip"), default="fail")
    p.add_argument("--wds", action="store_true",
                   help="also write WebDataset shards to DATASET/wds (after --only's stages)")
    p.add_argument("--wds-shard-size", default=None, metavar="SIZE",
                   help="WebDataset shard size, e.g. 500MB, 1GB (default 1GB)")
    p.add_argument("--wds-shard-samples", type=int, default=None, metavar="N",
                   help="WebDataset samples per shard instead of a size")
    p.add_argument("--parquet", action="store_true",
                   help="also write DATASET/parquet (Hugging Face, the Hub's imagenet-1k schema)")
    p.add_argument("--mds", action="store_true",
                   help="also write DATASET/mds (MosaicML streaming shards)")
    p.add_argument("--tfds", action="store_true",
                   help="also write a TensorFlow Datasets data directory to DATASET/tfds "
                        "(imagenet2012 train and validation)")
    p.add_argument("--no-report", action="store_true",
                   help="do not write DATASET/report.html at the end")
    p.add_argument("--download", action="store_true",
                   help="first download the archives missing from --archives (options: "
                        "'with --download' below; see `imagenet-prep download --help`)")
    add_source_arguments(p.add_argument_group("with --download"))
    add_subset_options(p)
    add_workers(p, cluster=True)
    add_json(p)
    add_resize(p)


def prepare_options(args: argparse.Namespace) -> PrepareOptions:
    """The PrepareOptions the command line asks for."""
    from imagenet_prep.shards.order import parse_size

    return PrepareOptions(
        only=args.only, force=args.force, flatten_mode=args.flatten_mode, labels=args.labels,
        train_shards=args.train_shards, val_shards=args.val_shards, seed=args.seed,
        dali_index=args.dali_index, on_bad_image=args.on_bad_image, verify=args.verify,
        wds=args.wds,
        wds_shard_size=parse_size(args.wds_shard_size) if args.wds_shard_size else None,
        wds_shard_samples=args.wds_shard_samples, write_report=not args.no_report,
        parquet=args.parquet, mds=args.mds,
        subset=subset_of(args),
        resize=resize_spec(args),
        tfds=args.tfds,
    )


def run(args: argparse.Namespace) -> int:
    if not args.download and (args.header or args.cookies or args.netrc
                              or args.base_url != DEFAULT_BASE_URL):
        raise PrepError("--base-url, --header, --cookies and --netrc apply with --download")
    opts = prepare_options(args)
    refuse_folder_stages(args.out, (s.name for s in selected(opts)))  # before Dask starts
    args.out = variant.folder_of(args.out, opts.resize)  # a variant is a dataset of its own
    ensure_dir(args.out)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    download = None
    if args.download:
        def download() -> dict:
            from imagenet_prep.download.job import download_archives

            return download_archives(
                args.archives, base_url=args.base_url, roles=roles_used(opts),
                credentials=credentials(args), options=transfer_options(args), log=log,
            )
    with dataset_lock(args.out), open_workers(args, "out") as workers:
        report = prepare(args.archives, args.out, opts, workers=workers, log=log,
                         download=download)
    lines = summary_lines(report)
    if opts.resize is not None and (rec := variant.record(args.out)) is not None:
        lines += variant.variant_lines({"tag": opts.resize.tag, **rec})
    emit(report, args.json, lines)
    return 0
