"""`bbox`: DATASET/imagenet_2012_bounding_boxes.csv, the reference's lines, sorted.

Reads `DATASET/bbox_train/WNID/*.xml` when extracted, else streams
ILSVRC2012_bbox_train_v2.tar.gz once (no extraction).  XMLs are parsed in
batches on the process pool; the lines are sorted (byte order, as `LC_ALL=C
sort`) and written atomically.  The record `.imagenet-prep/bbox.json` holds the
CSV's size and SHA-256, so a rerun with the CSV intact does nothing.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imagenet_prep.errors import PrepError
from imagenet_prep.layout import BBOX_RECORD, BOX_CSV
from imagenet_prep.runtime import expectation, stage_state, subset_record
from imagenet_prep.runtime.file_manifest import not_extracted
from imagenet_prep.runtime.files import atomic_file
from imagenet_prep.runtime.pool import Workers, run_tasks
from imagenet_prep.runtime.progress import bar
from imagenet_prep.runtime.storage import as_path, is_remote, open_input
from imagenet_prep.sources import metadata
from imagenet_prep.sources.archives import BBOX_TRAIN, find_archive
from imagenet_prep.sources.boxes import BoxCounts, is_box_xml_path, parse_batch
from imagenet_prep.sources.subset import Subset
from imagenet_prep.sources.tarindex import iter_gz_members

CSV_NAME = BOX_CSV
BBOX_SPLIT = "bbox_train"  # DATASET/bbox_train/WNID/*.xml, as extracted
BATCH = 2000  # XMLs per pool task
RECORD = BBOX_RECORD

Item = tuple[str, bytes | None, str]  # (WNID/NAME.xml, bytes or None to read in the worker, where)


def csv_path(dataset: Path) -> Path:
    return dataset / CSV_NAME


def _class_dirs(folder: Path) -> list[os.DirEntry]:
    return sorted((d for d in os.scandir(folder) if not d.name.startswith(".") and d.is_dir()),
                  key=lambda e: e.name)


def _folder_items(folder: Path, dataset: Path) -> Iterator[Item]:
    """The reference's glob `<dir>/*/*.xml`, sorted, one class folder listed at a time (a
    list of all 544,546 paths would cost ~125 MB); the files are read by the workers.

    An XML its class's manifest piece does not list is refused by name: its boxes would
    enter the CSV (and every shard) as another image's.  Without a readable piece
    (lost, damaged, or a folder extraction never wrote) nothing is refused."""
    for d in _class_dirs(folder):
        items = [(f"{d.name}/{f.name}", None, f.path)
                 for f in sorted(os.scandir(d.path), key=lambda e: e.name)
                 if is_box_xml_path(f"{d.name}/{f.name}") and f.is_file()]
        if stray := not_extracted(dataset, BBOX_SPLIT, d.name, [rel for rel, _, _ in items]):
            raise PrepError(f"{folder / stray[0]}: not a file of the archive (extraction did "
                            f"not write it); move it out of {folder} and rerun")
        yield from items


def _of_classes(items: Iterator[Item] | list[Item], classes: frozenset[str]
                ) -> Iterator[Item]:
    """The items of a subset's classes (the first folder of the name is the class)."""
    return (it for it in items if it[0].split("/", 1)[0] in classes)


def _line_iter(text: str) -> Iterator[str]:
    """The lines of a batch's text, one at a time (no list of them)."""
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start:end + 1]
        start = end + 1


def _write_sorted(out: Path, batches: list[str]) -> tuple[int, str]:
    """Write the lines of all batches (each sorted) in sorted order; returns (bytes, SHA-256).

    Batches are kept as one string each and merged, so the CSV never exists as a list
    of 615k line objects.
    """
    h = hashlib.sha256()
    size = 0
    with atomic_file(out, fsync=True) as f:
        for line in heapq.merge(*map(_line_iter, batches)):
            data = line.encode()
            h.update(data)
            size += len(data)
            f.write(data)
    return size, h.hexdigest()


def _archive_items(archive: Path) -> Iterator[Item]:
    """The XMLs that extracting the archive would put where the glob finds them."""
    prefix = f"{archive}:"
    for name, data in iter_gz_members(archive):
        if is_box_xml_path(name):
            yield name, data, prefix + name


