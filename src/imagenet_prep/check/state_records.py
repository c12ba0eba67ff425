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
    for folder, name in ((dataset, TFRECORD_RECORD), (dataset, PARQUET_RECORD),
                         (dataset, MDS_RECORD), (dataset, TFDS_RECORD),
                         (dataset / WDS_DIR, WDS_RECORD)):
        state = stage_state.load(folder, name)
        said = None if state is None else state.get("options", {}).get("resize")
        if state is not None and said != spec.text:
            problems.append(f"{stage_state.record_path(folder, name)}: shards written "
                            f"{'as ' + said if said else 'without resizing'}, but {where} "
                            f"records {spec.text}")
    return problems
