"""Which subset a dataset holds, recorded once and held to on every later run.

`claim` is called by every writer before it writes an output: the first run with a
subset records it (the identity in STATE_DIR/subset.json, the lists beside it) and
writes DATASET/labels.json and labels.csv; a later run that names no subset goes on
with the recorded one, and a run asking for other images is refused in one line,
so one dataset never mixes two subsets, or a subset and the whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from imagenet_prep.errors import PrepError
from imagenet_prep.layout import (
    LABEL_FILES,
    STATE_DIR,
    SUBSET_CLASSES,
    SUBSET_RECORD,
    SUBSET_TRAIN,
    VARIANTS_DIR,
)
from imagenet_prep.runtime import expectation, stage_state
from imagenet_prep.runtime.files import state_dir, write_atomic, write_if_changed
from imagenet_prep.sources.subset import FULL, Subset, from_lists, label_files, list_sha256


def _list_path(dataset: Path, name: str) -> Path:
    return dataset / STATE_DIR / name


_REWRITE = "rerun with the same --classes/--train-subset/--subset-labels to write it again"


def _read_list(dataset: Path, name: str, sha256: str) -> list[str]:
    path = _list_path(dataset, name)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise PrepError(f"{path}: missing (the dataset's subset list); {_REWRITE}, or start "
                        "over in an empty folder") from None
    except UnicodeDecodeError:
        raise PrepError(f"{path}: damaged (not UTF-8 text); {_REWRITE}") from None
    if list_sha256(lines) != sha256:
        raise PrepError(f"{path}: differs from the subset recorded in "
                        f"{stage_state.record_path(dataset, SUBSET_RECORD)}; {_REWRITE}")
    return lines


def _record_asked(dataset: Path, asked: Subset | None) -> dict | None:
    """The subset record, when `asked` is the subset it records (the same lists, by their
    SHA-256, and labels): the asked lists can stand in for lists damaged or gone."""
    if asked is None or asked.full:
        return None
    rec = stage_state.load(dataset, SUBSET_RECORD)
    want = asked.identity()
    if rec is None or any(rec.get(k) != want[k]
                          for k in ("classes_sha256", "train_sha256", "labels")):
        return None
    return rec


def _mend_lists(dataset: Path, asked: Subset | None) -> None:
    """A run asked for the recorded subset writes back its lists when damaged or gone."""
    if asked is not None and _record_asked(dataset, asked) is not None:
        write_if_changed(_list_path(dataset, SUBSET_CLASSES), _list_text(asked.classes))
        if asked.train_files is not None:
            write_if_changed(_list_path(dataset, SUBSET_TRAIN),
                             _list_text(sorted(asked.train_files)))


def recorded(dataset: Path) -> Subset | None:
    """The subset the dataset holds; FULL for a dataset made of every image; None for a
    folder nothing was asked of yet."""
    rec = stage_state.load(dataset, SUBSET_RECORD)
    if rec is None:
        if _list_path(dataset, SUBSET_CLASSES).is_file():
            raise PrepError(f"{stage_state.record_path(dataset, SUBSET_RECORD)}: missing, but "
                            f"{_list_path(dataset, SUBSET_CLASSES)} lists a subset: rerun with "
                            "the same --classes/--train-subset/--subset-labels to record it "
                            "again, or start over in an empty folder")
        made = expectation.load(dataset)
        return FULL if made and made.get("outputs") else None
    classes = _read_list(dataset, SUBSET_CLASSES, rec["classes_sha256"])
    train = _read_list(dataset, SUBSET_TRAIN, rec["train_sha256"]) \
        if rec.get("train_sha256") else None
    return from_lists(rec, classes, train)


def _name(s: Subset) -> str:
    return "the whole of ILSVRC2012" if s.full else f"the subset {s.describe()}"


def chosen(dataset: Path, asked: Subset | None) -> Subset:
    """The subset this run writes: `asked`, or the recorded one when none is asked (for a
    new dataset, FULL, or the original's subset when it is a resized variant of one); one
    other than the recorded one is refused.  Writes nothing."""
    if asked is not None and _lists_without_record(dataset, asked):
        return asked  # a claim cut short after its lists: `claim` records it again
    if (rec := _record_asked(dataset, asked)) is not None:  # `claim` mends its lists
        assert asked is not None
        return from_lists(rec, asked.classes, None if asked.train_files is None else
                          sorted(asked.train_files))
    before = recorded(dataset)
    out = asked or before or _original_subset(dataset) or FULL
    if before is not None and not out.same_as(before):
        raise PrepError(f"{dataset}: holds {_name(before)}; this run asks for {_name(out)}: "
                        "rerun with the same --classes/--train-subset/--subset-labels, or "
                        "start over in an empty folder")
    return before or out  # the same images: as recorded (lists named as the first run did)


def _list_text(names: Iterable[str]) -> str:
    return "".join(f"{n}\n" for n in names)


def _lists_without_record(dataset: Path, asked: Subset) -> bool:
    """The lists `claim` writes first hold `asked`, and its record, written last, is not
    there: a run killed in between (or a deleted record) is resumed with the same subset."""
    if asked.full or stage_state.load(dataset, SUBSET_RECORD) is not None:
        return False
    want = {SUBSET_CLASSES: _list_text(asked.classes),
            SUBSET_TRAIN: None if asked.train_files is None else
            _list_text(sorted(asked.train_files))}
    for name, text in want.items():
        try:
            if _list_path(dataset, name).read_text(encoding="utf-8") != text:
                return False
        except FileNotFoundError:
            if text is not None:
                return False
    return True


def _original_subset(variant: Path) -> Subset | None:
    """The subset of the dataset that `variant` (DATASET/variants/<tag>) resizes: a
    variant made without --classes/--train-subset holds the same images as its original."""
    parent = variant.parent
    if parent.name != VARIANTS_DIR:
        return None
    return recorded(parent.parent)


def claim(dataset: Path, asked: Subset | None) -> Subset:
    """`chosen`, then recorded (a new subset) with its label files (re)written.  Call it
    once the inputs are proven, before writing any output.  A whole dataset gets its label
    files from `prepare` at the end (the stages alone leave its outputs as they were)."""
    _mend_lists(dataset, asked)
    chosen_ = chosen(dataset, asked)
    if not chosen_.full and stage_state.load(dataset, SUBSET_RECORD) is None:
        state_dir(dataset)
        write_atomic(_list_path(dataset, SUBSET_CLASSES), _list_text(chosen_.classes))
        if chosen_.train_files is not None:
            write_atomic(_list_path(dataset, SUBSET_TRAIN),
                         _list_text(sorted(chosen_.train_files)))
        stage_state.save(dataset, SUBSET_RECORD, chosen_.identity())
    if not chosen_.full:
        write_label_files(dataset, chosen_)
    return chosen_


def write_label_files(dataset: Path, subset: Subset) -> None:
    """DATASET/labels.json and labels.csv, unless they already hold these bytes."""
    for name, data in label_files(subset).items():
        path = dataset / name
        assert name in LABEL_FILES
        try:
            if path.read_bytes() == data:
                continue
        except FileNotFoundError:
            pass
        write_atomic(path, data)
