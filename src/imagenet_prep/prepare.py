"""`prepare`: every stage in order, with a disk plan first and a summary at the end.

The stages are declared in imagenet_prep.stages; `prepare` runs the ones its
options select, in order, and names none of them.  Each stage is resumable on its
own, so `prepare` is too: a rerun skips what the records say is finished and
completes the rest.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagenet_prep.errors import PrepError
from imagenet_prep.layout import PREPARE_RECORD
from imagenet_prep.runtime import expectation, stage_state, subset_record
from imagenet_prep.runtime.bucket_outputs import refuse_folder_stages
from imagenet_prep.runtime.file_manifest import DAMAGED
from imagenet_prep.runtime.pool import Workers
from imagenet_prep.runtime.storage import is_remote
from imagenet_prep.sources.archives import ROLES, find_archive, require_archives
from imagenet_prep.sources.catalog import iter_classes
from imagenet_prep.sources.subset import Subset
from imagenet_prep.stages import (
    DOWNLOAD,
    STAGES,
    TARGETS,
    PrepareOptions,
    Stage,
    asks,
    needs,
    selected,
    summary_line,
)

__all__ = ["TARGETS", "PrepareOptions", "disk_plan", "prepare", "summary_lines"]

RUNS_KEPT = 10  # the report shows the last ten runs


def disk_plan(archives: Path, dataset: Path, stages: tuple[Stage, ...],
              options: PrepareOptions) -> dict[str, int]:
    """Bytes each stage still has to write (estimates from the archive sizes)."""
    return {s.name: s.disk(archives, dataset, options) for s in stages if s.disk is not None}


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB"


def _timed(fn: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
    """{"seconds", "result"} of one call, or None when it returns None (did not apply)."""
    t0 = time.monotonic()
    result = fn()
    if result is None:
        return None
    return {"seconds": round(time.monotonic() - t0, 3), "result": result}


def prepare(
    archives: Path, dataset: Path, options: PrepareOptions, *,
    workers: Workers = None, log: Callable[[str], Any] = print,
    download: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the stages `options` selects (its target's, then WebDataset shards with `wds`,
    then DATASET/report.html with `write_report`); returns a report with per-stage
    figures (its timings are saved as a record).

    `download`, if given, runs first and fetches the missing archives (see
    imagenet_prep.download); its report becomes the "download" stage.
    """
    chosen = selected(options)
    refuse_folder_stages(dataset, (s.name for s in chosen))  # before anything is written
    if options.wds_shard_size is not None and options.wds_shard_samples is not None:
        raise PrepError("give --wds-shard-size or --wds-shard-samples, not both")
    for stage in chosen:
        if stage.preflight is not None:
            stage.preflight(dataset, options)
    fetched = _timed(download) if download is not None else None
    if not any(find_archive(archives, r) for r in ROLES):
        raise PrepError(f"{archives}: none of the ILSVRC2012 archives is here")
    # before any work: every archive the outputs need, the same ones as the dataset's,
    # and what was asked, so a run killed at any point is never taken for a finished one
    subset = subset_record.chosen(dataset, options.subset)  # another subset: refused here
    found = require_archives(archives, needs(options), f"--only {options.only}")
    identities = expectation.identify(dataset, found)
    if not subset.full:  # its names proven in the archive, then recorded: before any output
        if subset.train_files is not None and (train := find_archive(archives, "train")):
            for _ in iter_classes(train, subset):  # headers of its classes only
                pass
        subset_record.claim(dataset, subset)
    expectation.expect(dataset, asks(options), identities)
    plan = disk_plan(archives, dataset, chosen, options)
    # a bucket has no free space to compare with (a worker needs one shard of local disk)
    free = None if is_remote(dataset) else shutil.disk_usage(dataset).free
    need = sum(plan.values())
    log("disk plan:")
    for name, n in plan.items():
        log(f"  {name:<9} {_gb(n):>12}")
    log(f"  {'total':<9} {_gb(need):>12}   "
        + (f"free: {_gb(free)}" if free is not None else "into a bucket"))
    if free is not None and need > free and not options.force:
        raise PrepError(
            f"{dataset}: needs about {_gb(need)} but {_gb(free)} is free; "
            "free some space or pass --force"
        )
    report: dict[str, Any] = {"dataset": str(dataset), "only": options.only, "plan": plan,
                              "stages": {}}
    if fetched is not None:
        report["stages"][DOWNLOAD.name] = fetched
    t_all = time.monotonic()

    def run(stage: Stage) -> dict[str, Any] | None:
        assert stage.run is not None, f"{stage.name}: its work is the caller's"
        done = _timed(lambda: stage.run(archives, dataset, options, workers))
        if done is not None:
            log(f"{stage.name:<9} done in {done['seconds']:7.1f} s")
        return done

    for stage in chosen:
        if not stage.closing and (done := run(stage)) is not None:
            report["stages"][stage.name] = done
    report["seconds"] = round(time.monotonic() - t_all, 3)
    # before the run is recorded: `check` asks a prepared whole dataset for them
    subset_record.write_label_files(dataset, subset)  # every dataset's, the whole one's too
    runs = (stage_state.load(dataset, PREPARE_RECORD) or {}).get("runs", [])[-(RUNS_KEPT - 1):]
    runs.append({"only": options.only, "seconds": report["seconds"],
                 "stages": [[s, v["seconds"]] for s, v in report["stages"].items()]})
    stage_state.save(dataset, PREPARE_RECORD, {"runs": runs})
    # what the last `check` found damaged has been written again by the stages
    stage_state.record_path(dataset, DAMAGED).unlink(missing_ok=True)
    if not subset.full:
        report["subset"] = subset_reading(archives, subset, report["stages"])
    for stage in chosen:
        if stage.closing and (done := run(stage)) is not None:
            report[stage.name] = done["result"]
    return report


def subset_reading(archives: Path, subset: Subset, stages: dict[str, Any]) -> dict[str, Any]:
    """What a subset run read of the image archives: the image bytes of its first image
    stage (extract, else tfrecord, else wds) against the train and val archives' size."""
    read = 0
    for name in ("extract", "tfrecord", "wds"):
        if (r := stages.get(name, {}).get("result")) is not None:
            read = sum(r[s]["bytes"] for s in ("train", "val") if s in r) if name == "extract" \
                else r["run"]["input_bytes"]
            break
    total = sum(p.stat().st_size for r in ("train", "val")
                if (p := find_archive(archives, r)) is not None)
    return {"describe": subset.describe(), "bytes_read": read, "archive_bytes": total}


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The lines `imagenet-prep prepare` ends with: the total, then one line per stage."""
    lines = ["", f"prepared {report['dataset']} ({report['only']}) in {report['seconds']:.1f} s"]
    for name, s in report["stages"].items():
        lines.append(summary_line(name, s["result"], s["seconds"]))
    if (sub := report.get("subset")) is not None:
        share = sub["bytes_read"] / sub["archive_bytes"] if sub["archive_bytes"] else 0.0
        lines.append(f"  subset    {sub['describe']}: read {sub['bytes_read'] / 1e6:,.1f} MB "
                     f"of the {sub['archive_bytes'] / 1e6:,.1f} MB train and val archives "
                     f"({share:.1%})")
    for stage in STAGES.values():
        if stage.closing and (r := report.get(stage.name)):
            lines.append(summary_line(stage.name, r, r["seconds"]))
    return lines
