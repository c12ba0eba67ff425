"""Run the contenders of a stage in turn (A B C A B C ...) and keep every sample.

Before each run: the contender's untimed setup, then `sync` (so no earlier
writes are flushed on the next contender's clock), then either the page cache
warmed with the contender's inputs (`cat` to /dev/null) or, with --cold, the
whole cache dropped.  After each run: its untimed teardown.  Ours and the
baselines thus start from the same cache state.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import measure

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


@dataclass
class Contender:
    """One command of a stage: ours or a baseline."""

    key: str
    label: str
    cmd: Callable[[], Sequence[str] | str]
    ours: bool = False
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    warm: Sequence[Path] = ()
    json_out: bool = False  # stdout is our --json report; kept as `report`
    max_runs: int | None = None  # a slow baseline no target depends on: fewer runs


@dataclass
class Target:
    """A claim the benchmark checks: `check(results)` -> (shown value, holds)."""

    label: str
    check: Callable[[dict[str, Result]], tuple[str, bool]]


@dataclass
class Stage:
    name: str
    title: str
    unit: str  # what `items` counts: images, XML files
    items: int
    bytes: int | None  # input bytes, for MB/s
    contenders: list[Contender]
    baseline: str | None = None  # key the ratio column compares with
    targets: list[Target] = field(default_factory=list)
    checks: list[tuple[str, Callable[[], bool]]] = field(default_factory=list)  # after runs
    notes: list[str] = field(default_factory=list)


@dataclass
class Result:
    key: str
    label: str
    ours: bool
    samples: list[measure.Sample] = field(default_factory=list)
    report: Any = None
    error: str | None = None

    @property
    def seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def max_rss(self) -> int:
        return max(s.max_rss for s in self.samples)

    @property
    def tree_rss(self) -> int | None:
        peaks = [s.tree_rss for s in self.samples if s.tree_rss]
        return max(peaks) if peaks else None

    @property
    def peak_rss(self) -> int:
        """The larger of the two memory figures (the summed tree when it was sampled)."""
        return max(self.max_rss, self.tree_rss or 0)


def drop_caches_works() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        DROP_CACHES.write_text("3\n")
        return True
    except OSError:
        return False


def warm(paths: Sequence[Path]) -> None:
    """Read every file under `paths` once, so it is in the page cache."""
    files = [str(p) for p in paths if p.is_file()]
    dirs = [str(p) for p in paths if p.is_dir()]
    if files:
        subprocess.run(["cat", *files], check=True, stdout=subprocess.DEVNULL)
    if dirs:
        subprocess.run(f"find {' '.join(map(shlex.quote, dirs))} -type f -print0 "
                       "| xargs -0 -r cat > /dev/null", shell=True, check=True)


def run_stage(stage: Stage, repeat: int, *, cold: bool, tmpfs: bool, log=print
              ) -> dict[str, Result]:
    results = {c.key: Result(c.key, c.label, c.ours) for c in stage.contenders}
    for r in range(repeat):
        for c in stage.contenders:
            res = results[c.key]
            if res.error or (c.max_runs is not None and len(res.samples) >= c.max_runs):
                continue
            if c.setup:
                c.setup()
            subprocess.run(["sync"], check=True)
            if cold:
                DROP_CACHES.write_text("3\n")
            elif not tmpfs:
                warm(c.warm)
            try:
                s = measure.run(c.cmd(), capture=c.json_out)
            except measure.CommandFailed as e:
                res.error = str(e)
                log(f"  {c.label}: FAILED\n    {e}")
                if c.teardown:
                    c.teardown()
                continue
            res.samples.append(s)
            if c.json_out and res.report is None:
                try:
                    res.report = json.loads(s.stdout)
                except ValueError:
                    res.report = None
            if c.teardown:
                c.teardown()
            log(f"  [{r + 1}/{repeat}] {c.label:<52} {s.seconds:8.2f} s "
                f"{(s.tree_rss or s.max_rss) / 1e6:7.0f} MB")
            sys.stdout.flush()
    return results


def speed_ratio(results: dict[str, Result], ours: str, base: str) -> float | None:
    """How many times faster `ours` is than `base` (median seconds); None if either failed."""
    a, b = results.get(ours), results.get(base)
    if not a or not b or not a.samples or not b.samples:
        return None
    return b.seconds / a.seconds


def at_least(label: str, ours: str, base: str, minimum: float, startup: float = 0.0) -> Target:
    """Target: `ours` at least `minimum` times the speed of `base`.

    Judged net of `startup` (the CLI's fixed start-up, which does not grow with the
    data and is lost in the noise at full ImageNet size); both ratios are shown.
    """

    def check(results: dict[str, Result]) -> tuple[str, bool]:
        r = speed_ratio(results, ours, base)
        if r is None:
            return "n/a", False
        if not startup:
            return f"{r:.2f}x", r >= minimum
        net = results[base].seconds / max(1e-3, results[ours].seconds - startup)
        return f"{r:.2f}x wall, {net:.2f}x net of start-up", net >= minimum

    return Target(label, check)
