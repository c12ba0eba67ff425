"""`check_dataset`: the folder checks, then each shard format's checker where its shards are."""

from __future__ import annotations

from pathlib import Path

from imagenet_prep.check.folders import check_flat, check_splits, check_synsets, check_tmp_files
from imagenet_prep.layout import TFRECORD, TFRECORD_REPORT, WDS_DIR, WDS_RECORD
from imagenet_prep.runtime import stage_state


def check_dataset(dataset: Path) -> tuple[list[str], dict]:
    """(problems, summary of what was checked)."""
    if not dataset.is_dir():
        return [f"{dataset}: not a folder"], {}
    problems = check_tmp_files(dataset) + check_splits(dataset) + check_flat(dataset)
    problems += check_synsets(dataset)
    checked: dict = {"layout": True}
    if any((dataset / lay.folder).is_dir() for lay in TFRECORD.values()):
        from imagenet_prep.check.tfrecord import check_tfrecords

        problems += check_tfrecords(dataset, None)
        checked["tfrecord"] = True
        report = stage_state.load(dataset, TFRECORD_REPORT) or {}
        checked["skipped_images"] = report.get("skipped", [])
    wds = dataset / WDS_DIR
    wds_dirs = [d for d in (wds, dataset) if stage_state.load(d, WDS_RECORD) is not None]
    if wds_dirs or wds.is_dir():  # DATASET/wds, or a shard folder on its own
        from imagenet_prep.check.wds import check_wds

        for folder in wds_dirs or [wds]:
            problems += check_wds(folder)
        checked["wds"] = True
    # the shard checks report their folders' leftover temporary files too: list each once
    return list(dict.fromkeys(problems)), checked
