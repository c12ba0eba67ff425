"""`check_dataset`: prove every output the dataset was asked to contain, or list what is wrong.

What to prove comes from the expectation record (written before any work), not from
what happens to be on disk: an asked-for output that is absent or half-made is a
problem, and a folder that no run ever touched is "nothing to check", never OK.
Outputs a stage recorded making are proved too (datasets older than the expectation
have only those).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagenet_prep.check.extracted import prove_extracted
from imagenet_prep.check.folders import (
    check_csv,
    check_flat,
    check_splits,
    check_synsets,
    check_tmp_files,
)
from imagenet_prep.check.hf import check_root_card, check_shards, check_wds_card
from imagenet_prep.check.loaders import check_loaders, loaders_from_records
from imagenet_prep.check.state_records import boxes_problems, read_all, variant_problems
from imagenet_prep.check.subset import check_subset
from imagenet_prep.errors import NothingToCheck
from imagenet_prep.layout import (
    BBOX_RECORD,
    CARD_RECORD,
    EXTRACT_SPLITS,
    MDS_RECORD,
    PARQUET_RECORD,
    STATE_DIR,
    SYNSETS_RECORD,
    TFRECORD,
    TFRECORD_RECORD,
    TFRECORD_REPORT,
    VALTREE_RECORD,
    WDS_DIR,
    WDS_RECORD,
    extract_record,
)
from imagenet_prep.runtime import expectation, stage_state
from imagenet_prep.runtime.pool import Workers

if TYPE_CHECKING:
    from imagenet_prep.check.tfrecord import RecordsPass


def _outputs_from_records(dataset: Path) -> dict[str, dict[str, Any]]:
    """What the stage records say was made (all a dataset older than the expectation has)."""
    outputs: dict[str, dict[str, Any]] = {}
    splits = [s for s in EXTRACT_SPLITS if stage_state.load(dataset, extract_record(s))]
    if splits:
        outputs["extract"] = {"splits": splits}
    for name, record in (("valtree", VALTREE_RECORD), ("bbox", BBOX_RECORD),
                         ("synsets", SYNSETS_RECORD), ("tfrecord", TFRECORD_RECORD),
                         ("parquet", PARQUET_RECORD), ("mds", MDS_RECORD),
                         ("card", CARD_RECORD)):
        if stage_state.load(dataset, record) is not None:
            outputs[name] = {}
    if any((dataset / lay.folder).is_dir() for lay in TFRECORD.values()):
        outputs["tfrecord"] = {}
    outputs.update(loaders_from_records(dataset))
    return outputs


def asked_outputs(dataset: Path) -> dict[str, dict[str, Any]]:
    """name -> options of every output this dataset was asked to contain.

    Raises NothingToCheck for a folder no run has touched (the archives folder, an
    empty or unrelated folder); a WebDataset folder of its own counts as a dataset.
    """
    rec = expectation.load(dataset)
    # what was asked, and anything else a stage recorded making (proved all the same)
    outputs = {**_outputs_from_records(dataset), **(rec["outputs"] if rec else {})}
    wds = dataset / WDS_DIR
    if any(stage_state.load(d, WDS_RECORD) is not None for d in (dataset, wds)):
        outputs["wds"] = {"folder": "." if stage_state.load(dataset, WDS_RECORD) else WDS_DIR}
    if not outputs:
        raise NothingToCheck(
            f"{dataset}: nothing here to check: no imagenet-prep dataset (no "
            f"{STATE_DIR}/{expectation.EXPECT}.json or stage records)")
    return outputs


def check_dataset(dataset: Path, workers: Workers = None,
                  prechecked: Mapping[str, RecordsPass] | None = None
                  ) -> tuple[list[str], dict]:
    """(problems, summary of what was checked, with the damaged files in "damaged").

    `prechecked`: TFRecord shards whose records a caller has already read (the report,
    which downloads each shard of a bucket once for both).  Raises NothingToCheck when
    the folder is not a dataset.
    """
    if not dataset.is_dir():
        return [f"{dataset}: not a folder"], {}
    outputs = asked_outputs(dataset)
    read_all(dataset)  # a damaged state record stops here, as it stops the next run
    problems = check_tmp_files(dataset) + variant_problems(dataset) + boxes_problems(dataset)
    damaged: list[str] = []
    shards: list[Path] = []
    checked: dict[str, Any] = {"outputs": sorted(outputs)}
    checked.update(dict.fromkeys(outputs, True))
    sub = check_subset(dataset)  # which images the outputs must hold, and their labels
    problems += sub.problems
    if not sub.subset.full:
        checked["subset"] = sub.subset.describe()
    counts = {} if sub.train_images is None else {"train": sub.train_images}
    if "extract" in outputs:
        problems += check_splits(dataset)
        more, damaged = prove_extracted(dataset, list(outputs["extract"].get("splits", [])),
                                        workers)
        problems += more
    if "valtree" in outputs and stage_state.load(dataset, VALTREE_RECORD) is None:
        problems.append(f"{dataset / 'val'}: not yet grouped into class folders (valtree did "
                        "not finish)")
    if "flatten" in outputs:
        problems += check_flat(dataset, required=outputs["flatten"].get("splits", ()))
    if "synsets" in outputs:
        problems += check_synsets(dataset, required=True)
    if "bbox" in outputs:
        problems += check_csv(dataset)
    if "tfrecord" in outputs:
        from imagenet_prep.check.tfrecord import check_tfrecords

        report = stage_state.load(dataset, TFRECORD_REPORT) or {}
        dali = outputs["tfrecord"].get("dali_index", report.get("dali_index", False))
        required = tuple(outputs["tfrecord"].get("splits", ()))
        problems += check_tfrecords(dataset, {k: n for k, n in counts.items() if k in required},
                                    workers=workers, dali_index=dali, required=required,
                                    damaged=shards, classes=sub.classes,
                                    prechecked=prechecked)
        checked["skipped_images"] = report.get("skipped", [])
    if "wds" in outputs:
        from imagenet_prep.check.wds import check_wds

        folder = dataset / outputs["wds"].get("folder", WDS_DIR)
        if not folder.is_dir():
            problems.append(f"{folder}: missing (WebDataset shards were asked for)")
        else:
            problems += check_wds(folder, workers=workers, damaged=shards, classes=sub.classes,
                                  expected_counts=counts)
            problems += check_wds_card(folder)
    for kind in ("parquet", "mds"):
        if kind in outputs:
            problems += check_shards(dataset, kind, workers=workers, damaged=shards)
    if "card" in outputs:
        problems += check_root_card(dataset)
    problems += check_loaders(dataset, outputs, workers, shards)
    checked["damaged"] = damaged + [str(p.relative_to(dataset)) for p in shards
                                    if p.is_relative_to(dataset)]
    # the shard checks report their folders' leftover temporary files too: list each once
    return list(dict.fromkeys(problems)), checked
