"""Archives in object storage (issue 17): tfrecord reading s3:// archives from a local S3
server on loopback, against copying the same bytes with fsspec from the same server in
the same run; then, behind a proxy that adds a fixed latency to every request, images/s
against the number of concurrent requests, extrapolated to full ImageNet.

    python benchmarks/object_storage.py [--server auto|s3rver|moto] [--scale 0.1]
                                        [--repeat 3] [--workers 1] [--latency-ms 20]
                                        [--concurrency 1,4,16,64] [--probe-only]

The server is s3rver when installed (`npm install --prefix benchmarks/.tools
s3rver@3.7.1`): it serves a range at the range's cost.  moto's server, the fallback,
reads the whole object for every ranged GET, so no client can be fast against it; the
benchmark prints which server it used and what a 64 KiB ranged GET costs on it against
the object's size.

Two directions: into a local folder, against `fs.get` of the train and val
archives (every byte tfrecord reads); and into the bucket (s3:// -> s3://), against
the same `fs.get` followed by `fs.put` of those bytes back to the server.  The first
tfrecord run builds the archive indexes (its requests are shown); the timed runs reuse
them, as reruns do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from latency_proxy import start_proxy
from replica_cache import ReplicaParams, ensure_replica
from s3_servers import S3Server, ranged_get_ms, start_server

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
FULL_IMAGES = 1_331_167  # ILSVRC2012 train + val
BUCKET = "bench"
ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def env_for(server: S3Server, endpoint: str, cache: Path, concurrency: int | None = None
            ) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=server.key, AWS_SECRET_ACCESS_KEY=server.secret,
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
               AWS_ENDPOINT_URL=endpoint, IMAGENET_PREP_CACHE=str(cache),
               PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    if concurrency is not None:
        env["IMAGENET_PREP_CONCURRENCY"] = str(concurrency)
    return env


def tfrecord(server: S3Server, out: Path | str, env: dict[str, str], shards: list[str],
             workers: int) -> tuple[float, dict[str, Any]]:
    """One tfrecord run into `out`: a local folder, or an s3:// prefix (emptied first)."""
    if isinstance(out, Path):
        shutil.rmtree(out, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            server.fs().rm(out.removeprefix("s3://"), recursive=True)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "imagenet_prep", "tfrecord", str(out),
                           "--archives", f"s3://{BUCKET}/archives", *shards, "--workers",
                           str(workers), "--json"], capture_output=True, text=True, env=env)
    seconds = time.monotonic() - t0
    if proc.returncode:
        sys.exit(f"tfrecord failed: {proc.stderr.strip()}")
    return seconds, json.loads(proc.stdout)["run"]


# the copy, as a command of its own (interpreter start and s3fs import included, as in a
# tfrecord run): `python -c COPY SRC... DST` fetches objects into a local folder, and with
# a last argument s3://... also writes the files back there
COPY = """
import sys, fsspec
fs = fsspec.filesystem("s3")
*src, dst, back = sys.argv[1:]
fs.get(src, dst + "/")
if back:
    fs.put([dst + "/" + s.rsplit("/", 1)[1] for s in src], back + "/")
"""


def fsspec_copy(env: dict[str, str], out: Path, back: str = "") -> float:
    """The same bytes tfrecord reads, fetched with fsspec (s3fs) into local files (and
    with `back`, written back to the server under that prefix), as one command."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", COPY, *(f"{BUCKET}/archives/{n}" for n in ARCHIVES),
                    str(out), back], check=True, env=env)
    return time.monotonic() - t0


def fsspec_copy_here(server: S3Server, out: Path) -> float:
    """The same fetch inside this process, s3fs already imported (shown, not compared)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    fs = server.fs()
    t0 = time.monotonic()
    fs.get([f"{BUCKET}/archives/{n}" for n in ARCHIVES], str(out) + "/")
    return time.monotonic() - t0


def fsspec_copy_back(server: S3Server, env: dict[str, str], out: Path) -> float:
    """The same bytes fetched with fsspec and written back to the server as objects."""
    with contextlib.suppress(FileNotFoundError):
        server.fs().rm(f"{BUCKET}/copy", recursive=True)
    return fsspec_copy(env, out, f"{BUCKET}/copy")


def _row(label: str, seconds: float, images: int, nbytes: int, ratio: str) -> str:
    return (f"{label:<44} {seconds:7.2f} {images / seconds:9.0f} "
            f"{nbytes / 1e6 / seconds:7.1f} {ratio}")


