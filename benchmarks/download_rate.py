"""Download rate from a loopback HTTP server with 1 and N connections, against curl.

    python benchmarks/download_rate.py [--src DIR | --classes 20 --train-per-class 100]
                                       [--connections 1,4] [--repeat 3] [--limit MB/S]

Builds a replica at the real image size (a few hundred MB) unless --src names one,
serves it with the test suite's mirror server (tests/mirror_server.py: sendfile,
Range support) on 127.0.0.1, then runs `imagenet-prep download --json` into a
fresh folder for each connection count and reads the per-file rates from its
report (the rates exclude interpreter start-up).  `curl` fetching the training
archive over one connection (alone, and followed by md5sum, the check ours does
while downloading) is the baseline.  Everything is loopback and page
cache: the figures measure the client's per-byte cost (requests, pwrite, MD5),
not a network.  `--limit` caps each server response at that many MB/s, as
servers and long links limit one connection, to show what parallel connections
buy there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from mirror_server import MirrorServer  # noqa: E402

from imagenet_prep.replica.build import make_replica  # noqa: E402

TRAIN = "ILSVRC2012_img_train.tar"


def download(url: str, out: Path, connections: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "imagenet_prep", "download", "--to", str(out), "--base-url", url,
         "--connections", str(connections), "--json"],
        check=True, capture_output=True, text=True)
    return json.loads(proc.stdout)


def curl(url: str, out: Path, md5: bool) -> float:
    """curl to a file (then md5sum of it, for the same check as ours)."""
    t0 = time.perf_counter()
    subprocess.run(["curl", "-sS", "-o", str(out), url], check=True)
    if md5:
        subprocess.run(["md5sum", str(out)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, help="an existing replica (default: build one)")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--train-per-class", type=int, default=100)
    p.add_argument("--connections", default="1,4")
    p.add_argument("--repeat", type=int, default=3, help="runs per setting; the best is shown")
    p.add_argument("--limit", type=float, default=None, metavar="MB/S",
                   help="cap each server response at this rate (default: no cap)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dl-bench-"))
    try:
        src = args.src
        if src is None:
            src = work / "src"
            print(f"building a replica in {src} ...", file=sys.stderr)
            make_replica(src, classes=args.classes, train_per_class=args.train_per_class)
        size = (src / TRAIN).stat().st_size
        total = sum(f.stat().st_size for f in src.iterdir() if f.name.startswith("ILSVRC"))
        subprocess.run(["cat", *map(str, src.iterdir())], check=True, stdout=subprocess.DEVNULL)
        print(f"replica: {total / 1e6:.1f} MB in 6 archives, train {size / 1e6:.1f} MB")
        with MirrorServer(src) as srv:
            srv.rate = args.limit * 1e6 if args.limit else None
            if args.limit:
                print(f"server: at most {args.limit:g} MB/s per connection")
            rows = []
            for md5, task in ((False, "curl (train)"), (True, "curl, then md5sum (train)")):
                best = min(curl(srv.url + TRAIN, work / "curl.tar", md5)
                           for _ in range(args.repeat))
                rows.append((task, best, size / 1e6 / best, "-"))
            for n in (int(x) for x in args.connections.split(",")):
                runs = []
                for _ in range(args.repeat):
                    out = work / f"out-{n}"
                    shutil.rmtree(out, ignore_errors=True)
                    runs.append(download(srv.url, out, n))
                r = min(runs, key=lambda r: r["seconds"])
                train = next(f for f in r["files"] if f["name"] == TRAIN)
                rows.append((f"download --connections {n} (train)", train["seconds"],
                             train["mb_per_s"], f"{train['md5_seconds_after']:.3f}"))
                rows.append((f"download --connections {n} (all 6)", r["seconds"],
                             r["mb_per_s"], "-"))
        print(f"{'task':<38} {'s':>7} {'MB/s':>8}  MD5 after last byte (s)")
        for task, s, rate, after in rows:
            print(f"{task:<38} {s:7.2f} {rate:8.0f}  {after}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
