"""`extract`: the seed's `tar xf` layout straight from the archives, in one pass.

Inner class tars are read in place (one positioned copy per image, in the kernel
where possible), never written to disk.  Each file is written under a temporary
name and renamed, so a rerun skips every final name of the right size.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

from imagenet_prep.errors import CorruptArchiveError, PrepError
from imagenet_prep.folders.valtree import scan_val
from imagenet_prep.formats.resize import ResizeSpec, image_encoder
from imagenet_prep.layout import EXTRACT_SPLITS, extract_record
from imagenet_prep.runtime import expectation, stage_state, subset_record, variant
from imagenet_prep.runtime.file_manifest import (
    damaged_files,
    load_piece_to_redo,
    piece_dir,
    piece_path,
    save_piece,
)
from imagenet_prep.runtime.files import create_atomic, ensure_dir, write_fd
from imagenet_prep.runtime.memory import release_free_memory
from imagenet_prep.runtime.pool import run_tasks
from imagenet_prep.runtime.progress import bar
from imagenet_prep.sources.archives import find_archive
from imagenet_prep.sources.catalog import flat_members, iter_classes
from imagenet_prep.sources.names import Names
from imagenet_prep.sources.subset import Subset
from imagenet_prep.sources.tarindex import ArchiveReader, Member, iter_gz_members

SPLITS = EXTRACT_SPLITS
CHUNK = 500  # images per task for flat archives


@dataclass(frozen=True)
class CopyTask:
    """Copy `members` of `archive` into `folder` (member names are plain file names) and
    record them in the file-manifest piece `piece`; `damaged` names are copied again."""

    archive: Path
    folder: Path
    names: Names  # compact: a task list of the whole train split is ~50 bytes an image
    offsets: np.ndarray
    sizes: np.ndarray
    key: str = ""
    piece: Path | None = None
    damaged: frozenset[str] = frozenset()
    placed: tuple[tuple[str, str], ...] = ()  # (name, class folder) of val images grouped
    resize: str | None = None  # a resized variant's options (formats/resize.py), else copies

    @classmethod
    def of(cls, archive: Path, folder: Path, members: Sequence[Member], **kw: Any) -> CopyTask:
        return cls(archive, folder, Names.of(m.name for m in members),
                   np.fromiter((m.offset for m in members), np.int64, len(members)),
                   np.fromiter((m.size for m in members), np.int64, len(members)), **kw)

    def members(self) -> Iterator[Member]:
        for name, offset, size in zip(self.names, self.offsets.tolist(), self.sizes.tolist(),
                                      strict=True):
            yield Member(name, offset, size)


def _final_size(path: Path | str) -> int | None:
    """Size of a regular file at `path`, None if absent; anything else there is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise PrepError(f"{path}: exists and is not a regular file; move it away and rerun")
    return st.st_size


def _copy_with_crc(reader: ArchiveReader, m: Member, fd: int) -> int:
    """Copy one member into `fd`; returns its CRC32C (the bytes pass through once)."""
    data = reader.read(m.offset, m.size)
    write_fd(fd, data)
    return google_crc32c.value(data)


