"""A split read from its TFRecord shards alone (a TensorFlow-only user has no folders).

Per-class counts need every record's label, but not its image: each record is one
positioned read of its header and first KiB, where our writer's sorted keys put
`image/class/label` and the start of `image/encoded` (records from other writers,
whose keys may come in any order, are read whole).  The same pass draws a seeded
Bernoulli sample for the header facts, notes the first records of every class for
the contact sheet, and finds named records (converted files) in the shards the
TFRecord state says hold them.  One task per shard; results merge in shard order,
so the page does not depend on the worker count.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from imagenet_prep.check.tfrecord import RecordsPass, records_pass
from imagenet_prep.errors import PrepError
from imagenet_prep.formats.tfrecord import (
    HEADER_BYTES,
    Peek,
    TruncatedRecord,
    decode_example,
    iter_heads,
    peek,
    peek_filename,
    read_example,
    record_spans,
)
from imagenet_prep.layout import TFRECORD, TFRECORD_RECORD, tfrecord_shard_pattern
from imagenet_prep.report.model import Sample
from imagenet_prep.report.thumbs import HEAD_BYTES, facts_from_head
from imagenet_prep.runtime import stage_state, subset_record
from imagenet_prep.runtime.pool import run_tasks
from imagenet_prep.runtime.progress import bar
from imagenet_prep.runtime.storage import RemotePath, listdir, local_file
from imagenet_prep.sources import metadata

PEEK = 1024  # bytes of a record's data read to find its label and where its image starts
KEEP_PER_CLASS = 16  # first records of each class remembered for the contact sheet


def shard_files(dataset: Path, split: str) -> list[Path]:
    """The split's shard files in shard order (other names in the folder are ignored)."""
    folder = dataset / TFRECORD[split].folder
    if not folder.is_dir():
        return []
    pattern = tfrecord_shard_pattern(split)
    found = [(int(m.group(1)), folder / n) for n in listdir(folder)
             if (m := pattern.fullmatch(n))]
    return [p for _, p in sorted(found)]


# --- one shard (runs in a worker) --------------------------------------------------------

@dataclass(frozen=True)
class ScanTask:
    index: int
    path: Path
    sample_p: float
    sample_key: str
    names: frozenset[str]  # file names to locate in this shard
    precheck: bool = False  # also `check`'s read of the records (from the same copy)
    classes: tuple[str, ...] | None = None  # a subset's classes, for that check


@dataclass
class ScanResult:
    index: int
    counts: dict[int, int] = field(default_factory=dict)  # label 1..1000 -> records
    sample: list[tuple[int, int, int]] = field(default_factory=list)  # (width, height, bytes)
    firsts: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # label -> spans
    found: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> span
    problems: list[str] = field(default_factory=list)
    prechecked: RecordsPass | None = None


def scan_shard(task: ScanTask) -> ScanResult:
    """Labels of every record, a sample's sizes, the first records of each class."""
    with local_file(task.path) as local:  # a shard in a bucket: read from one local copy
        res = _scan_file(task, local)
        if task.precheck:
            res.prechecked = records_pass(task.path, task.classes, True, read_from=local)
        return res


