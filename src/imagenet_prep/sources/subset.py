"""Subsets of ILSVRC2012: which classes and which training images a dataset holds.

One `Subset` says it for every output, and catalogs are filtered here only
(`keep`), so class trees, flat folders, TFRecords and WebDataset shards hold the
same images.  `--classes` names a list of WNIDs (imagenet100, imagenette,
imagewoof or a file); `--train-subset` a list of training file names (1pct, 10pct
or a file); validation keeps every image of the chosen classes.  The lists ship
in metadata/data/subsets/ (docs/subsets.md gives their origin and licences).

Labels: a subset's index of a class is its rank among the subset's sorted WNIDs
(0..N-1, what ImageFolder gives on the subset tree); with `labels="imagenet"` the
outputs keep the 1000-class index instead.  `label_table` writes every convention.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from importlib.resources import files
from pathlib import Path

import numpy as np

from imagenet_prep.errors import OptionError, PrepError
from imagenet_prep.sources import metadata
from imagenet_prep.sources.catalog import Catalog

CLASS_LISTS = {"imagenet100": "imagenet100.txt", "imagenette": "imagenette.txt",
               "imagewoof": "imagewoof.txt"}
TRAIN_LISTS = {"1pct": "train_1percent.txt", "10pct": "train_10percent.txt"}
LABEL_RULES = ("subset", "imagenet")  # what the outputs' labels index: see docs/subsets.md
TRAIN_NAME = re.compile(r"(n\d{8})_[^/]+\.JPEG")
SHOWN = 3  # offenders named in an error


@dataclass(frozen=True)
class Subset:
    """The classes (sorted WNIDs) and, optionally, the training file names a dataset holds.

    `classes_from` / `train_from` say where the lists came from (a bundled name or a
    file), None when not restricted; both None is the whole of ILSVRC2012.
    """

    classes: tuple[str, ...]
    train_files: frozenset[str] | None = None
    classes_from: str | None = None
    train_from: str | None = None
    labels: str = "subset"

    @property
    def full(self) -> bool:
        return self.classes_from is None and self.train_from is None

    @cached_property
    def wanted(self) -> np.ndarray:
        """bool per 1000-class index: is the class in the subset."""
        mask = np.zeros(metadata.NUM_CLASSES, dtype=bool)
        index = metadata.wnid_to_index()
        mask[[index[w] for w in self.classes]] = True
        return mask

    def keeps_class(self, wnid: str) -> bool:
        i = metadata.wnid_to_index().get(wnid)
        return i is not None and bool(self.wanted[i])

    @cached_property
    def label_map(self) -> np.ndarray | None:
        """0..999 -> the label the outputs write (subset rank, -1 outside); None when the
        outputs keep the 1000-class index."""
        if self.full or self.labels == "imagenet":
            return None
        out = np.full(metadata.NUM_CLASSES, -1, dtype=np.int16)
        index = metadata.wnid_to_index()
        out[[index[w] for w in self.classes]] = np.arange(len(self.classes), dtype=np.int16)
        return out

    def output_classes(self) -> tuple[str, ...]:
        """The WNIDs the outputs' labels index (label k is the k-th)."""
        return metadata.wnids() if self.label_map is None else self.classes

    def train_names(self, wnid: str, names: Iterable[str]) -> list[str] | None:
        """Of a kept class's training file names, the ones the subset holds (None: all)."""
        if self.train_files is None:
            return None
        return [n for n in names if n in self.train_files]

    def keep(self, cat: Catalog) -> Catalog:
        """The catalog restricted to the subset (the one filter every output goes through),
        carrying the labels its outputs write."""
        if self.full:
            return cat
        labelled = cat.labels >= 0
        mask = np.where(labelled, self.wanted[np.where(labelled, cat.labels, 0)], cat.split ==
                        "test")
        if cat.split == "train" and self.train_files is not None:
            keep_names = self.train_files
            mask &= np.fromiter((n in keep_names for n in cat.names), dtype=bool,
                                count=len(cat))
        out = cat if mask.all() else cat.subset(np.flatnonzero(mask))
        return replace(out, label_map=self.label_map)

    def missing_train(self, found: Iterable[str], archive: Path) -> None:
        """Refuse training file names of the subset that the archive does not hold."""
        if self.train_files is None:
            return
        missing = self.train_files - set(found)
        if missing:
            shown = ", ".join(sorted(missing)[:SHOWN])
            raise PrepError(f"{self.train_from}: {len(missing)} training file names are not in "
                            f"{archive}, first: {shown}")

    def missing_classes(self, found: Iterable[str], archive: Path) -> None:
        """Refuse classes of the subset that the archive has no class tar of."""
        missing = sorted(set(self.classes) - set(found))
        if missing:
            raise PrepError(f"{self.classes_from or self.train_from}: {len(missing)} classes "
                            f"have no class archive in {archive}, first: "
                            f"{', '.join(missing[:SHOWN])}")

    def describe(self) -> str:
        """One phrase for summaries: `imagenet100 (100 classes), 1pct (1,283 images)`."""
        if self.full:
            return "all 1000 classes"
        parts = [f"{self.classes_from or 'all'} ({len(self.classes)} classes)"]
        if self.train_files is not None:
            parts.append(f"train {self.train_from} ({len(self.train_files):,} images)")
        return ", ".join(parts) + f", labels {self.labels}"

    def identity(self) -> dict[str, object]:
        """What a dataset records of its subset (the lists themselves go beside it)."""
        return {
            "classes": self.classes_from, "num_classes": len(self.classes),
            "classes_sha256": list_sha256(self.classes), "train": self.train_from,
            "train_files": None if self.train_files is None else len(self.train_files),
            "train_sha256": None if self.train_files is None else
            list_sha256(sorted(self.train_files)),
            "labels": self.labels,
        }

    def same_as(self, other: Subset) -> bool:
        """Same images and labels (whatever the lists were called)."""
        return (self.classes, self.train_files, self.labels) == \
            (other.classes, other.train_files, other.labels)


