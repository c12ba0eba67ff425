"""Full-count mode: every stage at ImageNet's real file counts, with tiny images.

    python benchmarks/run.py --full-count [--workers N] [--cache DIR] [--keep]

A replica with the real counts (1000 classes x 1281 training images, 50 validation
images per class, 514k training box XMLs; 32x24 JPEGs, so it fits on a small disk)
is built once (~5 min) into the cache and reused.  The stages then run one by one
through the CLI, in the order `prepare --only all --wds` runs them, each in a fresh
process, followed by `check`: seconds, the largest single process's peak RSS and
its own memory (USS, without the pages a forked worker shares with the main
process), the process tree's summed RSS and its PSS (measure.py says how each is
taken).  `cp -al` of the same class trees is the baseline of `flatten`.
Targets (issue 18): every process <= 256 MB, `flatten` >= 0.5x `cp -al`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import measure
import tables
from replica_cache import ARCHIVES_DIR, ReplicaParams, ensure_replica

FULL_PARAMS = ReplicaParams(classes=1000, train_per_class=1281, val_per_class=50, test=1000,
                            width=32, height=24, bbox_per_class=1)
MAX_PROCESS_RSS = 256e6
FLATTEN_TARGET = 0.5
CLI = [sys.executable, "-m", "imagenet_prep"]


def _steps(archives: Path, ds: Path, workers: int) -> list[tuple[str, list[str]]]:
    """(stage, command) in prepare's order; `check` last."""
    w = ["--workers", str(workers)]
    return [
        ("extract", ["extract", "--archives", str(archives), "--out", str(ds), *w]),
        ("valtree", ["valtree", str(ds), "--archives", str(archives)]),
        ("flatten", ["flatten", str(ds)]),
        ("synsets", ["synsets", str(ds), "--archives", str(archives)]),
        ("bbox", ["bbox", str(ds), *w]),
        ("tfrecord", ["tfrecord", str(ds), "--archives", str(archives), *w]),
        # 9,000 samples a shard: about the 1 GB default at ImageNet's real image size (the
        # tiny images here would otherwise put the whole split in one shard)
        ("wds", ["wds", str(ds), "--archives", str(archives), "--shard-samples", "9000", *w]),
        ("tfds", ["tfds", str(ds), "--archives", str(archives), *w]),
        # likewise: ImageNet's rows a file (500 MB / 110 KB, about 4,500) and samples a
        # shard (64 MiB / 110 KB, about 610) at these images' 1.18 KB mean; at the
        # defaults a worker would hold a catalog of 400,000 rows, which no real run does
        ("parquet", ["parquet", str(ds), "--archives", str(archives), "--shard-size", "5.4MB",
                     *w]),
        ("mds", ["mds", str(ds), "--archives", str(archives), "--shard-size", "720KB", *w]),
        ("check", ["check", str(ds), *w]),
    ]


STEPS = ("extract", "valtree", "flatten", "synsets", "bbox", "tfrecord", "wds", "tfds",
         "parquet", "mds", "check")


def run_full_count(a: argparse.Namespace) -> dict[str, Any]:
    replica = ensure_replica(FULL_PARAMS, a.cache, a.workers)
    archives = replica.root / ARCHIVES_DIR
    work = a.cache / f"full-{os.getpid()}"
    ds = work / "dataset"
    rows: list[dict[str, Any]] = []
    try:
        work.mkdir(parents=True)
        chosen = set(STEPS if a.full_count_steps == "all" else a.full_count_steps.split(","))
        for stage, args in _steps(archives, ds, a.workers):
            if stage not in chosen:
                continue
            s = measure.run([*CLI, *args])
            rows.append({"stage": stage, "seconds": s.seconds, "max_rss": s.max_rss,
                         "tree_rss": s.tree_rss, "max_own": s.max_own, "tree_pss": s.tree_pss})
            print(f"  {stage:<9} {s.seconds:8.1f} s  largest process "
                  f"{tables._mb(s.max_rss):>8} (own {tables._mb(s.max_own)})  tree "
                  f"{tables._mb(s.tree_rss):>8} (PSS {tables._mb(s.tree_pss)})", flush=True)
        copy = work / "cp-al"
        # the baseline of flatten, which needs the trees extract writes
        base = measure.run("true") if "extract" not in chosen else measure.run(
            f"cp -al {ds / 'train'} {copy}-train && cp -al {ds / 'val'} {copy}-val")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    flat = next((r for r in rows if r["stage"] == "flatten"), None)
    largest = max(rows, key=lambda r: r["max_rss"])
    ratio = base.seconds / flat["seconds"] if flat else float("nan")
    counts = replica.facts["counts"]
    lines = ["", "=" * 100,
             f"== full count: {counts['train']:,} train, {counts['val']:,} val, "
             f"{counts['test']:,} test images, {counts['bbox_train']:,} box XMLs "
             f"({FULL_PARAMS.width}x{FULL_PARAMS.height} JPEGs), --workers {a.workers}",
             f"   {'stage':<10} {'seconds':>8} {'largest process':>16} {'its own':>8} "
             f"{'process tree':>13} {'tree PSS':>9}"]
    lines += [f"   {r['stage']:<10} {r['seconds']:8.1f} {tables._mb(r['max_rss']):>16} "
              f"{tables._mb(r['max_own']):>8} {tables._mb(r['tree_rss']):>13} "
              f"{tables._mb(r['tree_pss']):>9}" for r in rows]
    prep = sum(r["seconds"] for r in rows if r["stage"] != "check")
    lines.append(f"   {'prepare':<10} {prep:8.1f}   (sum of the stages above but check)")
    lines.append(f"   baseline: cp -al of train/ and val/: {base.seconds:.1f} s")
    rss_ok = largest["max_rss"] <= MAX_PROCESS_RSS
    lines.append(f"   target: every process <= 256 MB: {largest['max_rss'] / 1e6:.0f} MB in "
                 f"{largest['stage']} {'PASS' if rss_ok else 'MISS'}")
    lines.append(f"   target: flatten >= 0.5x cp -al: {ratio:.2f}x "
                 f"{'PASS' if ratio >= FLATTEN_TARGET else 'MISS'}")
    print("\n".join(lines))
    return {"counts": counts, "rows": rows, "cp_al_seconds": base.seconds,
            "targets": {"max_rss": largest["max_rss"], "rss_holds": rss_ok, "flatten_ratio": ratio,
                        "flatten_holds": ratio >= FLATTEN_TARGET}}
