"""The shard engine: what every shard format (TFRecord, WebDataset) shares.

A format only says how one sample becomes byte pieces, how a shard begins and
ends, how shards are named and what goes beside them (`ShardFormat`).  The engine
does the rest the same way for all: the catalog of each split (from the archives
or from folders), the boxes, the seeded order and the shard bounds (from the
inputs only, so bytes depend on neither `--workers` nor the route), the state
that lets a rerun write only the missing shards and refuse other options, one
task per shard on the pool or Dask (each shard written under a temporary name,
fsynced and renamed), the `--on-bad-image` policy, and the report.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import google_crc32c
import numpy as np

from imagenet_prep.errors import BadImageError, PrepError
from imagenet_prep.formats.resize import image_encoder
from imagenet_prep.layout import BOX_CSV, VALTREE_RECORD, extract_record
from imagenet_prep.runtime import expectation, stage_state, subset_record
from imagenet_prep.runtime.file_manifest import damaged_files
from imagenet_prep.runtime.files import atomic_file, ensure_dir, is_tmp_name
from imagenet_prep.runtime.memory import release_free_memory
from imagenet_prep.runtime.pool import Workers, run_tasks
from imagenet_prep.runtime.progress import bar
from imagenet_prep.runtime.storage import listdir, open_input, relpath
from imagenet_prep.shards.order import Bounds, shuffle_order
from imagenet_prep.sources import metadata
from imagenet_prep.sources.archives import find_archive, require_archives
from imagenet_prep.sources.boxes import boxes_of, read_csv_arrays
from imagenet_prep.sources.catalog import (
    Catalog,
    flat_from_archive,
    grouped_from_folder,
    train_from_archive,
    with_labels,
)
from imagenet_prep.sources.names import BLOCK, Names
from imagenet_prep.sources.subset import Subset

SPLIT_ORDER = ("val", "train", "test")  # catalogs are built (and shards written) in this order
SAVE_EVERY = 2.0  # seconds between state saves while shards finish
NO_BOXES = np.zeros((0, 4), dtype=np.float32)
BoxSource = Path | None | Callable[[], Path | None]  # the box CSV, or what makes it
BoxTable = tuple[np.ndarray, np.ndarray]  # the CSV: image name per box (bytes), boxes (n, 4)
BoxArrays = tuple[np.ndarray, np.ndarray, np.ndarray]


# --- the --on-bad-image policy ----------------------------------------------------------

@dataclass(frozen=True)
class BadImagePolicy:
    """What an unreadable image does to its shard, chosen once from `--on-bad-image`."""

    skips: bool

    def __call__(self, error: BadImageError) -> str:
        """The note listed for a left-out image; without `skips`, the error stops the run."""
        if not self.skips:
            raise error
        return str(error)

    def keeps(self, entry: dict) -> bool:
        """Whether a finished shard stands: one that left images out is written again
        under `fail`, which then stops on the bad image."""
        return self.skips or not entry["skipped"]


ON_BAD_IMAGE = {"fail": BadImagePolicy(skips=False), "skip": BadImagePolicy(skips=True)}


def bad_image_policy(choice: str) -> BadImagePolicy:
    policy = ON_BAD_IMAGE.get(choice)
    if policy is None:
        raise PrepError(f"on_bad_image must be one of {', '.join(ON_BAD_IMAGE)}, not {choice!r}")
    return policy


# --- what a format says -----------------------------------------------------------------

@dataclass(frozen=True)
class ShardTask:
    """Everything one shard needs (pickled to a worker): its images in shard order, their
    boxes, and the format that encodes them."""

    format: ShardFormat
    split: str
    name: str
    path: Path
    catalog: Catalog
    box_counts: np.ndarray | None  # boxes per image (train), None otherwise
    boxes: np.ndarray | None  # (sum of box_counts, 4) in the format's box dtype, in order
    policy: BadImagePolicy
    indices: np.ndarray | None = None  # each image's rank in the split's sorted file names


class ShardEncoder(ABC):
    """One shard's byte pieces, made in the worker.  Image bytes are passed through as
    they are (the same object), so they reach the file by writev without a copy."""

    def begin(self) -> list[bytes]:
        return []

    @abstractmethod
    def sample(self, i: int, image: bytes, width: int, height: int, boxes: np.ndarray
               ) -> list[bytes]:
        """Catalog image `i` as pieces whose concatenation is its bytes in the shard."""

    def end(self, offset: int) -> list[bytes]:
        """What closes a shard of `offset` bytes so far."""
        return []

    def written(self) -> dict[str, Any]:
        """Once the shard is in place: write what goes beside it; extras for its entry."""
        return {}


class ShardFormat(ABC):
    """A shard format: names, per-split bounds, encoding, and the files beside shards.

    A subclass names its records and splits as class keywords (see __init_subclass__).
    Pickled with every task, so a format object holds only a few small values.
    """

    record: ClassVar[str]  # the state record (ROOT/.imagenet-prep/NAME.json), also its stage
    report_record: ClassVar[str]
    unit: ClassVar[str]  # what a shard holds, the key of its count: "records" or "samples"
    title: ClassVar[str]  # "TFRecords": for messages
    splits: ClassVar[tuple[str, ...]]
    box_dtype: ClassVar[type]
    sized: ClassVar[bool]  # the cut depends on image sizes: the state records them
    needs_boxes: ClassVar[bool]  # False: samples carry no boxes (no box CSV is read or made)
    root: Path  # where the state lives
    options: dict[str, Any]  # what fixes every shard's bytes: "seed" and the cut

    def __init_subclass__(cls, *, record: str, report: str, unit: str, title: str,
                          splits: tuple[str, ...], box_dtype: type = np.float32,
                          sized: bool = False, needs_boxes: bool = True, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.record, cls.report_record, cls.unit, cls.title = record, report, unit, title
        cls.splits, cls.box_dtype, cls.sized = splits, box_dtype, sized
        cls.needs_boxes = needs_boxes

    @abstractmethod
    def folder(self, split: str) -> Path:
        """Where a split's shards go."""

    def folders(self, split: str) -> tuple[Path, ...]:
        """Every folder a split writes into (made, and cleared of temporary files)."""
        return (self.folder(split),)

    @abstractmethod
    def shard_name(self, split: str, k: int, shards: int) -> str: ...

    def order(self, split: str, cat: Catalog) -> np.ndarray:
        """The split's images in shard order: by default the seeded hash of the names."""
        return shuffle_order(cat.names, self.options["seed"])

    @abstractmethod
    def bounds(self, split: str, cat: Catalog, order: np.ndarray) -> Bounds:
        """The split's shards as runs of the seeded order."""

    @abstractmethod
    def encoder(self, task: ShardTask) -> ShardEncoder: ...

    def is_ours(self, name: str) -> bool:
        """A name this format writes into its folders (refused there without a state)."""
        return not is_tmp_name(name)

    @abstractmethod
    def is_shard(self, split: str, name: str) -> bool:
        """A shard's name, of any cut, in the split's folder."""

    def found_shards(self, split: str) -> list[str]:
        """The shard files in the split's folder now, named as `shard_name` names them."""
        try:
            return [n for n in listdir(self.folder(split)) if self.is_shard(split, n)]
        except FileNotFoundError:
            return []

    @abstractmethod
    def finish_split(self, split: str, entries: list[dict]) -> None:
        """After the run: the index files of a split (its shards' entries in order)."""

    def start_over(self) -> str:
        """How the user starts this stage over (what a refusal or a damaged record ends with)."""
        return stage_state.start_over(self.root, self.record)

    @abstractmethod
    def sources(self, dataset: Path, archives: Path | None, from_folders: bool,
                splits: tuple[str, ...]) -> str:
        """The inputs of the splits, for `nothing to convert`."""

    def asked(self) -> dict[str, Any]:
        """What the dataset's expectation records of this output (check proves it)."""
        return dict(self.options)

    def describe(self, split: str | None = None) -> dict[str, Any]:
        """Where the output is, for the report: of the run, or with `split`, of that split."""
        return {"folder": str(self.root if split is None else self.folder(split))}


