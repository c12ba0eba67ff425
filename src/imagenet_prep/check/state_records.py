"""The state records themselves: each one readable, and a variant's claim matching the
options its shards were written with.

`check` proves outputs from their bytes, but the next run reads the records: a damaged
one would let `check` say OK over a folder that run then refuses.  So `check` reads them
all first and stops on a damaged one with the same one-line error the run would give
(exit 5, "delete it to run that stage again"), and a variant whose record names other
options than its shards is a problem.
"""

from __future__ import annotations

from pathlib import Path

from imagenet_prep.errors import OptionError
from imagenet_prep.formats.resize import parse
from imagenet_prep.layout import (
    BBOX_RECORD,
    BOX_CSV,
    DAMAGED_RECORD,
    MDS_RECORD,
    PARQUET_RECORD,
    STATE_DIR,
    TFDS_RECORD,
    TFRECORD_RECORD,
    VARIANT_RECORD,
    WDS_DIR,
    WDS_RECORD,
)
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.storage import listdir

NOT_READ = {DAMAGED_RECORD}  # check's own note to the next run, which check rewrites


def read_all(dataset: Path) -> None:
    """Load every state record `dataset` (and its WebDataset folder, which keeps its own)
    holds: a damaged one raises DamagedStateError."""
    for root in (dataset, dataset / WDS_DIR):
        folder = root / STATE_DIR
        for entry in sorted(listdir(folder)) if folder.is_dir() else ():
            name, json = entry.rpartition(".")[::2]
            if json == "json" and name not in NOT_READ:
                stage_state.load(root, name)


def variant_problems(dataset: Path) -> list[str]:
    """A variant's record (variant.json) against the options each shard state records."""
    rec = stage_state.load(dataset, VARIANT_RECORD)
    if rec is None:
        return []
    where = stage_state.record_path(dataset, VARIANT_RECORD)
    try:
        spec = parse(rec["resize"], rec["quality"], rec["image_format"],
                     bool(rec.get("full_decode", False)))
    except OptionError as e:
        return [f"{where}: not a variant's options ({e})"]
    problems = []
    for folder, name in _shard_records(dataset):
        state = stage_state.load(folder, name)
        said = None if state is None else state.get("options", {}).get("resize")
        if state is not None and said != spec.text:
            problems.append(f"{stage_state.record_path(folder, name)}: shards written "
                            f"{'as ' + said if said else 'without resizing'}, but {where} "
                            f"records {spec.text}")
    return problems


def _shard_records(dataset: Path) -> tuple[tuple[Path, str], ...]:
    """(folder, record name) of each shard stage's state."""
    return ((dataset, TFRECORD_RECORD), (dataset, PARQUET_RECORD), (dataset, MDS_RECORD),
            (dataset, TFDS_RECORD), (dataset / WDS_DIR, WDS_RECORD))


# the shard stages whose samples carry boxes (`needs_boxes`), which read the CSV
BOXED_RECORDS = (TFRECORD_RECORD, WDS_RECORD)


def boxes_problems(dataset: Path) -> list[str]:
    """Shards whose train boxes came from another box CSV than the one here (by SHA-256):
    the next run of that stage refuses them ("written from other train images or
    boxes"), so `check` says so too instead of OK."""
    csv = stage_state.load(dataset, BBOX_RECORD)
    if csv is None:
        return []
    problems = []
    for folder, name in _shard_records(dataset):
        if name not in BOXED_RECORDS:
            continue
        state = stage_state.load(folder, name)
        train = None if state is None else state["splits"].get("train")
        if train is not None and train.get("boxes_sha256") != csv["sha256"]:
            said = train.get("boxes_sha256")
            made = f"with the boxes of another {BOX_CSV} than" if said else \
                "with no boxes, before there was"
            problems.append(f"{stage_state.record_path(folder, name)}: train shards written "
                            f"{made} {dataset / BOX_CSV}; the next run refuses them: "
                            f"{stage_state.start_over(folder, name)}")
    return problems
