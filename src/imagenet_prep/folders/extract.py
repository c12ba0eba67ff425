"""`extract`: the seed's `tar xf` layout straight from the archives, in one pass.

Inner class tars are read in place (one positioned copy per image, in the kernel
where possible), never written to disk.  Each file is written under a temporary
name and renamed, so a rerun skips every final name of the right size.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from imagenet_prep.errors import CorruptArchiveError, PrepError
from imagenet_prep.layout import EXTRACT_SPLITS
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.files import create_atomic, ensure_dir, write_fd
from imagenet_prep.runtime.pool import run_tasks
from imagenet_prep.runtime.progress import bar
from imagenet_prep.sources.archives import find_archive
from imagenet_prep.sources.catalog import flat_members, iter_classes
from imagenet_prep.sources.tarindex import ArchiveReader, Member, iter_gz_members

SPLITS = EXTRACT_SPLITS
CHUNK = 500  # images per task for flat archives


@dataclass(frozen=True)
class CopyTask:
    """Copy `members` of `archive` into `folder` (member names are plain file names)."""

    archive: Path
    folder: Path
    members: tuple[Member, ...]
    key: str = ""


def _final_size(path: Path | str) -> int | None:
    """Size of a regular file at `path`, None if absent; anything else there is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise PrepError(f"{path}: exists and is not a regular file; move it away and rerun")
    return st.st_size


def copy_members(task: CopyTask) -> tuple[str, int, int, int]:
    """Run one task; returns (key, files, bytes written, bytes skipped).

    A final name of the right size is complete (it only appears by rename); a
    killed run's temporary file is simply overwritten.  This runs once per image
    (1.28 M times), so it works on plain strings and descriptors (`create_atomic`).
    """
    ensure_dir(task.folder)
    folder = os.fspath(task.folder)
    present = set(os.listdir(folder))  # one listing instead of a failed lstat per image
    written = skipped = 0
    with ArchiveReader(task.archive) as reader:
        for m in task.members:
            final = os.path.join(folder, m.name)
            have = _final_size(final) if m.name in present else None
            if have == m.size:
                skipped += m.size
                continue
            if have is not None:
                raise PrepError(
                    f"{final}: exists with other content than {task.archive.name}:{m.name}; "
                    "move it away and rerun"
                )
            create_atomic(final, lambda fd, m=m: reader.copy_to(m.offset, m.size, fd))
            written += m.size
    return task.key, len(task.members), written, skipped


def _train_tasks(archive: Path, out: Path) -> list[CopyTask]:
    return [CopyTask(archive, out / wnid, images, wnid) for wnid, images in iter_classes(archive)]


def _flat_tasks(archive: Path, folder: Path) -> list[CopyTask]:
    ms = flat_members(archive)
    return [
        CopyTask(archive, folder, tuple(ms[i:i + CHUNK]), f"{i}") for i in range(0, len(ms), CHUNK)
    ]


@dataclass(frozen=True)
class GzTask:
    """Stream the small .tar.gz `archive` (box XMLs) into `folder`: one task, in a worker."""

    archive: Path
    folder: Path


def extract_gz(task: GzTask) -> tuple[int, int, dict[str, int]]:
    """Run a GzTask; returns (files, bytes, files per top-level folder)."""
    archive, dest = task.archive, os.fspath(task.folder)
    files = size = 0
    counts: dict[str, int] = {}
    present: dict[str, set[str]] = {}  # folder -> names there before this run wrote any
    for name, data in iter_gz_members(archive):
        final = os.path.join(dest, name)
        folder, base = os.path.split(final)
        names = present.get(folder)
        if names is None:
            ensure_dir(Path(folder))
            names = present[folder] = set(os.listdir(folder))
        have = _final_size(final) if base in names else None
        if have is None:
            create_atomic(final, lambda fd, data=data: write_fd(fd, data))
        elif have != len(data):
            raise PrepError(f"{final}: exists with other content than {archive.name}:{name}")
        files += 1
        size += len(data)
        top = name.split("/", 1)[0] if "/" in name else ""
        counts[top] = counts.get(top, 0) + 1
    if not files:
        raise CorruptArchiveError(f"{archive}: holds no files")
    return files, size, counts


def _run_task(item: tuple[str, CopyTask | GzTask]) -> tuple[str, tuple]:
    """A pool task of any split: (split, the task's result)."""
    split, task = item
    return split, extract_gz(task) if isinstance(task, GzTask) else copy_members(task)


def extract(
    archives: Path, dataset: Path, splits: tuple[str, ...] = SPLITS, workers: int | None = None,
) -> dict[str, dict]:
    """Extract each split whose archive is present; returns per-split summaries.

    Every image archive is indexed (and its layout checked) before anything is
    written; then all splits share one pool, the box archives first: each is one
    sequential stream, so it runs beside the image copies instead of after them.
    A split's record is saved when its last task is done.
    """
    if not archives.is_dir():
        raise PrepError(f"{archives}: archives folder not found")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise PrepError(f"unknown split {unknown[0]!r}; choose from {', '.join(SPLITS)}")
    found = {s: find_archive(archives, s) for s in splits}
    if not any(found.values()):
        raise PrepError(f"{archives}: none of the archives for {', '.join(splits)} is here")
    summary: dict[str, dict] = {}
    t0 = time.monotonic()
    todo: dict[str, dict] = {}  # split -> its archive, totals and tasks left
    items: list[tuple[str, CopyTask | GzTask]] = []
    for split in splits:
        archive = found[split]
        if archive is None:
            continue
        done = stage_state.load(dataset, f"extract-{split}")
        if done is not None:
            summary[split] = {**done, "seconds": 0.0, "written": 0, "skipped": True}
            continue
        dest = ensure_dir(dataset / split)
        if split.startswith("bbox"):
            todo[split] = {"archive": archive, "files": 0, "bytes": 0, "classes": {}, "left": 1,
                           "written": 0}
            items.insert(0, (split, GzTask(archive, dest)))
            continue
        tasks = _train_tasks(archive, dest) if split == "train" else _flat_tasks(archive, dest)
        todo[split] = {
            "archive": archive, "files": sum(len(t.members) for t in tasks),
            "bytes": sum(m.size for t in tasks for m in t.members),
            "classes": {t.key: len(t.members) for t in tasks} if split == "train" else {},
            "left": len(tasks), "written": 0,
        }
        items += [(split, t) for t in tasks]
    total = sum(t["bytes"] for s, t in todo.items() if not s.startswith("bbox"))
    with bar(total, "extract", bytes_=True) as pb:
        for split, result in run_tasks(_run_task, items, workers):
            t = todo[split]
            if split.startswith("bbox"):
                t["files"], t["bytes"], t["classes"] = result
                t["written"] = t["bytes"]
            else:
                _key, _n, w, s = result
                t["written"] += w
                pb.update(w + s)
            t["left"] -= 1
            if t["left"] == 0:
                archive = t["archive"]
                rec = {"split": split, "archive": archive.name,
                       "archive_size": archive.stat().st_size, "files": t["files"],
                       "bytes": t["bytes"], "classes": t["classes"]}
                stage_state.save(dataset, f"extract-{split}", rec)
                summary[split] = {**rec, "seconds": time.monotonic() - t0,
                                  "written": t["written"]}
    return {split: summary[split] for split in splits if split in summary}
