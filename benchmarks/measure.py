"""Time one command and its peak memory, children included.

Two memory figures, because neither alone is the whole truth:
- `max_rss`: the kernel's exact peak of the single largest process of the tree
  (`wait4` in a small wrapper returns the command's own and its waited-for
  descendants' maximum: a pool worker counts, but only as itself, maxima are not
  summed; the wrapper's ~8 MB is the floor);
- `tree_rss`: the peak of the SUM of resident sizes over the whole process tree,
  sampled every 0.1 s (psutil); it can miss a peak shorter than that, and it counts
  pages shared by forked workers once per process, so it errs high.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

try:
    import psutil
except ImportError:  # a benchmark-only tool: without it only max_rss is reported
    psutil = None

SAMPLE_SECONDS = 0.1

# A small parent for the command: a forked child's peak RSS starts from its parent's
# size (the kernel keeps the pre-exec peak), so the benchmark's own ~70 MB must not be
# that parent.  `python -S` with only `os` is ~8 MB, the floor of the `1 proc` figure.
_WRAPPER = """\
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""


@dataclass(frozen=True)
class Sample:
    """One timed run."""

    seconds: float
    max_rss: int  # bytes, largest single process (exact)
    tree_rss: int | None  # bytes, sampled peak of the tree's summed RSS
    stdout: str


class CommandFailed(RuntimeError):
    pass


def _tree_rss(pid: int) -> int:
    """Summed RSS of the descendants of `pid` (the wrapper itself is left out)."""
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(cmd: Sequence[str] | str, *, cwd: Path | None = None, env: dict | None = None,
        capture: bool = False) -> Sample:
    """Run `cmd` (a list, or a shell string) to completion; raise CommandFailed on error."""
    argv = ["/bin/bash", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        wrapped = [sys.executable, "-S", "-c", _WRAPPER, rss.name, *argv]
        seconds, code, peak = _timed(wrapped, cwd, env, out if capture else subprocess.DEVNULL,
                                     err)
        out_b = b""
        if capture:
            out.seek(0)
            out_b = out.read()
        err.seek(0)
        err_b = err.read()
        max_rss = int(rss.read() or 0) * 1024
    if code != 0:
        shown = cmd if isinstance(cmd, str) else " ".join(argv)
        tail = err_b.decode(errors="replace").strip().splitlines()[-3:]
        raise CommandFailed(f"exit {code}: {shown}\n  " + "\n  ".join(tail))
    return Sample(seconds, max_rss, peak, out_b.decode(errors="replace"))


def _timed(cmd: list[str], cwd, env, stdout, stderr) -> tuple[float, int, int | None]:
    """(seconds, exit code, sampled peak of the command's tree or None) of one run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True) if psutil else None
    if sampler:
        sampler.start()
    code = proc.wait()
    seconds = time.perf_counter() - t0
    done.set()
    if sampler:
        sampler.join()
    return seconds, code, (peak[0] or None) if sampler else None