# --- catalogs and boxes -----------------------------------------------------------------

def flat_from_folder(split: str, root: Path) -> Catalog:
    """Index a flat folder root/*.JPEG (the extracted test split), sorted, unlabelled."""
    with os.scandir(root) as it:
        rows = sorted((e.name, e.stat(follow_symlinks=False).st_size) for e in it
                      if e.is_file(follow_symlinks=False) and not is_tmp_name(e.name))
    if not rows:
        raise PrepError(f"{root}: no images")
    return Catalog(
        split=split, names=Names.of(r[0] for r in rows),
        labels=np.full(len(rows), -1, dtype=np.int16),
        sizes=np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)), root=root,
    )


def split_catalog(split: str, dataset: Path, archives: Path | None, from_folders: bool,
                  labels: str, subset: Subset | None = None) -> Catalog | None:
    """The split's catalog (train, val or test) restricted to `subset`, or None when its
    source is absent.

    From folders, train and val are class trees (DATASET/val after `valtree`) and
    test is flat; from archives, val labels come from `labels` (see labels.val_labels).
    """
    if from_folders:
        root = dataset / split
        if not root.is_dir():
            return None
        rec = _folder_record(dataset, split)
        cat = flat_from_folder(split, root) if split == "test" else \
            grouped_from_folder(split, root)
        if rec is not None:
            refuse_incomplete_folder(dataset, split, cat, rec)
        else:
            print(f"{root}: not extracted by imagenet-prep; converting the {len(cat)} images "
                  "found, unproven", file=sys.stderr)
        return _kept(cat, subset)
    assert archives is not None
    archive = find_archive(archives, split)
    if archive is None:
        return None
    if split == "train":
        return _kept(train_from_archive(archive, subset if subset and not subset.full else None),
                     subset)
    if split == "test":
        return flat_from_archive(split, archive, None)
    from imagenet_prep.sources.labels import val_labels

    cat = flat_from_archive(split, archive, None)
    return _kept(with_labels(cat, val_labels(cat.names, archives=archives, dataset=dataset,
                                             source=labels)), subset)


