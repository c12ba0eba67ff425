"""`imagenet-prep fake`: write a small synthetic replica of the six official archives.

Real ImageNet is not needed to try the tool or to test it: the replica has the
same layout and the same known quirks (see imagenet_prep.replica.build).
"""

from __future__ import annotations

import argparse
import re
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from imagenet_prep.cli.common import add_workers
from imagenet_prep.errors import WorkerDiedError, os_error
from imagenet_prep.replica.build import (
    DEFAULT_CLASSES,
    DEFAULT_SIZE,
    DEFAULT_TEST,
    DEFAULT_TRAIN_PER_CLASS,
    DEFAULT_VAL_PER_CLASS,
    REPLICA_JSON,
    make_replica,
)
from imagenet_prep.runtime.pool import WORKER_DIED, check_workers

DESCRIPTION = "write a synthetic replica of the six ILSVRC2012 archives (for trying and testing)"


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 500x375, not {text!r}")
    return int(m.group(1)), int(m.group(2))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="folder to write the archives, MD5SUMS, SIZES and replica.json into")
    p.add_argument("--classes", type=int, default=DEFAULT_CLASSES, metavar="N",
                   help="number of classes: the first N of the 1000 sorted WNIDs "
                        "(default %(default)s)")
    p.add_argument("--train-per-class", type=int, default=DEFAULT_TRAIN_PER_CLASS, metavar="K",
                   help="average training images per class; each class varies by up to "
                        "30%% (default %(default)s)")
    p.add_argument("--val-per-class", type=int, default=DEFAULT_VAL_PER_CLASS, metavar="V",
                   help="validation images per class, exactly (default %(default)s)")
    p.add_argument("--test", type=int, default=DEFAULT_TEST, metavar="T",
                   help="number of test images (default %(default)s)")
    p.add_argument("--size", type=_size, default=DEFAULT_SIZE, metavar="WxH",
                   help="typical image size; some images are portrait or narrower "
                        "(default 500x375, the most common ImageNet size)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--wnids", metavar="NAME|FILE", default=None,
                   help="these classes instead of the first N: a class list of --classes in "
                        "`prepare` (imagenet100, imagenette, imagewoof) or a file of WNIDs")
    p.add_argument("--train-files", metavar="NAME|FILE", default=None,
                   help="also hold these training files of the replica's classes: a training "
                        "subset (1pct, 10pct) or a file of names, so subset runs find them")
    add_workers(p)


def run(args: argparse.Namespace) -> int:
    check_workers(args.workers)
    from imagenet_prep.sources.subset import read_classes, read_train

    wnids = read_classes(args.wnids)[1] if args.wnids else None
    train_files = read_train(args.train_files)[1] if args.train_files else ()
    try:
        info = make_replica(
            args.out, classes=args.classes, train_per_class=args.train_per_class,
            val_per_class=args.val_per_class, test=args.test, size=args.size, seed=args.seed,
            workers=args.workers, wnids=wnids, train_files=train_files,
        )
    except BrokenProcessPool:  # its image pool (replica.build's own) lost a worker
        raise WorkerDiedError(WORKER_DIED) from None
    except OSError as e:  # a full disk mid-way (the archive being written is removed)
        raise os_error(e.filename or args.out, e) from None
    total = sum(a.size for a in info.archives.values())
    rate = info.images / info.seconds if info.seconds > 0 else 0.0
    print(f"wrote {len(info.archives)} archives ({total / 1e6:.1f} MB) to {info.out}")
    print(f"  {len(info.wnids)} classes; {info.train_images} train, {info.val_images} val, "
          f"{info.test_images} test images; {info.bbox_train_files} train and "
          f"{info.bbox_val_files} val box files")
    print(f"  {info.images} images in {info.seconds:.1f} s ({rate:.0f} images/s)")
    print(f"  quirks and parameters: {info.out / REPLICA_JSON}")
    return 0