def _scan_file(task: ScanTask, local: Path) -> ScanResult:
    res = ScanResult(task.index)
    rng = random.Random(task.sample_key)
    size = local.stat().st_size
    fd = os.open(local, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead over the images
        try:
            for offset, length, head in iter_heads(fd, size, PEEK):
                try:
                    _visit(fd, offset, length, head, task, rng, res)
                except (ValueError, KeyError, IndexError) as e:
                    res.problems.append(_not_an_example(task.path, offset, e))
        except TruncatedRecord as e:
            res.problems.append(f"{task.path}: record at byte {e.offset}: truncated {e.part}")
    finally:
        os.close(fd)
    return res


def _not_an_example(path: Path, offset: int, e: Exception) -> str:
    """The page's line for a record whose Example does not decode."""
    return f"{path}: record at byte {offset}: not a reference Example ({e!r})"


def _visit(fd: int, offset: int, length: int, head: bytes, task: ScanTask, rng: random.Random,
           res: ScanResult) -> None:
    """Count one record, and sample it, remember it, or match its name as the task asks."""
    try:
        pk = peek(head)
    except ValueError:
        if length <= PEEK:
            raise
        pk = Peek(None)  # an entry cut at the end of the peek: read the record whole
    ex = None
    if pk.label is None or pk.image_start is None:
        ex = read_example(fd, offset, length)
    label = pk.label if ex is None else int(ex["image/class/label"][0])
    sampled = _sizes(fd, offset, length, pk, ex) if rng.random() < task.sample_p else None
    name = None
    if task.names:
        name = (ex["image/filename"][0].decode(errors="replace") if ex is not None
                else _filename(fd, offset, length, pk))
    res.counts[label] = res.counts.get(label, 0) + 1
    spans = res.firsts.setdefault(label, [])
    if len(spans) < KEEP_PER_CLASS:
        spans.append((offset, length))
    if sampled is not None:
        res.sample.append(sampled)
    if name in task.names:
        res.found[name] = (offset, length)


def _filename(fd: int, offset: int, length: int, pk: Peek) -> str:
    """The record's image/filename: with our writer, the first entry after the image."""
    assert pk.rest_start is not None
    start = offset + HEADER_BYTES + pk.rest_start
    tail = os.pread(fd, min(512, offset + HEADER_BYTES + length - start), start)
    name = peek_filename(tail)
    if name is None:
        name = read_example(fd, offset, length)["image/filename"][0]
    return name.decode(errors="replace")


def _sizes(fd: int, offset: int, length: int, pk: Peek, ex: dict | None) -> tuple[int, int, int]:
    """(width, height, image bytes) from the image's own header, as for folders."""
    if ex is None and pk.image_start is not None and pk.image_size is not None:
        head = os.pread(fd, min(HEAD_BYTES, pk.image_size), offset + HEADER_BYTES + pk.image_start)
        got = facts_from_head(head)
        if got is not None:
            return got.width, got.height, pk.image_size
    ex = ex or read_example(fd, offset, length)
    image = ex["image/encoded"][0]
    got = facts_from_head(image)
    if got is not None:
        return got.width, got.height, len(image)
    return int(ex["image/width"][0]), int(ex["image/height"][0]), len(image)


# --- the split ----------------------------------------------------------------------------

def _expected_records(dataset: Path, split: str, shards: list[Path]) -> int:
    """Records the split should hold: the TFRecord state's figure, else an estimate."""
    state = stage_state.load(dataset, TFRECORD_RECORD) or {}
    if split in state.get("splits", {}):
        return int(state["splits"][split]["images"])
    first = record_spans(shards[0])
    per_byte = len(first) / max(1, shards[0].stat().st_size)
    return max(1, round(per_byte * sum(p.stat().st_size for p in shards)))


def _label_classes(dataset: Path) -> tuple[str, ...]:
    """The WNIDs that labels 1..N name: a subset's own (docs/subsets.md), else the 1000."""
    subset = subset_record.recorded(dataset)
    return metadata.wnids() if subset is None or subset.label_map is None else \
        subset.output_classes()


class ShardSplit:
    """A split read from tfrecord_train/ or tfrecord_val/ alone."""

    source = "shards"

    def __init__(self, dataset: Path, split: str, *, sample: int, seed: int,
                 names: Iterable[tuple[str, str]] = (), workers: int | None = None,
                 precheck: bool = False) -> None:
        """`names`: (shard file name, file name) of records to locate (the converted files);
        `precheck`: also do `check`'s read of each shard's records (`self.prechecked`),
        so a shard in a bucket is downloaded once for both."""
        self.split = split
        self.classes = _label_classes(dataset)
        self.shards = shard_files(dataset, split)
        if not self.shards:
            raise PrepError(f"{dataset / TFRECORD[split].folder}: no shards")
        want: dict[str, set[str]] = {}
        for shard, name in names:
            want.setdefault(shard, set()).add(name)
        p = min(1.0, sample / _expected_records(dataset, split, self.shards)) if sample else 0.0
        subset = None if self.classes == metadata.wnids() else self.classes
        tasks = [ScanTask(i, path, p, f"{seed}/{split}/{path.name}",
                          frozenset(want.get(path.name, ())), precheck, subset)
                 for i, path in enumerate(self.shards)]
        self.by_label: dict[int, int] = {}
        self.firsts: dict[int, list[tuple[int, int, int]]] = {}
        self.located: dict[str, tuple[int, int, int]] = {}
        self.problems: list[str] = []
        self.sampled: list[tuple[int, int, int]] = []
        self.prechecked: dict[str, RecordsPass] = {}  # shard path -> its records, checked
        waiting: dict[int, ScanResult] = {}  # finished out of order (at most a pool window)
        done = 0
        with bar(len(tasks), f"report: scan {split} shards", unit="shard") as pb:
            for r in run_tasks(scan_shard, tasks, workers):
                waiting[r.index] = r
                while done in waiting:
                    self._merge(waiting.pop(done))
                    done += 1
                pb.update()

    def _merge(self, r: ScanResult) -> None:
        """Fold one shard's result in, in shard order; only K spans per class are kept."""
        for label, n in r.counts.items():
            self.by_label[label] = self.by_label.get(label, 0) + n
        for label, spans in r.firsts.items():
            keep = self.firsts.setdefault(label, [])
            keep += [(r.index, o, n) for o, n in spans[:KEEP_PER_CLASS - len(keep)]]
        self.located.update({k: (r.index, o, n) for k, (o, n) in r.found.items()})
        self.problems += r.problems
        self.sampled += r.sample
        if r.prechecked is not None:
            self.prechecked[str(self.shards[r.index])] = r.prechecked

    def counts(self) -> tuple[dict[str, int], str]:
        wnids = self.classes
        out = {wnids[label - 1] if 1 <= label <= len(wnids) else f"label {label}": n
               for label, n in sorted(self.by_label.items())}
        return out, f"labels of every record in {len(self.shards)} shards"

    def sample(self, counts: dict[str, int], n: int, seed: int) -> tuple[Sample, list]:
        out = Sample(self.split, sum(counts.values()))
        for w, h, s in self.sampled:
            out.widths.append(w)
            out.heights.append(h)
            out.sizes.append(s)
        return out, []

    def _read(self, index: int, offset: int, length: int, *keys: str) -> list | None:
        """The first value of each of `keys` in the record, or None when the record is
        damaged (the scan read only its head; the problem joins the page's)."""
        shard = self.shards[index]
        try:
            if isinstance(shard, RemotePath):  # one ranged read of the record's data
                start = offset + HEADER_BYTES
                ex = decode_example(shard.read_bytes(start, start + length))
            else:
                with open(shard, "rb") as f:
                    ex = read_example(f.fileno(), offset, length)
            return [ex[k][0] for k in keys]
        except (ValueError, KeyError, IndexError) as e:  # UnicodeDecodeError is a ValueError
            self.problems.append(_not_an_example(shard, offset, e))
            return None

    def pick(self, wnid: str, k: int, seed: int) -> list[tuple[str, bytes]]:
        """The first `k` records of the class in shard order (the shards are shuffled)."""
        label = self.classes.index(wnid) + 1 if wnid in self.classes else 0
        out = []
        for index, offset, length in self.firsts.get(label, [])[:k]:
            got = self._read(index, offset, length, "image/filename", "image/encoded")
            if got is not None:
                out.append((got[0].decode(errors="replace"), got[1]))
        return out

    def find(self, names: Iterable[str]) -> dict[str, tuple[str, bytes]]:
        found = {}
        for name in names:
            if name in self.located:
                got = self._read(*self.located[name], "image/class/synset", "image/encoded")
                if got is not None:
                    found[name] = (got[0].decode(errors="replace"), got[1])
        return found
