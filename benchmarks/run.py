"""Throughput of imagenet-prep against baselines measured in the same run.

    python benchmarks/run.py [--classes 20] [--train-per-class 100] [--workers 2]

Builds a replica at the real image size (500x375, ~110 KB per JPEG), then times:
  extract      ours (one pass, inner tars read in place)
               vs GNU tar's two steps (outer archive, then every inner tar, then rm)
  tfrecord     ours from the archives and from extracted folders
               vs `cat` of the same input bytes to /dev/null (reading only) and
               to a file followed by `sync` (copying the bytes, as the shards do)
Prints a table of seconds, MB/s, images/s and the ratio to the baseline.
Everything runs from the page cache after a warm-up read, so the figures compare
CPU and syscall cost, not the disk.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from imagenet_prep.replica import make_replica

TRAIN = "ILSVRC2012_img_train.tar"
VAL = "ILSVRC2012_img_val.tar"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cli(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "imagenet_prep", *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL)


def gnu_tar_two_step(archive: Path, out: Path) -> None:
    out.mkdir(parents=True)
    subprocess.run(["tar", "xf", str(archive), "-C", str(out)], check=True)
    for inner in sorted(out.glob("*.tar")):
        d = out / inner.stem
        d.mkdir()
        subprocess.run(["tar", "xf", str(inner), "-C", str(d)], check=True)
        inner.unlink()


def cat(*paths: Path) -> None:
    subprocess.run(["cat", *map(str, paths)], check=True, stdout=subprocess.DEVNULL)


def count_images(archive: Path) -> int:
    n = 0
    with tarfile.open(archive) as outer:
        for m in outer:
            with tarfile.open(fileobj=outer.extractfile(m)) as inner:
                n += len(inner.getnames())
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--train-per-class", type=int, default=100)
    ap.add_argument("--val-per-class", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    a = ap.parse_args()
    work = Path(a.dir or tempfile.mkdtemp(prefix="imagenet-prep-bench-"))
    arch = work / "archives"
    if not (arch / TRAIN).exists():
        make_replica(arch, classes=a.classes, train_per_class=a.train_per_class,
                     val_per_class=a.val_per_class, test=10, seed=1, workers=a.workers)
    train_bytes = (arch / TRAIN).stat().st_size
    val_bytes = (arch / VAL).stat().st_size
    n_train = count_images(arch / TRAIN)
    with tarfile.open(arch / VAL) as tf:
        n_val = len(tf.getnames())
    cat(arch / TRAIN, arch / VAL)  # warm the page cache for every contender
    rows = []

    def run(name: str, fn, nbytes: int, nimg: int, base: str | None = None) -> None:
        best = min(timed(fn) for _ in range(2)) if "cat" in name else timed(fn)
        rows.append((name, best, nbytes / 1e6 / best, nimg / best, base))

    ds = work / "ds"

    def ours_extract() -> None:
        shutil.rmtree(ds, ignore_errors=True)
        cli("extract", "--archives", arch, "--out", ds, "--splits", "train",
            "--workers", a.workers)

    def tar_extract() -> None:
        shutil.rmtree(work / "gnu", ignore_errors=True)
        gnu_tar_two_step(arch / TRAIN, work / "gnu")

    run("extract train: GNU tar two-step", tar_extract, train_bytes, n_train)
    run("extract train: imagenet-prep", ours_extract, train_bytes, n_train,
        "extract train: GNU tar two-step")
    shutil.rmtree(work / "gnu", ignore_errors=True)

    have_tfrecord = True
    try:
        import imagenet_prep.sinks.tfrecord  # noqa: F401
    except ImportError:
        have_tfrecord = False
    if have_tfrecord:
        cli("extract", "--archives", arch, "--out", ds, "--workers", a.workers)
        cli("valtree", ds, "--archives", arch)
        cli("bbox", ds, "--archives", arch)

        def tf_from(route: str) -> None:
            for sub in ("tfrecord_train", "tfrecord_val"):
                shutil.rmtree(ds / sub, ignore_errors=True)
            (ds / ".imagenet-prep" / "tfrecord.json").unlink(missing_ok=True)
            extra = ["--from-folders"] if route == "folders" else ["--archives", arch]
            cli("tfrecord", ds, *extra, "--train-shards", 16, "--val-shards", 4,
                "--workers", a.workers)

        nbytes, nimg = train_bytes + val_bytes, n_train + n_val
        copy_out = work / "copy.bin"

        def copy_input() -> None:
            subprocess.run(f"cat {arch / TRAIN} {arch / VAL} > {copy_out} && sync {copy_out}",
                           shell=True, check=True)
            copy_out.unlink()

        run("read input: cat > /dev/null", lambda: cat(arch / TRAIN, arch / VAL), nbytes, nimg)
        run("copy input: cat > file; sync", copy_input, nbytes, nimg)
        for route in ("archives", "folders"):
            run(f"tfrecord from {route}", lambda r=route: tf_from(r), nbytes, nimg,
                "copy input: cat > file; sync")

    secs = {r[0]: r[1] for r in rows}
    print(f"\nreplica: {n_train} train + {n_val} val images, {train_bytes / 1e6:.0f} MB train "
          f"archive, avg {train_bytes / n_train / 1e3:.0f} KB/image, workers {a.workers}\n")
    print(f"{'task':<34} {'s':>7} {'MB/s':>8} {'img/s':>8}  ratio")
    for name, s, mbs, ips, base in rows:
        ratio = f"{secs[base] / s:5.2f}x the speed of {base}" if base else "(baseline)"
        print(f"{name:<34} {s:7.2f} {mbs:8.0f} {ips:8.0f}  {ratio}")
    if a.dir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
