"""Running a shard sink's planned shards: shared by the TFRecord and WebDataset sinks.

The shards still to write go through the executor; the state is saved every few
seconds (a shard finished after the last save is simply written again, with the
same bytes) and once at the end; the run's figures and the per-split lists of
converted and left-out images come from the state, so they cover earlier runs too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.pool import Workers, run_tasks
from imagenet_prep.runtime.progress import bar

SAVE_EVERY = 2.0  # seconds between state saves while shards finish


def write_shards(
    write_shard: Callable[[Any], dict[str, Any]], tasks: Iterable[Any], *, images: int,
    workers: Workers, state: dict, state_dir: Path, state_name: str, count_key: str,
    desc: str,
) -> dict[str, Any]:
    """Write every task's shard; returns the run's counts (`count_key`: records or samples)."""
    run = {"images": 0, "input_bytes": 0, "output_bytes": 0}
    last_save = time.monotonic()
    with bar(images, desc) as pb:
        for res in run_tasks(write_shard, tasks, workers):
            state["shards"][res["name"]] = res
            done = res[count_key] + len(res["skipped"])
            run["input_bytes"] += res["input_bytes"]
            run["output_bytes"] += res["bytes"]
            run["images"] += done
            pb.update(done)
            if time.monotonic() - last_save > SAVE_EVERY:
                stage_state.save(state_dir, state_name, state)
                last_save = time.monotonic()
    stage_state.save(state_dir, state_name, state)
    return run


def timed_run(run: dict[str, Any], shards_written: int, t0: float, t_write: float
              ) -> dict[str, Any]:
    """The run's counts with its timings (indexing, writing) and rates since `t0`."""
    end = time.monotonic()
    seconds = end - t0
    return {
        "shards_written": shards_written, **run,
        "seconds": round(seconds, 3), "index_seconds": round(t_write - t0, 3),
        "write_seconds": round(end - t_write, 3),
        "images_per_s": round(run["images"] / seconds, 1) if seconds else 0.0,
        "mb_per_s": round(run["input_bytes"] / 1e6 / seconds, 1) if seconds else 0.0,
    }


def shard_notes(entries_of: dict[str, list[dict]]) -> tuple[list[dict], list[dict]]:
    """(converted, skipped) images of every split's shard entries, sorted by split and name."""
    converted: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    for split, entries in entries_of.items():
        for e in entries:
            converted += [{"split": split, "name": n, "reason": r} for n, r in e["converted"]]
            skipped += [{"split": split, "name": n, "error": r} for n, r in e["skipped"]]
    converted.sort(key=lambda d: (d["split"], d["name"]))
    skipped.sort(key=lambda d: (d["split"], d["name"]))
    return converted, skipped
