"""Time every imagenet-prep stage against baselines measured in the same run.

    python benchmarks/run.py [--scale F] [--repeat N] [--tmpfs] [--cold] [--stages a,b]
    python benchmarks/run.py --scaling [--scaling-sizes 5000,20000,50000] [--tmpfs]
    python benchmarks/run.py --full-count   (every stage at ImageNet's real counts: full_count.py)
    python benchmarks/run.py --resize       (resized variants against plain Pillow: resize_bench.py)

A replica at the real image size (500x375, ~110 KB JPEGs; by default 100 classes,
130 train and 50 val images per class: 18,000 images, 2 GB) is built once into
benchmarks/out/replica-<hash>/ and reused.  Each stage runs through the real CLI
in a fresh process, alternating with its baselines (A B A B ...), with the page
cache warmed by a `cat` of each contender's inputs before every run (or dropped,
with --cold); a figure is the median of --repeat runs.  --tmpfs runs everything in
/dev/shm, where writes do not slow down over back-to-back runs.

Prints a table per stage (seconds, items/s, MB/s, peak RSS of the process tree
and of its largest process, speed against the stage's baseline, the targets of
issue 6 with PASS/MISS) and the extrapolation to full ImageNet, and writes all of
it with every sample to benchmarks/out/results-<timestamp>.json (or --json PATH).

--scaling times `extract` and `tfrecord` at three replica sizes instead and
reports seconds per 1000 images and peak RSS at each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness
import measure
import stages
import tables
from replica_cache import Replica, ReplicaParams, ensure_replica

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SHM = Path("/dev/shm")
MAX_RSS = 512e6
FULL_IMAGES = {"extract": 1_431_167, "tfrecord": 1_331_167}  # ILSVRC2012 train+val(+test)
SCALING_SPREAD = 0.20


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply the replica's per-class counts (default 1: 18,000 images)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per contender (median)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                    help="worker processes for ours and the pooled baselines")
    ap.add_argument("--stages", default=",".join(stages.STAGES),
                    help=f"comma-separated subset of {','.join(stages.STAGES)}")
    ap.add_argument("--tmpfs", action="store_true",
                    help="run in a RAM-backed folder (/dev/shm): stable figures")
    ap.add_argument("--cold", action="store_true",
                    help="drop the page cache before every run (needs root)")
    ap.add_argument("--scaling", action="store_true",
                    help="extract and tfrecord at three sizes instead of the stage tables")
    ap.add_argument("--full-count", action="store_true",
                    help="every stage and check at ImageNet's real file counts (tiny images)")
    ap.add_argument("--full-count-steps", default="all", metavar="a,b",
                    help="with --full-count: only these steps (parquet, mds, tfrecord, wds and "
                         "tfds need only the archives; the others need the steps before them)")
    ap.add_argument("--scaling-sizes", default="5000,20000,50000",
                    help="train+val images of the scaling replicas")
    ap.add_argument("--cache", type=Path, default=OUT, help="where replicas are kept")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--resize", action="store_true",
                    help="resized variants: our resize against plain Pillow (resize_bench.py)")
    ap.add_argument("--resize-images", type=int, default=200, metavar="N",
                    help="images per kind for --resize")
    a = ap.parse_args()
    unknown = set(a.stages.split(",")) - set(stages.STAGES)
    if unknown:
        ap.error(f"unknown stage {sorted(unknown)[0]!r}")
    if a.cold and not harness.drop_caches_works():
        ap.error("--cold: cannot write /proc/sys/vm/drop_caches here (needs root, not a "
                 "container); use the default warm cache or --tmpfs")
    if a.cold and a.tmpfs:
        ap.error("--cold and --tmpfs exclude each other (tmpfs is RAM)")
    return a


def _environment(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    def first(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "?"

    commit = first(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "time": time.strftime("%Y-%m-%d %H:%M:%S %z"), "host": platform.node(),
        "cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
        "kernel": platform.release(), "commit": commit + ("+changes" if dirty else ""),
        "work": str(work), "fs": first(["stat", "-f", "-c", "%T", str(work)]),
        "tmpfs": a.tmpfs, "cold": a.cold,
        "repeat": a.repeat, "workers": a.workers, "load_before": os.getloadavg(),
        "cpu": first(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]).strip(),
    }


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _work_dir(a: argparse.Namespace, need: int) -> Path:
    if a.tmpfs:
        free = min(shutil.disk_usage(SHM).free, _mem_available())
        if free < need:
            sys.exit(f"--tmpfs: {SHM} and RAM have {free / 1e9:.1f} GB free, this run needs "
                     f"about {need / 1e9:.1f} GB; use a smaller --scale or run without --tmpfs")
        return SHM / f"imagenet-prep-bench-{os.getpid()}"
    return a.cache / f"work-{os.getpid()}"


def _place(replica: Replica, work: Path, tmpfs: bool) -> tuple[Path, Path]:
    """(archives, box archive folder) for this run: copies in RAM under --tmpfs."""
    if not tmpfs:
        return replica.archives, replica.bbox_archives
    arch, box = work / "archives", work / "bbox-archive"
    shutil.copytree(replica.archives, arch)
    shutil.copytree(replica.bbox_archives, box)
    return arch, box


def _ctx(replica: Replica, work: Path, a: argparse.Namespace) -> stages.Ctx:
    arch, box = _place(replica, work, a.tmpfs)
    # the reference's shard sizes: ~1251 train and ~391 val images per shard
    ctx = stages.Ctx(work=work, replica=replica, archives=arch, bbox_archives=box,
                     workers=a.workers,
                     train_shards=max(2, round(replica.train_images / 1251)),
                     val_shards=max(2, round(replica.val_images / 391)))
    measure.run(ctx.cli("--help"))  # warm-up: bytecode and shared libraries in the cache
    # the smallest of five: the part of each figure that is surely start-up, no more
    ctx.startup = min(measure.run(ctx.cli("--help")).seconds for _ in range(5))
    return ctx


def _header(replica: Replica, ctx: stages.Ctx, env: dict[str, Any]) -> list[str]:
    f = replica.facts["counts"]
    mean = replica.archive_bytes("ILSVRC2012_img_train.tar") / max(1, f["train"])
    return [
        f"replica {replica.root.name}: {f['train']:,} train, {f['val']:,} val, {f['test']:,} "
        f"test images ({mean / 1e3:.0f} KB mean), {f['bbox_train']:,} train box XMLs; "
        f"box archive for `bbox`: {f['bbox_scaled']:,} XMLs",
        f"machine: {env['cpus']} cores ({env['cpu']}), Python {env['python']}, "
        f"{'tmpfs' if env['tmpfs'] else env['fs']} at {env['work']}, "
        f"{'cold' if env['cold'] else 'warm'} page cache, median of {env['repeat']}, "
        f"--workers {ctx.workers}; load average before: "
        + " ".join(f"{x:.2f}" for x in env["load_before"]),
        f"CLI start-up (`imagenet-prep --help`, fastest of 5): {ctx.startup:.2f} s, in every "
        "imagenet-prep figure; targets are judged net of it (a constant that does not grow "
        "with the data), both ratios shown",
        "'peak RSS': sampled peak of the whole process tree's summed RSS (shared pages "
        "counted per process); '1 proc': exact peak of its largest single process; "
        "* = imagenet-prep",
    ]


def _output_sizes(ctx: stages.Ctx) -> dict[str, int]:
    base = ctx.base
    return {
        "extract": stages.disk_bytes(*(base / d for d in stages.SPLIT_DIRS)),
        "tfrecord": stages.disk_bytes(base / "tfrecord_train", base / "tfrecord_val"),
        "bbox": (base / "imagenet_2012_bounding_boxes.csv").stat().st_size,
    }


def run_stages(a: argparse.Namespace) -> dict[str, Any]:
    params = ReplicaParams.scaled(a.scale)
    replica = ensure_replica(params, a.cache, a.workers)
    total = sum(replica.facts["archives"].values())
    work = _work_dir(a, need=int(total * 4.5))
    work.mkdir(parents=True, exist_ok=True)
    env = _environment(a, work)
    try:
        ctx = _ctx(replica, work, a)
        chosen = a.stages.split(",")
        sizes: dict[str, int] = {}
        if set(chosen) - {"startup", "verify", "prepare", "subset", *stages.HF_STAGES}:
            stages.build_base(ctx)  # the others start from it
            sizes = _output_sizes(ctx)
        print("\n".join(_header(replica, ctx, env)))
        all_results: dict[str, dict[str, harness.Result]] = {}
        env["startup_seconds"] = round(ctx.startup, 3)
        doc: dict[str, Any] = {"environment": env, "replica": replica.facts, "stages": {}}
        printed: list[str] = []
        for name in chosen:
            stage = stages.STAGES[name](ctx)
            print(f"\n-- {name}")
            results = harness.run_stage(stage, a.repeat, cold=a.cold, tmpfs=a.tmpfs)
            all_results[name] = results
            lines = tables.stage_table(stage, results)
            printed += ["", *lines]
            print("\n".join(lines))
            doc["stages"][name] = tables.stage_json(stage, results)
        c = replica.facts["counts"]
        counts = {"train": c["train"], "val": c["val"], "test": c["test"],
                  "xml": c["bbox_scaled"]}
        arch = {"train": replica.archive_bytes("ILSVRC2012_img_train.tar"),
                "val": replica.archive_bytes("ILSVRC2012_img_val.tar"),
                "test": replica.archive_bytes("ILSVRC2012_img_test.tar"),
                "small": total - replica.input_bytes
                - replica.archive_bytes("ILSVRC2012_img_test.tar")}
        if "bbox" in sizes:
            sizes["bbox"] = sizes["bbox"] * c["bbox_scaled"] // max(1, c["bbox_train"])
        rows = tables.extrapolate(all_results, counts, arch, sizes)
        doc["extrapolation"] = rows
        doc["environment"]["load_after"] = os.getloadavg()
        summary = ["", "=" * 100, *_header(replica, ctx, env), *printed, "",
                   *tables.extrapolation_table(rows),
                   "   load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg())]
        print("\n".join(summary))
        return doc
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


def run_scaling(a: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in a.scaling_sizes.split(",") if s]
    doc: dict[str, Any] = {"sizes": {}}
    rows = []
    replicas = [ensure_replica(ReplicaParams.for_images(n), a.cache, a.workers) for n in sizes]
    env: dict[str, Any] = {}
    for n, replica in zip(sizes, replicas, strict=True):
        total = sum(replica.facts["archives"].values())
        work = _work_dir(a, need=int(total * 2.3))  # archives, one output, headroom
        work.mkdir(parents=True, exist_ok=True)
        env = env or _environment(a, work)
        try:
            ctx = _ctx(replica, work, a)
            stages.build_base(ctx, full=False)
            images = {"extract": replica.images,
                      "tfrecord": replica.train_images + replica.val_images}
            print(f"\n-- {n:,} images: {replica.root.name} ({replica.images:,} images)")
            for name in ("extract", "tfrecord"):
                stage = stages.STAGES[name](ctx)
                stage.contenders = [c for c in stage.contenders if c.key == "ours"]
                res = harness.run_stage(stage, a.repeat, cold=a.cold, tmpfs=a.tmpfs)["ours"]
                if not res.samples:
                    continue
                net = max(1e-3, res.seconds - ctx.startup)
                row = {"stage": name, "size": n, "images": images[name],
                       "seconds": res.seconds, "startup": ctx.startup,
                       "s_per_1000": res.seconds * 1000 / images[name],
                       "s_per_1000_net": net * 1000 / images[name],
                       "tree_rss": res.tree_rss, "max_rss": res.max_rss,
                       "runs": [s.seconds for s in res.samples]}
                rows.append(row)
        finally:
            if not a.keep:
                shutil.rmtree(work, ignore_errors=True)
    lines = ["", "=" * 100, "== scaling: seconds per 1000 images and peak RSS at each size",
             f"   machine: {env.get('cpus')} cores, {'tmpfs' if a.tmpfs else env.get('fs')}, "
             f"median of {a.repeat}, --workers {a.workers}",
             "   s/1000 net: without the CLI start-up (fastest `--help` of 5 at that size), "
             "the part that grows with the data",
             f"   {'stage':<10} {'images':>8} {'s':>8} {'s/1000':>8} {'s/1000 net':>10} "
             f"{'peak RSS':>9} {'1 proc':>8}"]
    for r in rows:
        lines.append(f"   {r['stage']:<10} {r['images']:>8,} {r['seconds']:8.2f} "
                     f"{r['s_per_1000']:8.3f} {r['s_per_1000_net']:10.3f} "
                     f"{tables._mb(r['tree_rss']):>9} {tables._mb(r['max_rss']):>8}")
    verdicts = []
    for name in ("extract", "tfrecord"):
        mine = [r for r in rows if r["stage"] == name]
        if len(mine) < 2:
            continue
        per = [r["s_per_1000_net"] for r in mine]
        mean = sum(per) / len(per)
        spread = max(abs(p / mean - 1) for p in per)
        wall = [r["s_per_1000"] for r in mine]
        wall_spread = max(abs(p / (sum(wall) / len(wall)) - 1) for p in wall)
        peak = max(max(r["tree_rss"] or 0, r["max_rss"]) for r in mine)
        verdicts.append({"stage": name, "spread_net": spread, "spread_wall": wall_spread,
                         "peak_rss": peak, "spread_holds": spread <= SCALING_SPREAD,
                         "rss_holds": peak <= MAX_RSS})
        lines.append(f"   target: {name} s/1000 images within ±20% of their mean: "
                     f"{wall_spread * 100:.0f}% wall, {spread * 100:.0f}% net of start-up "
                     f"{'PASS' if spread <= SCALING_SPREAD else 'MISS'}")
        lines.append(f"   target: {name} peak RSS <= 512 MB at every size: {peak / 1e6:.0f} MB "
                     f"{'PASS' if peak <= MAX_RSS else 'MISS'}")
        # memory grows with the index: the line through the smallest and largest size
        first, last = mine[0], mine[-1]
        full = FULL_IMAGES[name]
        for key, what in (("max_rss", "largest process"), ("tree_rss", "process tree")):
            a, b = first[key] or 0, last[key] or 0
            if a and b and last["images"] > first["images"]:
                per = (b - a) / (last["images"] - first["images"])
                at_full = b + per * (full - last["images"])
                verdicts[-1][f"{key}_bytes_per_image"] = round(per, 1)
                verdicts[-1][f"{key}_at_full"] = round(at_full)
                lines.append(f"   note: {name} {what}: {per:,.0f} bytes more per image; "
                             f"{at_full / 1e6:,.0f} MB extrapolated to {full:,} images")
    lines.append("   load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print("\n".join(lines))
    doc.update(environment=env, rows=rows, targets=verdicts)
    return doc


def main() -> None:
    a = _args()
    a.cache.mkdir(parents=True, exist_ok=True)
    if a.full_count:
        from full_count import run_full_count

        doc, kind = run_full_count(a), "full-count-"
    elif a.resize:
        from resize_bench import run_resize

        doc, kind = run_resize(a.resize_images, a.repeat), "resize-"
    else:
        doc, kind = (run_scaling(a), "scaling-") if a.scaling else (run_stages(a), "")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = [a.cache / f"results-{kind}{stamp}.json"]
    if a.json:
        paths.append(a.json)
    for p in paths:
        p.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"\nresults: {', '.join(map(str, paths))}")


if __name__ == "__main__":
    main()