def copy_members(task: CopyTask) -> tuple[str, int, int, int, int]:
    """Run one task; returns (key, files, bytes written, bytes skipped, bytes stored: the
    files' sizes, other than the archive's in a resized variant).

    A file is kept when the task's manifest piece lists it with the size found on
    disk (final names only appear by rename); a missing, truncated or damaged file
    is copied again.  A file of another size that no piece lists is not ours: refused.
    This runs once per image (1.28 M times), so it works on plain strings and
    descriptors (`create_atomic`) and one listing per folder.
    """
    ensure_dir(task.folder)
    folder = os.fspath(task.folder)
    present = set(os.listdir(folder))  # one listing instead of a failed lstat per image
    placed = dict(task.placed)
    known = load_piece_to_redo(task.piece) if task.piece is not None else {}
    rows: list[tuple[str, int, int]] = []
    written = skipped = 0
    transform = None if task.resize is None else resized_bytes(task.resize)
    with ArchiveReader(task.archive) as reader:
        for m in task.members():
            if m.name in placed:  # moved into its class folder by valtree: repaired there
                final = os.path.join(folder, placed[m.name], m.name)
                have = _final_size(final)
            else:
                final = os.path.join(folder, m.name)
                have = _final_size(final) if m.name in present else None
            entry = known.get(m.name)
            size = m.size if transform is None else (entry[0] if entry else -1)
            if have == size and entry is not None and entry[0] == size \
                    and m.name not in task.damaged:
                rows.append((m.name, size, entry[1]))
                skipped += m.size
                continue
            if have is not None and have != m.size and entry is None and transform is None:
                raise PrepError(
                    f"{final}: exists with other content than {task.archive.name}:{m.name}; "
                    "move it away and rerun"
                )
            crc, size = 0, m.size

            def fill(fd: int, m: Member = m) -> None:
                nonlocal crc, size
                if transform is None:
                    crc = _copy_with_crc(reader, m, fd)
                else:  # a variant: the resized image (the size and CRC of what is stored)
                    where = f"{task.archive}:{m.name}"
                    data = transform(reader.read(m.offset, m.size), where)
                    write_fd(fd, data)
                    crc, size = google_crc32c.value(data), len(data)

            create_atomic(final, fill)
            rows.append((m.name, size, crc))
            written += m.size
    if task.piece is not None and (written or len(known) != len(rows)):
        save_piece(task.piece, rows)
    return task.key, len(task.names), written, skipped, sum(r[1] for r in rows)


def resized_bytes(resize: str) -> Callable[[bytes, str], bytes]:
    """The bytes a variant's class tree stores of an image (formats/resize.py)."""
    encode = image_encoder(resize)
    return lambda data, where: encode(data, where)[0]


def _train_tasks(archive: Path, dataset: Path, damaged: frozenset[str], subset: Subset
                 ) -> list[CopyTask]:
    out = dataset / "train"
    return [CopyTask.of(archive, out / wnid, images, key=wnid,
                        piece=piece_path(dataset, "train", wnid),
                        damaged=_names_in(damaged, f"train/{wnid}/"))
            for wnid, images in iter_classes(archive, None if subset.full else subset)]


def _flat_tasks(archive: Path, dataset: Path, split: str, damaged: frozenset[str],
                keep: set[str] | None = None) -> list[CopyTask]:
    ms = flat_members(archive)
    if keep is not None:
        ms = [m for m in ms if m.name in keep]
    gone = _names_in(damaged, f"{split}/")
    return [CopyTask.of(archive, dataset / split, ms[i:i + CHUNK], key=f"{i}",
                        piece=piece_path(dataset, split, f"{i:08d}"), damaged=gone)
            for i in range(0, len(ms), CHUNK)]


def _names_in(paths: frozenset[str], prefix: str) -> frozenset[str]:
    """Base names of the damaged files under `prefix` (val files also in class folders)."""
    return frozenset(p.rsplit("/", 1)[-1] for p in paths if p.startswith(prefix))


def _placed(tasks: list[CopyTask], folder: Path) -> list[CopyTask]:
    """Val tasks told where `valtree` put each image, so a rerun neither copies grouped
    images back into val/ nor misses their damage."""
    grouped = scan_val(folder)[1]  # a second copy elsewhere is valtree's to refuse
    if not grouped:
        return tasks
    return [replace(t, placed=tuple((n, grouped[n]) for n in t.names if n in grouped))
            for t in tasks]


def _gz_damaged(damaged: frozenset[str], split: str) -> frozenset[str]:
    return frozenset(p[len(split) + 1:] for p in damaged if p.startswith(f"{split}/"))


@dataclass(frozen=True)
class GzTask:
    """Stream the small .tar.gz `archive` (box XMLs) into `folder`: one task, in a worker.
    Its manifest is one piece per top-level folder (a class), under `pieces`."""

    archive: Path
    folder: Path
    pieces: Path | None = None
    damaged: frozenset[str] = frozenset()
    tops: frozenset[str] | None = None  # a subset's: only these top-level folders (classes)