def _kept(cat: Catalog, subset: Subset | None) -> Catalog:
    return cat if subset is None else subset.keep(cat)


def _folder_record(dataset: Path, split: str) -> dict | None:
    """The record a split folder is proven by (extraction; valtree for val), None for a folder
    imagenet-prep did not make; refused when its making did not finish."""
    record = VALTREE_RECORD if split == "val" else extract_record(split)
    rec = stage_state.load(dataset, record)
    if rec is None and (expectation.load(dataset) or {}).get("outputs", {}).get("extract"):
        what = "grouping (valtree)" if split == "val" and stage_state.load(
            dataset, extract_record("val")) else "extraction"
        raise PrepError(f"{dataset / split}: its {what} did not finish (no {record} record); "
                        "run the same extract, valtree or prepare again first")
    return rec


def refuse_incomplete_folder(dataset: Path, split: str, cat: Catalog, rec: dict) -> None:
    """Shards from folders only when the folders hold what the archive held (a killed
    extraction, a deleted class folder are refused, naming what to rerun)."""
    if split == "test":
        if rec["files"] != len(cat):
            raise PrepError(f"{dataset / split}: {len(cat)} images, the archive held "
                            f"{rec['files']}; run extract again to restore them")
        return
    wnids = metadata.wnids()
    per_label = np.bincount(cat.labels, minlength=len(wnids))
    got = {wnids[i]: int(n) for i in np.flatnonzero(per_label) for n in [per_label[i]]}
    for wnid in sorted(set(rec["classes"]) | set(got)):
        want, have = rec["classes"].get(wnid, 0), got.get(wnid, 0)
        if want != have:
            raise PrepError(f"{dataset / split / wnid}: {have} images, {want} expected "
                            f"({len(rec['classes'])} classes recorded); run "
                            + ("valtree" if split == "val" else "extract")
                            + " (or prepare) again to restore them first")


