"""`prepare`: every stage in order, with a disk plan first and a summary at the end.

Each stage is resumable on its own, so `prepare` is too: a rerun skips what the
records say is finished and completes the rest.
"""

from __future__ import annotations

import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagenet_prep.errors import PrepError
from imagenet_prep.folders.extract import SPLITS
from imagenet_prep.runtime import stage_state
from imagenet_prep.sources.archives import ROLES, find_archive

TARGETS = {
    "pytorch": ("verify", "extract", "valtree", "flatten", "synsets"),
    "tensorflow": ("verify", "bbox", "tfrecord"),
    "all": ("verify", "extract", "valtree", "flatten", "synsets", "bbox", "tfrecord"),
}
# Archive roles each target reads (what `prepare --download` fetches when missing).
ROLES_USED = {
    "pytorch": ROLES,
    "tensorflow": tuple(r for r in ROLES if r != "test"),
    "all": ROLES,
}


def _gz_size(path: Path) -> int:
    """Uncompressed size from the gzip trailer (exact below 4 GiB, which box archives are)."""
    with open(path, "rb") as f:
        f.seek(-4, 2)
        return struct.unpack("<I", f.read(4))[0]


def _archive_bytes(archives: Path, split: str) -> int:
    path = find_archive(archives, split)
    if path is None:
        return 0
    return _gz_size(path) if split.startswith("bbox") else path.stat().st_size


def disk_plan(archives: Path, dataset: Path, stages: tuple[str, ...], flatten_mode: str
              ) -> dict[str, int]:
    """Bytes each stage still has to write (estimates from the archive sizes)."""
    plan = {}
    for stage in stages:
        if stage == "extract":
            plan[stage] = sum(
                _archive_bytes(archives, s) for s in SPLITS
                if stage_state.load(dataset, f"extract-{s}") is None
            )
        elif stage == "flatten":
            plan[stage] = 0 if flatten_mode != "copy" else sum(
                _archive_bytes(archives, s) for s in ("train", "val"))
        elif stage == "bbox":
            plan[stage] = _archive_bytes(archives, "bbox_train") // 8
        elif stage in ("tfrecord", "wds"):
            plan[stage] = sum(_archive_bytes(archives, s) for s in ("train", "val"))
        else:
            plan[stage] = 0
    return plan


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB"


def prepare(
    archives: Path, dataset: Path, *, only: str = "pytorch", force: bool = False,
    workers: int | None = None, flatten_mode: str = "hardlink", labels: str = "auto",
    train_shards: int = 1024, val_shards: int = 128, seed: int = 0, dali_index: bool = False,
    on_bad_image: str = "fail", verify: str = "quick", log=print, wds: bool = False,
    wds_shard_size: int | None = None, wds_shard_samples: int | None = None,
    write_report: bool = True, download: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the stages of `only` (then WebDataset shards with `wds`), then write
    DATASET/report.html unless `write_report` is false; returns a report with per-stage
    figures (its timings are saved as a record).

    `download`, if given, runs first and fetches the missing archives (see
    imagenet_prep.download); its report becomes the "download" stage.
    """
    from imagenet_prep.folders.extract import extract
    from imagenet_prep.folders.flatten import flatten
    from imagenet_prep.folders.synsets import write_synsets
    from imagenet_prep.folders.valtree import valtree
    from imagenet_prep.sources.archives import verify_archives

    stages = TARGETS[only] + (("wds",) if wds else ())
    if wds_shard_size is not None and wds_shard_samples is not None:
        raise PrepError("give --wds-shard-size or --wds-shard-samples, not both")
    if write_report:
        from imagenet_prep.report import check_target, default_path

        check_target(default_path(dataset))  # refuse before hours of work, not after
    fetched: dict[str, Any] | None = None
    if download is not None:
        t0 = time.monotonic()
        fetched = {"result": download()}
        fetched["seconds"] = round(time.monotonic() - t0, 3)
    if not any(find_archive(archives, r) for r in ROLES):
        raise PrepError(f"{archives}: none of the ILSVRC2012 archives is here")
    plan = disk_plan(archives, dataset, stages, flatten_mode)
    free = shutil.disk_usage(dataset).free
    need = sum(plan.values())
    log("disk plan:")
    for stage, n in plan.items():
        log(f"  {stage:<9} {_gb(n):>12}")
    log(f"  {'total':<9} {_gb(need):>12}   free: {_gb(free)}")
    if need > free and not force:
        raise PrepError(
            f"{dataset}: needs about {_gb(need)} but {_gb(free)} is free; "
            "free some space or pass --force"
        )
    report: dict[str, Any] = {"dataset": str(dataset), "only": only, "plan": plan, "stages": {}}
    if fetched is not None:
        report["stages"]["download"] = fetched
    t_all = time.monotonic()
    for stage in stages:
        t0 = time.monotonic()
        if stage == "verify":
            if verify == "none":
                continue
            statuses = verify_archives(archives, quick=verify == "quick")
            bad = [s for s in statuses if s.status == "MISMATCH"]
            if bad:
                raise PrepError(
                    f"{archives / bad[0].name}: damaged ({bad[0].detail}); download it again"
                )
            result: Any = {s.name: s.status for s in statuses}
        elif stage == "extract":
            result = extract(archives, dataset, workers=workers)
        elif stage == "valtree":
            if stage_state.load(dataset, "extract-val") is None:
                continue
            result = valtree(dataset, archives, labels)
        elif stage == "flatten":
            splits = tuple(s for s in ("train", "val") if (dataset / s).is_dir())
            result = flatten(dataset, splits, flatten_mode)
        elif stage == "synsets":
            result = write_synsets(dataset, archives)
        elif stage == "bbox":
            from imagenet_prep.folders.bbox_csv import write_bbox_csv

            if not find_archive(archives, "bbox_train") and not (dataset / "bbox_train").is_dir():
                continue
            result = write_bbox_csv(dataset, archives=archives, workers=workers)
        elif stage == "wds":
            from imagenet_prep.folders.bbox_csv import ensure_csv
            from imagenet_prep.shards.wds import write_wds

            result = write_wds(
                dataset / "wds", dataset=dataset, archives=archives, shard_size=wds_shard_size,
                shard_samples=wds_shard_samples, seed=seed, workers=workers,
                on_bad_image=on_bad_image, labels=labels,
                boxes_csv=ensure_csv(dataset, archives, workers, "wds"),
            )
        else:
            from imagenet_prep.folders.bbox_csv import ensure_csv
            from imagenet_prep.shards.tfrecord import write_tfrecords

            result = write_tfrecords(
                dataset, archives=archives, train_shards=train_shards, val_shards=val_shards,
                seed=seed, workers=workers, dali_index=dali_index, on_bad_image=on_bad_image,
                labels=labels, boxes_csv=ensure_csv(dataset, archives, workers, "tfrecord"),
            )
        seconds = time.monotonic() - t0
        report["stages"][stage] = {"seconds": round(seconds, 3), "result": result}
        log(f"{stage:<9} done in {seconds:7.1f} s")
    report["seconds"] = round(time.monotonic() - t_all, 3)
    # the report shows the last ten runs
    runs = (stage_state.load(dataset, "prepare") or {}).get("runs", [])[-9:]
    runs.append({"only": only, "seconds": report["seconds"],
                 "stages": [[s, v["seconds"]] for s, v in report["stages"].items()]})
    stage_state.save(dataset, "prepare", {"runs": runs})
    if write_report:
        from imagenet_prep.report import build_report

        report["report"] = build_report(dataset, workers=workers)
        log(f"{'report':<9} done in {report['report']['seconds']:7.1f} s")
    return report