class _GzManifest:
    """The pieces of a box archive, one folder at a time: memory stays at one class's XMLs
    (a single piece for 544,546 files would cost a worker ~400 MB on a rerun)."""

    def __init__(self, pieces: Path | None) -> None:
        self.pieces, self.top = pieces, None
        self.known: dict[str, tuple[int, int]] = {}
        self.rows: list[tuple[str, int, int]] = []
        self.changed = False
        self.seen: set[str] = set()

    def entry(self, name: str) -> tuple[int, int] | None:
        top = name.split("/", 1)[0] if "/" in name else "_"
        if top != self.top:
            self.flush()
            self.top, self.changed = top, False
            path = self._path(top)
            self.known = load_piece_to_redo(path) if path is not None else {}
            # a folder met again (an archive not grouped by folder) keeps its earlier rows
            self.rows = [(n, *e) for n, e in self.known.items()] if top in self.seen else []
            self.seen.add(top)
        return self.known.get(name)

    def add(self, name: str, size: int, crc: int, written: bool) -> None:
        self.rows.append((name, size, crc))
        self.changed = self.changed or written

    def flush(self) -> None:
        path = self._path(self.top) if self.top is not None else None
        if path is not None and (self.changed or len(self.known) != len(self.rows)):
            save_piece(path, self.rows)

    def _path(self, top: str) -> Path | None:
        return None if self.pieces is None else self.pieces / f"{top}.tsv"


def extract_gz(task: GzTask) -> tuple[int, int, dict[str, int]]:
    """Run a GzTask; returns (files, bytes, files per top-level folder)."""
    archive, dest = task.archive, os.fspath(task.folder)
    manifest = _GzManifest(task.pieces)
    files = size = 0
    counts: dict[str, int] = {}
    present: dict[str, set[str]] = {}  # folder -> names there before this run wrote any
    for name, data in iter_gz_members(archive):
        if task.tops is not None and name.split("/", 1)[0] not in task.tops:
            continue
        final = os.path.join(dest, name)
        folder, base = os.path.split(final)
        names = present.get(folder)
        if names is None:
            ensure_dir(Path(folder))
            names = present[folder] = set(os.listdir(folder))
        have = _final_size(final) if base in names else None
        entry = manifest.entry(name)
        crc = google_crc32c.value(data)
        if have is not None and have != len(data) and entry is None:
            raise PrepError(f"{final}: exists with other content than {archive.name}:{name}")
        write = have != len(data) or entry != (len(data), crc) or name in task.damaged
        if write:
            create_atomic(final, lambda fd, data=data: write_fd(fd, data))
        manifest.add(name, len(data), crc, write)
        files += 1
        size += len(data)
        top = name.split("/", 1)[0] if "/" in name else ""
        counts[top] = counts.get(top, 0) + 1
    if not files:
        raise CorruptArchiveError(f"{archive}: holds no files")
    manifest.flush()
    return files, size, counts


def _run_task(item: tuple[str, CopyTask | GzTask]) -> tuple[str, tuple]:
    """A pool task of any split: (split, the task's result)."""
    split, task = item
    return split, extract_gz(task) if isinstance(task, GzTask) else copy_members(task)


def _val_kept(archives: Path, archive: Path, dataset: Path, subset: Subset, labels: str
              ) -> set[str]:
    """The validation images of the subset's classes, by the validation labels."""
    from imagenet_prep.sources.labels import val_labels

    names = sorted(m.name for m in flat_members(archive))
    wnids = val_labels(names, archives=archives, dataset=dataset, source=labels)
    return {n for n, w in zip(names, wnids, strict=True) if subset.keeps_class(w)}