FULL = Subset(classes=metadata.wnids())


def list_sha256(lines: Sequence[str]) -> str:
    return hashlib.sha256("".join(f"{x}\n" for x in lines).encode()).hexdigest()


def _read_list(spec: str, named: dict[str, str], what: str) -> tuple[str, list[str]]:
    """(where it came from, its entries): a bundled list by name, else a file."""
    if spec in named:
        text = files(metadata.__name__).joinpath("data", "subsets", named[spec]).read_text(
            encoding="ascii")
        return spec, text.split()
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OptionError(f"{spec}: not a file, nor one of the named {what} "
                          f"({', '.join(named)})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PrepError(f"{spec}: cannot read the {what} list ({e})") from None
    entries = [line.strip() for line in text.splitlines()]
    return str(path), [e for e in entries if e and not e.startswith("#")]


def read_classes(spec: str) -> tuple[str, tuple[str, ...]]:
    """(where from, sorted unique WNIDs) of `--classes`; unknown WNIDs and an empty list
    are refused, naming the first."""
    where, entries = _read_list(spec, CLASS_LISTS, "class lists")
    index = metadata.wnid_to_index()
    unknown = [w for w in entries if w not in index]
    if unknown:
        raise PrepError(f"{where}: {len(unknown)} entries are not ILSVRC2012 class WNIDs, "
                        f"first: {', '.join(unknown[:SHOWN])}")
    if not entries:
        raise PrepError(f"{where}: no WNIDs: the subset would be empty")
    return where, tuple(sorted(set(entries)))


def read_train(spec: str) -> tuple[str, frozenset[str]]:
    """(where from, file names) of `--train-subset`; names that cannot be ILSVRC2012
    training files are refused, naming the first."""
    where, entries = _read_list(spec, TRAIN_LISTS, "training subsets")
    index = metadata.wnid_to_index()
    bad = [n for n in entries if not ((m := TRAIN_NAME.fullmatch(n)) and m.group(1) in index)]
    if bad:
        raise PrepError(f"{where}: {len(bad)} entries are not ILSVRC2012 training file names "
                        f"(WNID_N.JPEG), first: {', '.join(bad[:SHOWN])}")
    if not entries:
        raise PrepError(f"{where}: no file names: the subset would be empty")
    return where, frozenset(entries)


def resolve(classes: str | None, train: str | None, labels: str = "subset") -> Subset | None:
    """The Subset the options ask for; None when neither option is given."""
    if labels not in LABEL_RULES:
        raise OptionError(f"--subset-labels {labels}: choose from {', '.join(LABEL_RULES)}")
    if classes is None and train is None:
        if labels != "subset":
            raise OptionError("--subset-labels applies with --classes or --train-subset")
        return None
    classes_from, wnids = read_classes(classes) if classes is not None else (None, None)
    if train is None:
        assert wnids is not None
        return Subset(wnids, None, classes_from, None, labels)
    train_from, names = read_train(train)
    by_class = {n.split("_", 1)[0] for n in names}
    if wnids is None:  # the classes are the ones the file names belong to
        wnids = tuple(sorted(by_class))
    else:
        keep = set(wnids)
        names = frozenset(n for n in names if n.split("_", 1)[0] in keep)
        if not names:
            raise PrepError(f"{train_from}: none of its training files is in a class of "
                            f"{classes_from}: the subset would be empty")
        empty = [w for w in wnids if w not in by_class]
        if empty:
            raise PrepError(f"{train_from}: no training file of {len(empty)} classes of "
                            f"{classes_from}, first: {', '.join(empty[:SHOWN])} (a class "
                            "without training images would shift every later index)")
    return Subset(wnids, names, classes_from, train_from, labels)


def from_lists(identity: dict, classes: Sequence[str], train: Sequence[str] | None) -> Subset:
    """The Subset a dataset recorded (its identity and the two lists kept beside it)."""
    return Subset(tuple(classes), None if train is None else frozenset(train),
                  identity.get("classes"), identity.get("train"), identity.get("labels", "subset"))


# --- labels.json / labels.csv ------------------------------------------------------------

LABEL_COLUMNS = ("wnid", "label", "imagenet_label", "tfrecord_label", "reference_label",
                 "description", "hf_name")


def label_rows(subset: Subset) -> list[dict[str, object]]:
    """One row per class of the dataset, in label order, with every numbering.

    label: what the dataset's outputs write (0..N-1 by default), imagenet_label:
    0..999 (torchvision, TFDS), tfrecord_label: the TFRecord `image/class/label`
    (label + 1), reference_label: 1..1000 (TensorFlow's reference), description:
    the synset words, hf_name: the Hugging Face Hub `imagenet-1k` class name.
    """
    index, words = metadata.wnid_to_index(), metadata.descriptions()
    hub = metadata.hub_class_names()
    out_index = {w: i for i, w in enumerate(subset.output_classes())}
    rows = []
    for w in subset.classes:
        rows.append({"wnid": w, "label": out_index[w], "imagenet_label": index[w],
                     "tfrecord_label": out_index[w] + 1, "reference_label": index[w] + 1,
                     "description": words[w], "hf_name": hub[index[w]]})
    return rows


def label_files(subset: Subset) -> dict[str, bytes]:
    """The bytes of labels.json and labels.csv for the dataset's subset (sorted, fixed)."""
    rows = label_rows(subset)
    doc = {"subset": subset.identity() if not subset.full else None,
           "label_rule": "subset rank" if subset.label_map is not None else "imagenet 0..999",
           "columns": list(LABEL_COLUMNS), "classes": rows}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=LABEL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return {"labels.json": (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(),
            "labels.csv": text.getvalue().encode()}
