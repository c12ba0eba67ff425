"""Prove the extracted files from their manifests: every file there, its size, its CRC32C.

Extraction records each file it writes (name, size, CRC32C) in a small piece per
task; this reads every listed file back and compares, so a truncated, zeroed or
altered image is found and named.  Files found damaged are returned as paths
relative to DATASET, for the next run to write again.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from imagenet_prep.layout import extract_record
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.file_manifest import (
    DamagedPiece,
    file_crc32c,
    load_piece,
    load_piece_to_redo,
    piece_paths,
)
from imagenet_prep.runtime.pool import Workers, run_tasks


@dataclass(frozen=True)
class _PieceCheck:
    dataset: Path
    split: str
    piece: Path
    folders: tuple[tuple[str, str], ...] = ()  # val after valtree: (name, its class folder)


def _where(task: _PieceCheck, name: str, folder_of: dict[str, str]) -> str:
    """The file's path relative to DATASET."""
    if task.split == "train":
        return f"train/{task.piece.stem}/{name}"
    if name in folder_of:
        return f"val/{folder_of[name]}/{name}"
    return f"{task.split}/{name}"


def _val_folders(dataset: Path) -> dict[str, str]:
    """name -> class folder of the validation images already grouped."""
    out: dict[str, str] = {}
    val = dataset / "val"
    if not val.is_dir():
        return out
    with os.scandir(val) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                for name in os.listdir(e.path):
                    out[name] = e.name
    return out


def _prove_piece(task: _PieceCheck) -> tuple[int, list[str], list[str]]:
    """(files proved, problems, damaged relative paths) of one piece."""
    folder_of = dict(task.folders)
    problems: list[str] = []
    damaged: list[str] = []
    try:
        entries = load_piece(task.piece)
    except DamagedPiece as e:
        return 0, [str(e)], []
    for name, (size, crc) in entries.items():
        rel = _where(task, name, folder_of)
        path = task.dataset / rel
        try:
            st = path.lstat()
        except FileNotFoundError:
            problems.append(f"{path}: missing")
            damaged.append(rel)
            continue
        have = st.st_size
        if not stat.S_ISREG(st.st_mode):  # the run refuses to write over it: said so here
            problems.append(f"{path}: not a regular file (a link or special file where "
                            "extraction wrote one); move it away")
            continue
        if have != size:
            problems.append(f"{path}: {have} bytes, {size} when extracted")
        elif file_crc32c(path) != crc:
            problems.append(f"{path}: content changed after extraction (CRC32C)")
        else:
            continue
        damaged.append(rel)
    return len(entries), problems, damaged


def prove_extracted(dataset: Path, splits: list[str], workers: Workers = None
                    ) -> tuple[list[str], list[str]]:
    """(problems, damaged paths) of the extracted splits `splits`, from their manifests."""
    problems: list[str] = []
    damaged: list[str] = []
    for split in splits:
        rec = stage_state.load(dataset, extract_record(split))
        if rec is None:
            problems.append(f"{dataset / split}: extraction did not finish; run the same "
                            "command again to complete it")
            continue
        tasks = [_PieceCheck(dataset, split, path) for path in piece_paths(dataset, split)]
        if split == "val" and (folder_of := _val_folders(dataset)):
            tasks = [replace(t, folders=tuple((n, folder_of[n]) for n in load_piece_to_redo(t.piece)
                                              if n in folder_of)) for t in tasks]
        files = 0
        for n, more, bad in run_tasks(_prove_piece, tasks, workers):
            files += n
            problems += more
            damaged += bad
        if files != rec["files"]:
            problems.append(f"{dataset / split}: the manifests list {files} files, extraction "
                            f"recorded {rec['files']}")
    return problems, damaged