def _verdict(ratio: float) -> str:
    return "PASS" if ratio >= 0.5 else "MISS"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=("auto", "s3rver", "moto"), default="auto",
                    help="the S3 server (auto: s3rver when installed, else moto)")
    ap.add_argument("--scale", type=float, default=0.1,
                    help="replica size against benchmarks/run.py's (default 0.1: 1,800 images)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1,
                    help="tfrecord's --workers (default 1: the server runs on this machine "
                         "too and needs a core, and the copy is one process)")
    ap.add_argument("--probe-only", action="store_true",
                    help="start the server, print what a ranged GET costs on it, stop")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--concurrency", default="1,4,16,64",
                    help="requests in flight per worker behind the proxy ('' skips the rows)")
    ap.add_argument("--cache", type=Path, default=HERE / "out")
    a = ap.parse_args()
    replica = ensure_replica(ReplicaParams.scaled(a.scale), a.cache, a.workers)
    images = replica.train_images + replica.val_images
    nbytes = replica.input_bytes
    shards = ["--train-shards", str(max(2, round(replica.train_images / 1251))),
              "--val-shards", str(max(2, round(replica.val_images / 391)))]
    work = Path(tempfile.mkdtemp(prefix="imagenet-prep-s3bench-"))
    server = start_server(a.server, work)
    try:
        print(f"server: {server.name} at {server.endpoint}")
        for note in server.notes:
            print(f"  note: {note}")
        fs = server.fs()
        fs.mkdir(BUCKET)
        probe = ranged_get_ms(server, BUCKET)
        print("  a 64 KiB ranged GET, one at a time: " + ", ".join(
            f"{ms:.1f} ms on a {mib} MiB object" for mib, ms in probe))
        if a.probe_only:
            return
        fs.put(f"{replica.archives}/", f"{BUCKET}/archives/", recursive=True)
        cache = work / "index-cache"
        env = env_for(server, server.endpoint, cache)
        first, run = tfrecord(server, work / "ds", env, shards, a.workers)
        print(f"replica: {images:,} images, {nbytes / 1e6:.0f} MB; first run (builds the "
              f"indexes) {first:.1f} s; per image: {run.get('requests', 0) / images:.2f} "
              f"requests, {run.get('read_bytes', 0) / images / 1e3:.1f} kB; --workers "
              f"{a.workers}")
        ours, copy, ours_s3, copy_s3, here = [], [], [], [], []
        out_url = f"s3://{BUCKET}/out"
        for _ in range(a.repeat):  # alternating, as benchmarks/run.py does
            ours.append(tfrecord(server, work / "ds", env, shards, a.workers)[0])
            copy.append(fsspec_copy(env, work / "copy"))
            ours_s3.append(tfrecord(server, out_url, env, shards, a.workers)[0])
            copy_s3.append(fsspec_copy_back(server, env, work / "copy"))
            here.append(fsspec_copy_here(server, work / "copy"))
        o, c = statistics.median(ours), statistics.median(copy)
        o3, c3 = statistics.median(ours_s3), statistics.median(copy_s3)
        print(f"\n{'contender (median of ' + str(a.repeat) + ')':<44} {'s':>7} "
              f"{'images/s':>9} {'MB/s':>7} {'vs copy':>8}")
        print(_row("tfrecord s3:// -> local (ours)", o, images, nbytes, f"{c / o:7.2f}x"))
        print(_row("fsspec copy of the same bytes -> local", c, images, nbytes, f"{1:7.2f}x"))
        print(_row("tfrecord s3:// -> s3:// (ours)", o3, images, nbytes,
                   f"{c3 / o3:7.2f}x (against the copy back)"))
        print(_row("fsspec copy of the same bytes -> s3://", c3, images, nbytes,
                   f"{1:7.2f}x"))
        print("runs (s): " + "; ".join(
            f"{name} {' '.join(f'{x:.2f}' for x in xs)}" for name, xs in
            (("s3->local", ours), ("copy", copy), ("s3->s3", ours_s3),
             ("copy back", copy_s3), ("copy -> local inside this process", here))))
        print(f"target: tfrecord >= 0.5x the fsspec copy: to local {_verdict(c / o)}, "
              f"s3 -> s3 {_verdict(c3 / o3)}")
        levels = [int(x) for x in a.concurrency.split(",") if x]
        if levels:
            latency_rows(server, a, levels, work, shards, images, cache)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def latency_rows(server: S3Server, a: argparse.Namespace, levels: list[int], work: Path,
                 shards: list[str], images: int, cache: Path) -> None:
    """images/s through the delaying proxy against requests in flight per worker; the
    proxy with no delay at the highest level shows what the proxy itself costs.  The
    full-dataset figure scales the shard-writing phase (`run.write_seconds`: what grows
    with the images), not the command's start (interpreter, imports, index load)."""
    print(f"\nwith {a.latency_ms:g} ms added to every request (a proxy in its own "
          f"process), tfrecord s3:// -> local, --workers {a.workers}:")
    print(f"{'requests per worker':>20} {'added ms':>9} {'command s':>10} {'write s':>8} "
          f"{'images/s':>9} {'full ImageNet':>14}")
    for delay, level in [(a.latency_ms, n) for n in levels] + [(0.0, max(levels))]:
        proxy, url = start_proxy(server.endpoint, delay)
        try:
            s, run = tfrecord(server, work / "ds", env_for(server, url, cache, level), shards,
                              a.workers)
        finally:
            proxy.terminate()
            proxy.wait()
        rate = images / run["write_seconds"]
        print(f"{level:>20} {delay:9g} {s:10.2f} {run['write_seconds']:8.2f} {rate:9.0f} "
              f"{FULL_IMAGES / rate / 3600:11.1f} h")


if __name__ == "__main__":
    main()
