"""Local S3 servers for benchmarks/object_storage.py, each in its own process on loopback.

s3rver (npm) keeps objects as files and answers a ranged GET by streaming that range of
the file, so a range costs what the range costs, as on S3 or GCS.  moto's server reads
the whole object for every ranged GET and slices it (a range of a 100 MiB object costs
~100 ms), so it is kept only as the fallback when s3rver is not installed; the benchmark
says which server it used and prints what a ranged GET costs on it.

s3rver is installed next to the benchmarks, never committed:

    npm install --prefix benchmarks/.tools s3rver@3.7.1
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
S3RVER_JS = HERE / ".tools" / "node_modules" / "s3rver" / "bin" / "s3rver.js"
INSTALL_HINT = "npm install --prefix benchmarks/.tools s3rver@3.7.1"


@dataclass
class S3Server:
    """A running server: what the clients need to reach it, and its process."""

    name: str
    endpoint: str
    key: str
    secret: str
    proc: subprocess.Popen[bytes]
    workdir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def fs(self, endpoint: str | None = None) -> Any:
        """A fresh s3fs filesystem on this server (or on a proxy in front of it)."""
        import fsspec

        return fsspec.filesystem("s3", key=self.key, secret=self.secret,
                                 skip_instance_cache=True,
                                 client_kwargs={"endpoint_url": endpoint or self.endpoint})

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with code {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"{what} did not start listening on port {port}")


def start_s3rver(workdir: Path) -> S3Server:
    """s3rver on a fresh data folder; its only credentials are S3RVER / S3RVER."""
    port = free_port()
    data = workdir / "s3rver-data"
    data.mkdir(parents=True)
    proc = subprocess.Popen(["node", str(S3RVER_JS), "-d", str(data), "-a", "127.0.0.1",
                             "-p", str(port), "--silent", "--no-vhost-buckets"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc, "s3rver")
    return S3Server("s3rver 3.7.1 (node, objects as files)", f"http://127.0.0.1:{port}",
                    "S3RVER", "S3RVER", proc, data)


def start_moto() -> S3Server:
    """moto's server mode (what the tests use): every ranged GET reads the whole object."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc, "moto server")
    return S3Server("moto server (reads the whole object per ranged GET)",
                    f"http://127.0.0.1:{port}", "bench", "bench", proc)


def s3rver_available() -> bool:
    return S3RVER_JS.is_file() and shutil.which("node") is not None


def start_server(choice: str, workdir: Path) -> S3Server:
    """`s3rver`, `moto`, or `auto`: s3rver when installed, else moto with a note why."""
    if choice == "s3rver" and not s3rver_available():
        sys.exit(f"s3rver is not installed: {INSTALL_HINT} (and node on PATH)")
    if choice in ("s3rver", "auto") and s3rver_available():
        return start_s3rver(workdir)
    server = start_moto()
    if choice == "auto":
        server.notes.append(f"s3rver not installed ({INSTALL_HINT}): fell back to moto, "
                            "whose ranged GETs cost the whole object")
    return server


def ranged_get_ms(server: S3Server, bucket: str, sizes_mib: tuple[int, ...] = (1, 100),
                  reads: int = 20, span: int = 64 << 10) -> list[tuple[int, float]]:
    """Milliseconds per ranged GET of `span` bytes, one at a time, on objects of each size:
    a fair server costs the same whatever the object's size."""
    fs = server.fs()
    out = []
    for mib in sizes_mib:
        path = f"{bucket}/probe/{mib}MiB"
        size = mib << 20
        fs.pipe_file(path, os.urandom(1 << 20) * mib)
        fs.cat_file(path, start=0, end=span)  # connection made, object warm in the cache
        t0 = time.perf_counter()
        for i in range(reads):
            start = (i * 7_919 * 4_096) % (size - span)
            fs.cat_file(path, start=start, end=start + span)
        out.append((mib, (time.perf_counter() - t0) / reads * 1000))
        fs.rm_file(path)
    return out