def catalog_digest(cat: Catalog, *, sizes: bool = False) -> str:
    """SHA-256 of the catalog's names and labels (and sizes, when the plan depends on them)."""
    h = hashlib.sha256()
    for a in range(0, len(cat), BLOCK):  # a block of rows at a time: no list of all 1.28 M
        b = a + BLOCK
        cols = [cat.names[a:b], cat.labels[a:b].tolist()] + (
            [cat.sizes[a:b].tolist()] if sizes else [])
        for row in zip(*cols, strict=True):
            h.update(("\t".join(map(str, row)) + "\n").encode())
    return h.hexdigest()


def name_ranks(cat: Catalog) -> np.ndarray | None:
    """Each image's rank among the split's file names sorted, or None when that is its
    catalog index (catalogs from archives are sorted by name; validation class folders are
    listed class by class): a number the same whatever the route."""
    raw = cat.names.raw
    if len(raw) < 2 or bool(np.all(raw[:-1] <= raw[1:])):
        return None
    ranks = np.empty(len(raw), dtype=np.int64)
    ranks[np.argsort(raw, kind="stable")] = np.arange(len(raw), dtype=np.int64)
    return ranks


def load_boxes(csv: Path | None) -> tuple[BoxTable, str | None]:
    """The CSV's boxes as arrays (name per box line, boxes), and its SHA-256 (None: no
    boxes available)."""
    if csv is None:
        return (np.zeros(0, dtype="S1"), NO_BOXES.astype(np.float64)), None
    h = hashlib.sha256()
    with open_input(csv) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return read_csv_arrays(csv), h.hexdigest()


def box_arrays(cat: Catalog, table: BoxTable, dtype: type = np.float32) -> BoxArrays:
    """(boxes per catalog image, where each image's boxes start, all boxes as (n, 4)).

    Compact arrays (~25 MB for ImageNet in float32), joined by binary search on the
    names.  float32 is what an Example stores, rounded from the CSV's decimal through
    a double as the reference; float64 keeps the CSV's decimals exactly.
    """
    counts, boxes = boxes_of(cat.names.raw, *table, dtype=dtype)
    starts = np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))
    return counts, starts, boxes.reshape(-1, 4)


