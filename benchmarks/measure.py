"""Time one command and its peak memory, children included.

Two memory figures, because neither alone is the whole truth:
- `max_rss`: the kernel's exact peak of the single largest process of the tree
  (`wait4` in a small wrapper returns the command's own and its waited-for
  descendants' maximum: a pool worker counts, but only as itself, maxima are not
  summed; the wrapper's ~8 MB is the floor);
- `tree_rss`: the peak of the SUM of resident sizes over the whole process tree,
  sampled every 0.1 s (psutil); it can miss a peak shorter than that, and it counts
  pages shared by forked workers once per process, so it errs high.

Both count, in a forked worker, every page it still shares with the main process.
So two more, sampled every 0.5 s from /proc/PID/smaps_rollup (Linux):
- `max_own`: the peak of the largest single process's private memory (USS: pages
  no other process maps), what that process alone adds;
- `tree_pss`: the peak of the tree's summed proportional sizes (PSS: each shared
  page split among its sharers), the memory the whole run really holds.
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
OWN_EVERY = 5  # samples between readings of smaps_rollup (the kernel walks every page)

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
    max_own: int | None = None  # bytes, sampled peak of one process's private memory (USS)
    tree_pss: int | None = None  # bytes, sampled peak of the tree's summed PSS


class CommandFailed(RuntimeError):
    pass


def _descendants(pid: int) -> list:
    """The processes under `pid` (the wrapper itself is left out)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _tree_rss(pid: int) -> int:
    """Summed RSS of the descendants of `pid`."""
    total = 0
    for p in _descendants(pid):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _own_and_pss(pid: int) -> tuple[int, int]:
    """(largest private memory of one descendant, their summed PSS), in bytes."""
    own = pss = 0
    for p in _descendants(pid):
        fields: dict[str, int] = {}
        try:
            with open(f"/proc/{p.pid}/smaps_rollup") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if rest.strip().endswith("kB"):
                        fields[key] = int(rest.split()[0]) * 1024
        except OSError:
            continue
        own = max(own, fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0))
        pss += fields.get("Pss", 0)
    return own, pss


def run(cmd: Sequence[str] | str, *, cwd: Path | None = None, env: dict | None = None,
        capture: bool = False) -> Sample:
    """Run `cmd` (a list, or a shell string) to completion; raise CommandFailed on error."""
    argv = ["/bin/bash", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        wrapped = [sys.executable, "-S", "-c", _WRAPPER, rss.name, *argv]
        seconds, code, peaks = _timed(wrapped, cwd, env,
                                      out if capture else subprocess.DEVNULL, err)
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
    return Sample(seconds, max_rss, peaks["tree_rss"], out_b.decode(errors="replace"),
                  max_own=peaks["max_own"], tree_pss=peaks["tree_pss"])


def _timed(cmd: list[str], cwd, env, stdout, stderr
           ) -> tuple[float, int, dict[str, int | None]]:
    """(seconds, exit code, sampled peaks of the command's tree: tree_rss, max_own and
    tree_pss, None without psutil) of one run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
    peak = {"tree_rss": 0, "max_own": 0, "tree_pss": 0}
    done = threading.Event()

    def sample() -> None:
        n = 0
        while not done.wait(SAMPLE_SECONDS):
            peak["tree_rss"] = max(peak["tree_rss"], _tree_rss(proc.pid))
            if n % OWN_EVERY == 0:
                own, pss = _own_and_pss(proc.pid)
                peak["max_own"], peak["tree_pss"] = max(peak["max_own"], own), \
                    max(peak["tree_pss"], pss)
            n += 1

    sampler = threading.Thread(target=sample, daemon=True) if psutil else None
    if sampler:
        sampler.start()
    code = proc.wait()
    seconds = time.perf_counter() - t0
    done.set()
    if sampler:
        sampler.join()
    return seconds, code, {k: (v or None) if sampler else None for k, v in peak.items()}