def _batches(items: Iterator[Item] | list[Item], challenge: frozenset[str]
             ) -> Iterator[tuple[list[Item], frozenset[str]]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) >= BATCH:
            yield batch, challenge
            batch = []
    if batch:
        yield batch, challenge


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open_input(path) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def csv_is_complete(dataset: Path) -> bool:
    """True when the CSV is the one a finished `bbox` run wrote (size and SHA-256 match),
    as a file of its own: a link to equal bytes is written again (the rename replaces
    the link, never what it points at)."""
    rec = stage_state.load(dataset, RECORD)
    path = csv_path(dataset)
    try:
        if is_remote(path):  # an object: never a link
            size = path.stat().st_size
        elif stat.S_ISREG((st := path.lstat()).st_mode):
            size = st.st_size
        else:
            return False
    except FileNotFoundError:
        return False
    return rec is not None and rec.get("bytes") == size and rec.get("sha256") == _sha256(path)


def write_bbox_csv(
    dataset: Path, *, archives: Path | None = None, workers: int | None = None,
    subset: Subset | None = None,
) -> dict[str, Any]:
    """Write the box CSV; returns the summary (the reference's counters, source, size).
    With a subset (None: the dataset's recorded one, else all), only the XMLs of its
    classes are read."""
    dataset = as_path(dataset)
    subset = subset_record.claim(dataset, subset)
    expectation.expect(dataset, {"bbox": {}}, {})
    if csv_is_complete(dataset):
        rec = stage_state.load(dataset, RECORD)
        assert rec is not None
        return {**rec, "skipped": True, "seconds": 0.0}
    t0 = time.monotonic()
    folder = dataset / BBOX_SPLIT
    items: Iterator[Item] | list[Item]
    if folder.is_dir():
        source = str(folder)
        items = _folder_items(folder, dataset)
        total: int | None = sum(len(os.listdir(d.path)) for d in _class_dirs(folder))
    elif archives is not None and (archive := find_archive(archives, "bbox_train")):
        source = str(archive)
        items = _archive_items(archive)
        total = None
    else:
        where = f" or {archives / BBOX_TRAIN}" if archives is not None else ""
        raise PrepError(f"no box XMLs: neither {folder}{where} exists")
    if not subset.full:
        items = _of_classes(items, frozenset(subset.classes))
    challenge = frozenset(metadata.wnids())
    batches: list[str] = []
    counts = BoxCounts()
    with bar(total, "bbox", unit="xml") as pb:
        for more, c in run_tasks(parse_batch, _batches(items, challenge), workers):
            batches.append("".join(sorted(more)))
            counts.add(c)
            pb.update(c.files)
    if counts.files == 0:
        raise PrepError(f"{source}: no XML files found (expected WNID/*.xml)")
    out = csv_path(dataset)
    size, sha = _write_sorted(out, batches)
    summary = {
        "source": source, "csv": str(out), "xml_files": counts.files,
        "files_skipped": counts.files_skipped, "boxes_skipped": counts.boxes_skipped,
        "boxes_written": counts.boxes_written, "images": counts.files_written,
        "bytes": size, "sha256": sha,
    }
    stage_state.save(dataset, RECORD, summary)
    log = sys.stderr
    print(f"Identified {counts.files} XML files in {source}", file=log)
    print(f"Identified {len(challenge)} synset IDs", file=log)
    print(f"Finished processing {counts.files} XML files.", file=log)
    print(f"Skipped {counts.files_skipped} XML files not in ImageNet Challenge.", file=log)
    print(f"Skipped {counts.boxes_skipped} bounding boxes not in ImageNet Challenge.", file=log)
    print(f"Wrote {counts.boxes_written} bounding boxes from {counts.files_written} "
          "annotated images.", file=log)
    return {**summary, "skipped": False, "seconds": time.monotonic() - t0}


def have_box_xmls(dataset: Path, archives: Path | None) -> bool:
    """Whether training box XMLs are here to make the CSV from (extracted, or the archive)."""
    return (dataset / BBOX_SPLIT).is_dir() or (
        archives is not None and find_archive(archives, "bbox_train") is not None)


def ensure_csv(dataset: Path, archives: Path | None, workers: Workers) -> Path | None:
    """The box CSV that a shard stage reads, made first when box XMLs exist and it is not
    complete; None when there is neither a CSV nor XMLs to make one (the shard engine says
    so once it knows train is converted)."""
    path = csv_path(dataset)
    if csv_is_complete(dataset):
        return path
    if have_box_xmls(dataset, archives):
        write_bbox_csv(dataset, archives=archives, workers=workers)
        return path
    return path if path.is_file() else None
