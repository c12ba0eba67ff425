"""Check that a subset dataset holds exactly its subset: classes, training file names, labels.

The images themselves are proven by the other checks (manifests, shard checksums);
this one proves they are the right ones: the class folders are the subset's classes,
a listed training subset's files are exactly the list, the shards hold as many
training samples as the list names, and labels.json / labels.csv map every class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imagenet_prep.errors import PrepError
from imagenet_prep.layout import LABEL_FILES, PREPARE_RECORD
from imagenet_prep.runtime import stage_state, subset_record
from imagenet_prep.runtime.files import is_tmp_name
from imagenet_prep.sources.catalog import class_dirs
from imagenet_prep.sources.subset import FULL, Subset, label_files

SHOWN = 3


@dataclass(frozen=True)
class SubsetCheck:
    """What the other checks need to know of the subset, and what this one found."""

    subset: Subset
    problems: list[str]

    @property
    def classes(self) -> tuple[str, ...] | None:
        """The WNIDs the shards' labels index, when they are not the 1000."""
        return None if self.subset.label_map is None else self.subset.output_classes()

    @property
    def train_images(self) -> int | None:
        """How many training images every output must hold, when the subset lists them."""
        files = self.subset.train_files
        return None if files is None else len(files)


def _names(folder: Path) -> set[str]:
    with os.scandir(folder) as it:
        return {e.name for e in it if e.is_file() and not is_tmp_name(e.name)}


def _diff(what: str, want: set[str], have: set[str]) -> list[str]:
    out = []
    if missing := sorted(want - have):
        out.append(f"{what}: {len(missing)} missing, first: {', '.join(missing[:SHOWN])}")
    if extra := sorted(have - want):
        out.append(f"{what}: {len(extra)} not in the subset, first: "
                   f"{', '.join(extra[:SHOWN])}")
    return out


def check_subset(dataset: Path) -> SubsetCheck:
    """The dataset's subset and the problems of holding it (none for a whole dataset, apart
    from label files that differ from what they should say)."""
    try:
        subset = subset_record.recorded(dataset) or FULL
    except PrepError as e:
        return SubsetCheck(FULL, [str(e)])
    problems: list[str] = []
    for name, data in label_files(subset).items():
        path = dataset / name
        assert name in LABEL_FILES
        try:
            if path.read_bytes() != data:
                problems.append(f"{path}: differs from the labels of {subset.describe()}")
        except FileNotFoundError:
            # a whole dataset has them once a `prepare` run has finished (the stages alone
            # write none); datasets older than the label files get them from the next run
            if not subset.full or stage_state.load(dataset, PREPARE_RECORD) is not None:
                problems.append(f"{path}: missing")
    if subset.full:
        return SubsetCheck(subset, problems)
    want = set(subset.classes)
    train = dataset / "train"
    if train.is_dir():
        problems += _diff(f"{train}: class folders", want, set(class_dirs(train)))
        if subset.train_files is not None:
            have: set[str] = set()
            for wnid in class_dirs(train):
                have |= _names(train / wnid)
            problems += _diff(f"{train}: training files", set(subset.train_files), have)
    val = dataset / "val"
    if val.is_dir():
        extra = sorted(set(class_dirs(val)) - want)
        if extra:
            problems.append(f"{val}: class folders not in the subset, first: "
                            f"{', '.join(extra[:SHOWN])}")
    return SubsetCheck(subset, problems)
