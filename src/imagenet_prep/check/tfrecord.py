"""Check TFRecord shards: every record's CRCs and Example, the shard set, counts, DALI indexes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from imagenet_prep.formats.images import stored_image_problems
from imagenet_prep.formats.tfrecord import RecordError, decode_example, iter_records
from imagenet_prep.layout import (
    DALI_IDX_SUFFIX,
    TFRECORD,
    TFRECORD_RECORD,
    tfrecord_shard_name,
    tfrecord_shard_pattern,
)
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.files import is_tmp_name
from imagenet_prep.runtime.pool import run_tasks
from imagenet_prep.runtime.storage import as_path, listdir
from imagenet_prep.sources import metadata

_FORMATS = {"JPEG": ("JPEG", "MPO"), "WEBP": ("WEBP",)}  # image/format -> Pillow's names


@dataclass(frozen=True)
class RecordsPass:
    """What one read of a shard's records proved, small enough to keep for every shard
    (no spans, no images): so a reader that already holds the bytes (the report's copy of
    an object in a bucket) spares `check` a second download of the shard."""

    size: int  # the bytes read: a shard of another size is read again
    classes: str  # digest of the classes the labels were checked against
    records: int
    problems: tuple[str, ...]
    idx_digest: str  # sha256 of the DALI index the records' spans imply
    first_at: int  # where the first image's problems go among `problems`
    first_image: tuple[str, ...] | None  # None: the first image was not decoded


def _classes_digest(known: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(known).encode()).hexdigest()


def records_pass(path: Path, classes: tuple[str, ...] | None, decode_first: bool,
                 read_from: Path | None = None) -> RecordsPass:
    """Every record's CRCs, Example and label of the shard at `path` (read from the local
    copy `read_from` when given; problems name `path`), and optionally the first image."""
    problems: list[str] = []
    known = classes or metadata.wnids()
    n = first_at = 0
    first: tuple[str, ...] | None = () if decode_first else None
    spans = hashlib.sha256()
    size = 0
    try:
        for offset, data in iter_records(read_from or path, name=path):
            spans.update(f"{offset} {len(data) + 16}\n".encode())
            size = offset + len(data) + 16
            where = f"{path}: record {n} (byte {offset})"
            n += 1
            try:
                ex = decode_example(data)
                label = ex["image/class/label"][0]
                synset = ex["image/class/synset"][0].decode()
                height, width = ex["image/height"][0], ex["image/width"][0]
            except (KeyError, IndexError, ValueError, UnicodeDecodeError) as e:
                problems.append(f"{where}: not a reference Example ({e})")
                first_at = len(problems) if n == 1 else first_at
                continue
            if not 1 <= label <= len(known):
                problems.append(f"{where}: label {label} outside 1..{len(known)}")
            elif known[label - 1] != synset:
                problems.append(f"{where}: label {label} but synset {synset}")
            if height <= 0 or width <= 0:
                problems.append(f"{where}: size {width}x{height}")
            if n == 1:
                first_at = len(problems)
                if decode_first:
                    stored = ex.get("image/format", [b"JPEG"])[0].decode(errors="replace")
                    first = tuple(stored_image_problems(
                        where, ex["image/encoded"][0], width, height, "record",
                        formats=_FORMATS.get(stored, ("JPEG",))))
    except RecordError as e:
        problems.append(str(e))
        size = -1  # not the whole file: never reused
    return RecordsPass(size, _classes_digest(known), n, tuple(problems), spans.hexdigest(),
                       first_at, first)


@dataclass(frozen=True)
class _CheckTask:
    path: Path
    idx_path: Path | None
    decode_first: bool
    classes: tuple[str, ...] | None = None  # what labels 1..N name (a subset's), else all
    prechecked: RecordsPass | None = None  # this shard's records, already read


def _usable(pre: RecordsPass | None, task: _CheckTask) -> bool:
    return pre is not None and (pre.first_image is not None or not task.decode_first) and \
        pre.classes == _classes_digest(task.classes or metadata.wnids())


def _check_shard(task: _CheckTask) -> tuple[int, list[str]]:
    """(records, problems) of one shard: CRCs, labels, and optionally one decoded image."""
    rp = task.prechecked
    if rp is None or not _usable(rp, task):
        rp = records_pass(task.path, task.classes, task.decode_first)
    problems = list(rp.problems)
    if task.decode_first and rp.first_image:
        problems[rp.first_at:rp.first_at] = rp.first_image
    if task.idx_path is not None:
        try:
            text = task.idx_path.read_text()
            if hashlib.sha256(text.encode()).hexdigest() != rp.idx_digest:
                problems.append(f"{task.idx_path}: does not match {task.path.name}")
        except FileNotFoundError:
            problems.append(f"{task.idx_path}: missing")
        except UnicodeDecodeError:
            problems.append(f"{task.idx_path}: not text (damaged)")
    return rp.records, problems


def _check_shard_at(task: _CheckTask) -> tuple[Path, tuple[int, list[str]]]:
    """(the shard, its records and problems): results arrive in the order tasks finish."""
    return task.path, _check_shard(task)


def _same_size(pre: RecordsPass | None, size: int) -> RecordsPass | None:
    return pre if pre is not None and pre.size == size else None


def _scan_split(dataset: Path, split: str, cut: int | None
                ) -> tuple[dict[int, Path], set[int], list[str]]:
    """(shard index -> path, totals seen, problems) from the names in a split's folder;
    with the recorded `cut` (shards per split), a shard of another total is named."""
    folder = dataset / TFRECORD[split].folder
    pattern = tfrecord_shard_pattern(split)
    shards: dict[int, Path] = {}
    totals: set[int] = set()
    problems = []
    for entry in sorted(listdir(folder)):
        if is_tmp_name(entry):
            problems.append(f"{folder / entry}: leftover temporary file")
        elif (m := pattern.fullmatch(entry)) and cut is not None and int(m.group(2)) != cut:
            problems.append(f"{folder / entry}: a shard of another cut than the recorded "
                            f"{cut} (no tfrecord run wrote it here); move it away")
        elif m:
            shards[int(m.group(1))] = folder / entry
            totals.add(int(m.group(2)))
        else:
            problems.append(f"{folder / entry}: not a {TFRECORD[split].prefix} shard; move it "
                            "away")
    return shards, totals, problems


def check_tfrecords(
    dataset: Path, expected_counts: dict[str, int] | None = None, sample: int = 20,
    workers: int | None = None, required: tuple[str, ...] = (), dali_index: bool = False,
    damaged: list[Path] | None = None, classes: tuple[str, ...] | None = None,
    prechecked: Mapping[str, RecordsPass] | None = None,
) -> list[str]:
    """Problems with the TFRecord shards (empty when all is well).

    Every record's CRCs, the shard set, records per shard (differing by at most one),
    the total against `expected_counts` (else the state record), labels 1..1000 matching
    the synset, and a decoded sample of images.  `prechecked`: shards (by path) whose
    records a caller has already read whole; used when the size still matches.
    """
    dataset = as_path(dataset)
    state = stage_state.load(dataset, TFRECORD_RECORD) or {}
    problems: list[str] = []
    for split, lay in TFRECORD.items():
        folder = dataset / lay.folder
        expected = (expected_counts or {}).get(split)
        planned = state.get("splits", {}).get(split)
        if not folder.is_dir():
            if expected or planned or split in required:
                want = expected or (planned or {}).get("images")
                problems.append(f"{folder}: missing" + (f" (expected {want} records)"
                                                        if want else ""))
            continue
        shards, totals, found = _scan_split(dataset, split,
                                            state.get("options", {}).get(f"{split}_shards"))
        problems += found
        if shards and not state:  # the next run refuses shards it has no record of
            problems.append(f"{folder}: holds shards that no tfrecord run recorded (no "
                            f"{stage_state.record_path(dataset, TFRECORD_RECORD)})")
        bad: list[Path] = []  # shards to write again (with their index), for the next run
        sizes = {}
        for path in shards.values():
            sizes[path] = size = path.stat().st_size
            entry = state.get("shards", {}).get(path.name)
            if entry is not None and size != entry["bytes"]:
                problems.append(f"{path}: {size} bytes, the state records {entry['bytes']}")
                bad.append(path)
        if not shards:
            problems.append(f"{folder}: no shards")
            continue
        if len(totals) > 1:
            problems.append(f"{folder}: shards of different totals {sorted(totals)}")
        total = max(totals)
        missing = [k for k in range(total) if k not in shards]
        if missing:
            problems.append(f"{folder}: {len(missing)} of {total} shards missing, first "
                            f"{tfrecord_shard_name(split, missing[0], total)}")
        idx_dir = dataset / lay.idx_folder
        if dali_index and not idx_dir.is_dir():
            problems.append(f"{idx_dir}: missing (DALI indexes were asked for)")
        step = max(1, len(shards) // max(1, sample)) if sample else 0
        tasks = [
            _CheckTask(path, idx_dir / (path.name + DALI_IDX_SUFFIX) if idx_dir.is_dir() else None,
                       bool(step) and j % step == 0 and j // step < sample, classes,
                       _same_size((prechecked or {}).get(str(path)), sizes[path]))
            for j, (_, path) in enumerate(sorted(shards.items()))
        ]
        counts = []
        results = dict(run_tasks(_check_shard_at, tasks, workers))  # in the order they finish
        for task in tasks:
            n, more = results[task.path]
            counts.append(n)
            problems += more
            if more:
                bad.append(task.path)
        if damaged is not None:
            damaged += dict.fromkeys(bad)
        skipped = sum(len(e["skipped"]) for e in state.get("shards", {}).values()
                      if e.get("split") == split)
        if counts and max(counts) - min(counts) > 1 + skipped:
            problems.append(f"{folder}: shard sizes range from {min(counts)} to {max(counts)} "
                            "records; they should differ by at most one")
        if expected is None and split in state.get("splits", {}):
            expected = state["splits"][split]["images"] - skipped
        if expected is not None and sum(counts) != expected:
            problems.append(f"{folder}: {sum(counts)} records, expected {expected}")
    return problems