def shard_boxes(arrays: BoxArrays, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(boxes per image, their boxes in that order) for the images `idx` of one shard."""
    all_counts, starts, all_boxes = arrays
    pieces = [all_boxes[starts[i]:starts[i + 1]] for i in idx]
    return all_counts[idx], (np.concatenate(pieces) if pieces else NO_BOXES)


# --- one shard (runs in a worker) -------------------------------------------------------

def image_where(cat: Catalog, i: int) -> str:
    """Name an image for messages: the archive member, or the file."""
    if cat.archive is None:
        return str(cat.path(i))
    if cat.split == "train":
        return f"{cat.archive}:{cat.wnid(i)}.tar:{cat.names[i]}"
    return f"{cat.archive}:{cat.names[i]}"


IOV_MAX = 1024  # pieces one writev takes (Linux); a format may hand over more at once


def write_parts(fd: int, parts: list[bytes], size: int) -> None:
    """One writev for a sample (no copies of the image bytes), IOV_MAX pieces at a time;
    finish a (rare) short write with plain writes."""
    if len(parts) > IOV_MAX:
        for a in range(0, len(parts), IOV_MAX):
            chunk = parts[a:a + IOV_MAX]
            write_parts(fd, chunk, sum(map(len, chunk)))
        return
    done = os.writev(fd, parts) if parts else 0
    if done < size:
        rest = memoryview(b"".join(parts))[done:]
        while rest:
            rest = rest[os.write(fd, rest):]


def refuse_strays(fmt: ShardFormat, planned: Iterable[str], recorded: Iterable[str]) -> None:
    """A shard-named file that this run does not plan and no earlier run recorded (another
    cut's, or not ours) would sit among the shards, read by a loader's glob
    (`data/train-*.parquet`) and named by `check` after every rerun: refused by name,
    never deleted."""
    allowed = {*planned, *recorded}
    strays = list(dict.fromkeys(fmt.folder(split) / name for split in fmt.splits
                                for name in fmt.found_shards(split) if name not in allowed))
    if strays:
        more = f" (and {len(strays) - 1} more)" if len(strays) > 1 else ""
        raise PrepError(f"{strays[0]}{more}: a shard that no {fmt.record} run recorded and "
                        "this one does not plan (another cut, or not ours); move it away "
                        "and rerun")


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Write one shard; returns its state entry (what it holds)."""
    cat, policy = task.catalog, task.policy
    enc = task.format.encoder(task)
    starts = None if task.box_counts is None else np.concatenate(
        ([0], np.cumsum(task.box_counts)))
    converted: list[list[str]] = []
    skipped: list[list[str]] = []
    # fsync before the rename: once the state lists a shard, its bytes are on disk
    with cat.open() as src, atomic_file(task.path, fsync=True) as f:
        fd = f.fileno()  # samples go straight to the file with writev, never via f's buffer
        parts = enc.begin()
        offset = sum(map(len, parts))
        write_parts(fd, parts, offset)
        crc = _extend(0, parts)
        stored_image = image_encoder(task.format.options.get("resize"))  # formats/resize.py
        for i in range(len(cat)):
            data = src.read(i)
            try:
                image, width, height, reason = stored_image(data, image_where(cat, i))
            except BadImageError as e:
                skipped.append([cat.names[i], policy(e)])
                continue
            if reason is not None:
                converted.append([cat.names[i], reason])
            boxes = NO_BOXES if starts is None or task.boxes is None else \
                task.boxes[starts[i]:starts[i + 1]]
            parts = enc.sample(i, image, width, height, boxes)
            size = sum(map(len, parts))
            write_parts(fd, parts, size)
            crc = _extend(crc, parts)
            offset += size
        parts = enc.end(offset)
        size = sum(map(len, parts))
        write_parts(fd, parts, size)
        crc = _extend(crc, parts)
        offset += size
        io = src.io()
    return {
        "split": task.split, "name": task.name, task.format.unit: len(cat) - len(skipped),
        "bytes": offset, "crc32c": crc, "input_bytes": cat.total_bytes(),
        "converted": converted, "skipped": skipped, **enc.written(),
        **({"io": io} if io is not None else {}),  # remote reads: for the run, not the state
    }


def _extend(crc: int, parts: list[bytes]) -> int:
    """The shard's CRC32C so far, extended by `parts` (what `check` proves the shard by)."""
    for part in parts:
        crc = google_crc32c.extend(crc, part)
    return crc


# --- state: resume and refusal ----------------------------------------------------------

def check_state(
    state: dict | None, options: dict, splits: dict[str, dict], *, stage: str, what: str,
    folders: dict[str, Path], is_ours: Callable[[str], bool], start_over: str,
) -> dict:
    """The state to continue from; refuse a rerun whose options or inputs differ.

    Without a state, a split folder (`folders`) holding files of ours (`is_ours`) was
    written by a run that nothing recorded: refused rather than overwritten.
    """
    if state is None:
        for d in dict.fromkeys(folders.values()):
            if d.is_dir() and any(is_ours(e) for e in listdir(d)):
                raise PrepError(f"{d}: holds files that no {stage} run recorded; " + start_over)
        return {"options": options, "splits": splits, "shards": {}}
    old = state.get("options", {})
    if old != options:
        was = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(old.items()))
        raise PrepError(
            f"{what} were started with other options ({was}); rerun with those, or "
            + start_over)
    for split, info in splits.items():
        before = state["splits"].get(split)
        if before is not None and before != info and "shards" in info and \
                {**before, "shards": info["shards"]} == info:  # same images, another cut
            raise PrepError(
                f"{folders[split]}: the {split} shards were cut into {before.get('shards')} "
                f"before and {info['shards']} now (the same images: an earlier imagenet-prep "
                "planned the cut otherwise); " + start_over)
        if before is not None and before != info:
            raise PrepError(
                f"{folders[split]}: written from other {split} images or boxes "
                f"({before['images']} images before, {info['images']} now); " + start_over)
        state["splits"][split] = info
    return state


def finished(path: Path, split: str, entry: dict | None) -> bool:
    """A shard is finished when its final file has the size its state entry records.

    A shard renamed into place after the last state save is simply written again
    (same bytes), so the state never has to be saved after every shard.
    """
    if entry is None or entry.get("split") != split:
        return False
    try:
        return path.stat().st_size == entry["bytes"]
    except FileNotFoundError:
        return False


def remove_stale_tmp(folder: Path) -> None:
    """Temporary files of a killed run: each run holds the dataset lock, so none is live
    (a bucket has none: objects are uploaded whole)."""
    for name in listdir(folder) if isinstance(folder, Path) else ():
        if is_tmp_name(name):
            (folder / name).unlink(missing_ok=True)


# --- the run (main process) -------------------------------------------------------------

def write_shards(
    fmt: ShardFormat, *, dataset: Path, archives: Path | None, from_folders: bool,
    labels: str, splits: tuple[str, ...], workers: Workers,
    policy: BadImagePolicy, boxes_csv: BoxSource, subset: Subset | None = None,
) -> dict[str, Any]:
    """Write the shards of `fmt` that are missing; returns the run report (also saved).

    `dataset` holds the images when `from_folders`; `boxes_csv` (None: no boxes; a
    callable: made once the inputs are proven) is read only when train is converted.
    """
    unknown = [s for s in splits if s not in fmt.splits]
    if unknown:
        raise PrepError(f"unknown split {unknown[0]!r}; choose from {', '.join(fmt.splits)}")
    found = {} if from_folders or archives is None else \
        require_archives(archives, splits, f"{fmt.record} --splits {','.join(splits)}")
    identities = expectation.identify(dataset, found)
    t0 = time.monotonic()
    subset = subset_record.chosen(dataset, subset)  # refuses another subset at once
    cats: dict[str, Catalog] = {}
    for split in SPLIT_ORDER:
        if split in splits:
            cat = split_catalog(split, dataset, archives, from_folders, labels, subset)
            if cat is not None:
                cats[split] = cat
    if not cats:
        where = fmt.sources(dataset, archives, from_folders, splits)
        raise PrepError(f"nothing to convert: none of {where} exists")
    ensure_dir(fmt.root)
    subset = subset_record.claim(dataset, subset)  # refuses another subset, before any write
    release_free_memory()  # what building the catalogs freed, before anything else grows
    if not fmt.needs_boxes:
        boxes_csv = None
    elif callable(boxes_csv):  # made only now: a run refused above has written nothing
        boxes_csv = boxes_csv() if "train" in cats else None
    if "train" in cats and boxes_csv is None and fmt.needs_boxes:
        print(f"{fmt.record}: no {BOX_CSV} and no box XMLs: train records get empty box lists",
              file=sys.stderr)
    table, boxes_sha = load_boxes(boxes_csv if "train" in cats else None)
    # joined to the catalog at once, so the CSV's arrays are gone before anything else grows
    boxes_by = {"train": box_arrays(cats["train"], table, fmt.box_dtype)} if "train" in cats \
        else {}
    del table
    release_free_memory()
    plans: dict[str, tuple[np.ndarray, Bounds]] = {}
    ranks = {split: name_ranks(cat) for split, cat in cats.items()}
    for split, cat in cats.items():
        order = fmt.order(split, cat)
        plans[split] = (order, fmt.bounds(split, cat, order))
    split_info = {s: {"images": len(c), "digest": catalog_digest(c, sizes=fmt.sized),
                      "boxes_sha256": boxes_sha if s == "train" else None,
                      **({"shards": len(plans[s][1])} if fmt.sized else {})}
                  for s, c in cats.items()}
    state = check_state(
        stage_state.load(fmt.root, fmt.record), fmt.options, split_info, stage=fmt.record,
        what=f"{fmt.root}: the {fmt.title}", start_over=fmt.start_over(),
        folders={s: fmt.folder(s) for s in fmt.splits}, is_ours=fmt.is_ours)
    refuse_strays(fmt, [fmt.shard_name(s, k, len(plans[s][1]))
                        for s in cats for k in range(len(plans[s][1]))], state["shards"])
    stage_state.save(fmt.root, fmt.record, state)  # before any shard: a rerun can compare
    asked = {**fmt.asked(), "splits": list(cats)}
    if fmt.root != dataset:
        asked["folder"] = relpath(fmt.root, dataset)
    expectation.expect(dataset, {fmt.record: asked}, identities)
    for folder in dict.fromkeys(d for s in cats for d in fmt.folders(s)):
        remove_stale_tmp(ensure_dir(folder))

    def names(split: str) -> list[str]:
        n = len(plans[split][1])
        return [fmt.shard_name(split, k, n) for k in range(n)]

    def make_task(split: str, k: int) -> ShardTask:
        """Built lazily, a pool window at a time: only a few shards' catalogs exist at once."""
        order, bounds = plans[split]
        idx = order[bounds[k][0]:bounds[k][1]]
        counts, boxes = shard_boxes(boxes_by[split], idx) if split in boxes_by else (None, None)
        name = fmt.shard_name(split, k, len(bounds))
        return ShardTask(format=fmt, split=split, name=name, path=fmt.folder(split) / name,
                         catalog=cats[split].subset(idx), box_counts=counts, boxes=boxes,
                         policy=policy,
                         indices=idx if ranks[split] is None else ranks[split][idx])

    damaged = {dataset / p for p in damaged_files(dataset)}  # what `check` found wrong
    todo: list[tuple[str, int]] = []
    for split in cats:
        for k, name in enumerate(names(split)):
            entry, path = state["shards"].get(name), fmt.folder(split) / name
            if not (finished(path, split, entry) and policy.keeps(entry)) or path in damaged:
                todo.append((split, k))
    t_write = time.monotonic()
    run = _run(fmt, (make_task(s, k) for s, k in todo), state, workers,
               images=sum(b - a for s, k in todo for a, b in [plans[s][1][k]]))
    entries_of = {split: [state["shards"][n] for n in names(split)] for split in cats}
    for split, entries in entries_of.items():
        fmt.finish_split(split, entries)
    report = _report(fmt, state, cats, entries_of, from_folders,
                     timed_run(run, len(todo), t0, t_write))
    stage_state.save(fmt.root, fmt.report_record, report)
    return report


def _run(fmt: ShardFormat, tasks: Iterable[ShardTask], state: dict, workers: Workers, *,
         images: int) -> dict[str, Any]:
    """Write every task's shard, saving the state every few seconds (a shard finished after
    the last save is simply written again, with the same bytes) and at the end."""
    run = {"images": 0, "input_bytes": 0, "output_bytes": 0}
    last_save = time.monotonic()
    with bar(images, fmt.record) as pb:
        for res in run_tasks(write_shard, tasks, workers):
            if (io := res.pop("io", None)) is not None:
                for key, n in io.items():
                    run[key] = run.get(key, 0) + n
            state["shards"][res["name"]] = res
            done = res[fmt.unit] + len(res["skipped"])
            run["input_bytes"] += res["input_bytes"]
            run["output_bytes"] += res["bytes"]
            run["images"] += done
            pb.update(done)
            if time.monotonic() - last_save > SAVE_EVERY:
                stage_state.save(fmt.root, fmt.record, state)
                last_save = time.monotonic()
    stage_state.save(fmt.root, fmt.record, state)
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


def _report(fmt: ShardFormat, state: dict, cats: dict[str, Catalog],
            entries_of: dict[str, list[dict]], from_folders: bool, run: dict[str, Any]
            ) -> dict[str, Any]:
    """Per split totals from the state (this run's shards and earlier ones), conversions,
    left-out images, and this run's figures."""
    splits = {
        split: {
            **fmt.describe(split), "shards": len(entries),
            fmt.unit: sum(e[fmt.unit] for e in entries),
            "bytes": sum(e["bytes"] for e in entries), "images": len(cats[split]),
        } for split, entries in entries_of.items()
    }
    converted, skipped = shard_notes(entries_of)
    return {
        **fmt.describe(), "source": "folders" if from_folders else "archives",
        "options": state["options"], "splits": splits, "converted": converted,
        "skipped": skipped, "run": run,
    }