def extract(
    archives: Path, dataset: Path, splits: tuple[str, ...] = SPLITS, workers: int | None = None,
    subset: Subset | None = None, labels: str = "auto", resize: ResizeSpec | None = None,
) -> dict[str, dict]:
    """Extract each split whose archive is present; returns per-split summaries.

    With a `subset` (None: the dataset's recorded one, else all), only its classes'
    training images (class tars of other classes are not even read), the validation
    images of its classes (`labels` picks them) and its classes' training box XMLs are
    extracted; the test split, which has no classes, is left out.

    Every image archive is indexed (and its layout checked) before anything is
    written; then all splits share one pool, the box archives first: each is one
    sequential stream, so it runs beside the image copies instead of after them.
    A split's record is saved when its last task is done.  With `resize`, `dataset` is a
    variant's folder (runtime/variant.py) and the images are stored resized.
    """
    if not archives.is_dir():
        raise PrepError(f"{archives}: archives folder not found")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise PrepError(f"unknown split {unknown[0]!r}; choose from {', '.join(SPLITS)}")
    subset = subset_record.chosen(dataset, subset)
    if not subset.full:
        splits = tuple(s for s in splits if s != "test")
    found = {s: find_archive(archives, s) for s in splits}
    if not any(found.values()):
        raise PrepError(f"{archives}: none of the archives for {', '.join(splits)} is here")
    present = {s: a for s, a in found.items() if a is not None}
    variant.claim(dataset, resize)
    for split in present:  # a damaged record is said in one line before any work
        stage_state.load(dataset, extract_record(split))
    identities = expectation.identify(dataset, present)
    summary: dict[str, dict] = {}
    t0 = time.monotonic()
    todo: dict[str, dict] = {}  # split -> its archive, totals and tasks left
    items: list[tuple[str, CopyTask | GzTask]] = []
    damaged = frozenset(damaged_files(dataset))
    for split in splits:
        archive = found[split]
        if archive is None:
            continue
        dest = ensure_dir(dataset / split)
        if split.startswith("bbox"):
            todo[split] = {"archive": archive, "files": 0, "bytes": 0, "classes": {}, "left": 1,
                           "written": 0}
            tops = frozenset(subset.classes) if split == "bbox_train" and not subset.full \
                else None
            items.insert(0, (split, GzTask(archive, dest, piece_dir(dataset, split),
                                           _gz_damaged(damaged, split), tops)))
            continue
        if split == "train":
            tasks = _train_tasks(archive, dataset, damaged, subset)
        else:
            keep = None if subset.full or split != "val" else \
                _val_kept(archives, archive, dataset, subset, labels)
            tasks = _placed(_flat_tasks(archive, dataset, split, damaged, keep), dest)
        if resize is not None:
            tasks = [replace(t, resize=resize.text) for t in tasks]
        todo[split] = {
            "archive": archive, "files": sum(len(t.names) for t in tasks),
            "bytes": sum(int(t.sizes.sum()) for t in tasks),
            "classes": {t.key: len(t.names) for t in tasks} if split == "train" else {},
            "left": len(tasks), "written": 0,
        }
        items += [(split, t) for t in tasks]
    # the archives are indexed and hold the subset: it and the outputs are recorded before
    # any file is copied (a list naming absent files was refused above, recording nothing)
    subset_record.claim(dataset, subset)
    expectation.expect(dataset, {"extract": {"splits": sorted(present, key=SPLITS.index)}},
                       identities)
    release_free_memory()  # what indexing freed, before the pool forks its workers
    total = sum(t["bytes"] for s, t in todo.items() if not s.startswith("bbox"))
    with bar(total, "extract", bytes_=True) as pb:
        for split, result in run_tasks(_run_task, items, workers):
            t = todo[split]
            if split.startswith("bbox"):
                t["files"], t["bytes"], t["classes"] = result
                t["written"] = t["bytes"]
            else:
                _key, _n, w, s, stored = result
                t["written"] += w
                t["stored"] = t.get("stored", 0) + stored
                pb.update(w + s)
            t["left"] -= 1
            if t["left"] == 0:
                archive = t["archive"]
                rec = {"split": split, "archive": archive.name,
                       "archive_size": archive.stat().st_size, "files": t["files"],
                       "bytes": t["bytes"], "classes": t["classes"]}
                if resize is not None:  # what the variant's files take (bytes: the archive's)
                    rec["stored_bytes"] = t.get("stored", 0)
                stage_state.save(dataset, extract_record(split), rec)
                summary[split] = {**rec, "seconds": time.monotonic() - t0,
                                  "written": t["written"]}
    variant.note_quality(dataset, archives, resize)
    return {split: summary[split] for split in splits if split in summary}
