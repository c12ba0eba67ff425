"""Archives in object storage (issue 17): tfrecord reading s3:// archives from a local S3
server (moto's, on loopback), against copying the same bytes with fsspec from the same
server in the same run; then, behind a proxy that adds a fixed latency to every request,
images/s against the number of concurrent requests, extrapolated to full ImageNet.

    python benchmarks/object_storage.py [--scale 0.1] [--repeat 3] [--latency-ms 20]
                                        [--concurrency 1,4,16,64]

Two directions: into a local folder, against `fs.get` of the train and val
archives (every byte tfrecord reads); and into the bucket (s3:// -> s3://), against
the same `fs.get` followed by `fs.put` of those bytes back to the server.  The first
tfrecord run builds the archive indexes (its requests are shown); the timed runs reuse
them, as reruns do.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from replica_cache import ReplicaParams, ensure_replica

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
FULL_IMAGES = 1_331_167  # ILSVRC2012 train + val
BUCKET = "bench"
ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process on loopback (a thread would share our GIL)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("moto server did not start")


class _Delay(BaseHTTPRequestHandler):
    """Forwards every request to the server after `delay` seconds (the proxy's latency)."""

    target: tuple[str, int] = ("127.0.0.1", 0)
    delay = 0.02
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        time.sleep(self.delay)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        conn = http.client.HTTPConnection(*self.target, timeout=120)
        conn.request(self.command, self.path, body=body or None,
                     headers={k: v for k, v in self.headers.items() if k.lower() != "host"}
                     | {"Host": f"{self.target[0]}:{self.target[1]}"})
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        pass


def start_proxy(endpoint: str, delay: float) -> tuple[ThreadingHTTPServer, str]:
    host, port = endpoint.removeprefix("http://").split(":")
    handler = type("Delay", (_Delay,), {"target": (host, int(port)), "delay": delay})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def env_for(endpoint: str, cache: Path, concurrency: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
               AWS_ENDPOINT_URL=endpoint, IMAGENET_PREP_CACHE=str(cache),
               PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    if concurrency is not None:
        env["IMAGENET_PREP_CONCURRENCY"] = str(concurrency)
    return env


def tfrecord(out: Path | str, env: dict[str, str], shards: list[str], workers: int
             ) -> tuple[float, dict]:
    """One tfrecord run into `out`: a local folder, or an s3:// prefix (emptied first)."""
    if isinstance(out, Path):
        shutil.rmtree(out, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            _fs(env["AWS_ENDPOINT_URL"]).rm(out.removeprefix("s3://"), recursive=True)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "imagenet_prep", "tfrecord", str(out),
                           "--archives", f"s3://{BUCKET}/archives", *shards, "--workers",
                           str(workers), "--json"], capture_output=True, text=True, env=env)
    seconds = time.monotonic() - t0
    if proc.returncode:
        sys.exit(f"tfrecord failed: {proc.stderr.strip()}")
    return seconds, json.loads(proc.stdout)["run"]


def _fs(endpoint: str):
    import fsspec

    return fsspec.filesystem("s3", key="bench", secret="bench", skip_instance_cache=True,
                             client_kwargs={"endpoint_url": endpoint})


def fsspec_copy_back(out: Path, endpoint: str) -> float:
    """The same bytes fetched with fsspec and written back to the server as objects."""
    fs = _fs(endpoint)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(f"{BUCKET}/copy", recursive=True)
    t0 = time.monotonic()
    fsspec_copy(out, endpoint)
    fs.put([str(out / n) for n in ARCHIVES], f"{BUCKET}/copy/")
    return time.monotonic() - t0


def fsspec_copy(out: Path, endpoint: str) -> float:
    """The same bytes tfrecord reads, fetched with fsspec (s3fs) into local files."""
    import fsspec

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    fs = fsspec.filesystem("s3", key="bench", secret="bench", skip_instance_cache=True,
                           client_kwargs={"endpoint_url": endpoint})
    t0 = time.monotonic()
    fs.get([f"{BUCKET}/archives/{n}" for n in ARCHIVES], str(out) + "/")
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.1,
                    help="replica size against benchmarks/run.py's (default 0.1: 1,800 images)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--cache", type=Path, default=HERE / "out")
    a = ap.parse_args()
    replica = ensure_replica(ReplicaParams.scaled(a.scale), a.cache, a.workers)
    images = replica.train_images + replica.val_images
    nbytes = replica.input_bytes
    shards = ["--train-shards", str(max(2, round(replica.train_images / 1251))),
              "--val-shards", str(max(2, round(replica.val_images / 391)))]
    moto, endpoint = start_moto()
    work = Path(tempfile.mkdtemp(prefix="imagenet-prep-s3bench-"))
    try:
        import fsspec

        fs = fsspec.filesystem("s3", key="bench", secret="bench", skip_instance_cache=True,
                               client_kwargs={"endpoint_url": endpoint})
        fs.mkdir(BUCKET)
        fs.put(f"{replica.archives}/", f"{BUCKET}/archives/", recursive=True)
        cache = work / "index-cache"
        first, run = tfrecord(work / "ds", env_for(endpoint, cache), shards, a.workers)
        print(f"replica: {images:,} images, {nbytes / 1e6:.0f} MB; first run (builds the "
              f"indexes) {first:.1f} s; per image: {run.get('requests', 0) / images:.2f} "
              f"requests, {run.get('read_bytes', 0) / images / 1e3:.1f} kB")
        ours, copy, ours_s3, copy_s3 = [], [], [], []
        out_url = f"s3://{BUCKET}/out"
        for _ in range(a.repeat):  # alternating, as benchmarks/run.py does
            ours.append(tfrecord(work / "ds", env_for(endpoint, cache), shards, a.workers)[0])
            copy.append(fsspec_copy(work / "copy", endpoint))
            ours_s3.append(tfrecord(out_url, env_for(endpoint, cache), shards, a.workers)[0])
            copy_s3.append(fsspec_copy_back(work / "copy", endpoint))
        o, c = statistics.median(ours), statistics.median(copy)
        o3, c3 = statistics.median(ours_s3), statistics.median(copy_s3)
        verdict = "PASS" if c / o >= 0.5 else "MISS"
        print(f"\n{'contender':<44} {'s':>7} {'images/s':>9} {'MB/s':>7} {'vs copy':>8}")
        print(f"{'tfrecord s3:// -> local (ours)':<44} {o:7.2f} {images / o:9.0f} "
              f"{nbytes / 1e6 / o:7.1f} {c / o:7.2f}x")
        print(f"{'fsspec copy of the same bytes -> local':<44} {c:7.2f} {images / c:9.0f} "
              f"{nbytes / 1e6 / c:7.1f} {1:7.2f}x")
        print(f"{'tfrecord s3:// -> s3:// (ours)':<44} {o3:7.2f} {images / o3:9.0f} "
              f"{nbytes / 1e6 / o3:7.1f} {c3 / o3:7.2f}x (against the copy back)")
        print(f"{'fsspec copy of the same bytes -> s3://':<44} {c3:7.2f} {images / c3:9.0f} "
              f"{nbytes / 1e6 / c3:7.1f} {1:7.2f}x")
        verdict3 = "PASS" if c3 / o3 >= 0.5 else "MISS"
        print(f"target: tfrecord >= 0.5x the fsspec copy: to local {verdict}, "
              f"s3 -> s3 {verdict3}")
        proxy, slow = start_proxy(endpoint, a.latency_ms / 1000)
        print(f"\nwith {a.latency_ms:.0f} ms added to every request (a proxy), "
              f"--workers {a.workers}:")
        print(f"{'requests per worker':>20} {'s':>7} {'images/s':>9} {'full ImageNet':>14}")
        for n in [int(x) for x in a.concurrency.split(",") if x]:
            s, _ = tfrecord(work / "ds", env_for(slow, cache, n), shards, a.workers)
            full = FULL_IMAGES / (images / s)
            print(f"{n:>20} {s:7.2f} {images / s:9.0f} {full / 3600:11.1f} h")
        proxy.shutdown()
    finally:
        moto.terminate()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
