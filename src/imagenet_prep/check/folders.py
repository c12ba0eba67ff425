"""Check the folder outputs: class trees and flat splits against the extraction records,
the flat folders against the trees, synsets.txt, and leftover temporary files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from imagenet_prep.layout import (
    BBOX_RECORD,
    BOX_CSV,
    EXTRACT_SPLITS,
    FLAT_DIR,
    FLATTEN_RECORD,
    STATE_DIR,
    SYNSETS_RECORD,
    SYNSETS_TXT,
    VALTREE_RECORD,
    extract_record,
    flat_name,
)
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.file_manifest import file_crc32c
from imagenet_prep.runtime.files import is_tmp_name
from imagenet_prep.sources import metadata
from imagenet_prep.sources.catalog import class_dirs
from imagenet_prep.sources.class_tree import iter_tree


def _count_tree(root: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for wnid, _ in iter_tree(root):
        counts[wnid] = counts.get(wnid, 0) + 1
    return counts


def _count_files(folder: Path) -> int:
    with os.scandir(folder) as it:
        return sum(1 for e in it if e.is_file() and e.name.endswith(".JPEG"))


def _diff_counts(what: str, want: dict[str, int], got: dict[str, int]) -> list[str]:
    out = []
    for wnid in sorted(set(want) | set(got)):
        if want.get(wnid, 0) != got.get(wnid, 0):
            out.append(f"{what}/{wnid}: {got.get(wnid, 0)} files, expected {want.get(wnid, 0)}")
    return out


def check_tmp_files(dataset: Path) -> list[str]:
    problems = []
    # a bucket has none: objects are uploaded whole (os.walk of a non-path yields nothing)
    for dirpath, dirnames, filenames in os.walk(dataset) if isinstance(dataset, Path) else ():
        dirnames[:] = [d for d in dirnames if d != STATE_DIR]
        problems += [f"{dirpath}/{n}: leftover temporary file" for n in filenames if is_tmp_name(n)]
    return problems


def check_splits(dataset: Path) -> list[str]:
    """Each extracted split against its record; val/ against valtree's record once grouped."""
    problems = []
    for split in (s for s in EXTRACT_SPLITS if s != "val"):
        rec = stage_state.load(dataset, extract_record(split))
        if rec is None:
            continue
        folder = dataset / split
        if not folder.is_dir():
            problems.append(f"{folder}: missing (extraction recorded {rec['files']} files)")
        elif split == "train":
            problems += _diff_counts("train", rec["classes"], _count_tree(folder))
        elif split == "test":
            if (n := _count_files(folder)) != rec["files"]:
                problems.append(f"{folder}: {n} files, expected {rec['files']}")
        else:
            n = sum(len(f) for _, _, f in os.walk(folder))
            if n != rec["files"]:
                problems.append(f"{folder}: {n} files, expected {rec['files']}")
    val = dataset / "val"
    extracted = stage_state.load(dataset, extract_record("val"))
    grouped = stage_state.load(dataset, VALTREE_RECORD)
    if grouped is not None:
        problems += _diff_counts("val", grouped["classes"], _count_tree(val))
        if val.is_dir() and (flat := [e.name for e in os.scandir(val)
                                      if e.is_file() and e.name.endswith(".JPEG")]):
            problems.append(f"{val}: {len(flat)} images not in class folders, e.g. {flat[0]}")
    elif extracted is not None:
        n = _count_files(val) if val.is_dir() else 0
        if n != extracted["files"]:
            problems.append(f"{val}: {n} files, expected {extracted['files']}")
    return problems


def check_flat(dataset: Path, required: Iterable[str] = ()) -> list[str]:
    """Every image of a class tree present in its flat folder, as the mode `flatten` used
    (the same file for hard links, a link to it, or a copy of equal content), and nothing
    else there; the flat folders of `required` splits must exist."""
    problems = []
    modes = (stage_state.load(dataset, FLATTEN_RECORD) or {}).get("modes", {})
    for split, flat in FLAT_DIR.items():
        out, root = dataset / flat, dataset / split
        if not out.is_dir() or not root.is_dir():
            if split in required:
                problems.append(f"{out}: missing (flat folders were asked for)")
            continue
        mode = modes.get(split)
        expected = 0
        for wnid, name in iter_tree(root):
            fname = flat_name(split, wnid, name)
            expected += 1
            src, dst = root / wnid / name, out / fname
            try:
                same = _same(src, dst, mode)
            except FileNotFoundError:
                problems.append(f"{dst}: missing")
                continue
            if not same:
                problems.append(f"{dst}: differs from {src}")
        # every expected name was found above, so any other image there is one too many:
        # counted, not listed (a set of 1.28 M names would cost ~100 MB)
        with os.scandir(out) as it:
            found = sum(1 for e in it if e.name.endswith(".JPEG") and not is_tmp_name(e.name))
        if found > expected:
            problems.append(f"{out}: {found - expected} files not in {split}/")
    return problems


def _same(src: Path, dst: Path, mode: str | None) -> bool:
    """Does the flat entry stand for the tree's file?  Unknown mode (an older dataset): the
    same file, or a file of the same size."""
    if mode == "symlink":
        return dst.is_symlink() and os.path.samefile(src, dst)
    if os.path.samefile(src, dst):
        return mode in ("hardlink", None) or not dst.is_symlink()
    if mode == "hardlink":
        return False
    if mode == "copy":
        return file_crc32c(src) == file_crc32c(dst)
    return src.stat().st_size == dst.stat().st_size


def _proved_file(dataset: Path, path: Path, record: str, what: str) -> list[str]:
    """A small output file against the size and SHA-256 its stage recorded."""
    rec = stage_state.load(dataset, record)
    if rec is None:
        return [f"{path}: {what} did not finish (no record)"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [f"{path}: missing"]
    if "sha256" in rec and hashlib.sha256(data).hexdigest() != rec["sha256"]:
        return [f"{path}: differs from what {what} wrote ({len(data)} bytes, "
                f"{rec.get('bytes', '?')} then)"]
    return []


def check_csv(dataset: Path) -> list[str]:
    """The box CSV: present and byte for byte what `bbox` wrote."""
    return _proved_file(dataset, dataset / BOX_CSV, BBOX_RECORD, "bbox")


def check_synsets(dataset: Path, required: bool = False) -> list[str]:
    """synsets.txt: sorted unique ILSVRC2012 WNIDs, each described, the classes of train/;
    when asked for, present and what `synsets` wrote."""
    path = dataset / SYNSETS_TXT
    if required and (problems := _proved_file(dataset, path, SYNSETS_RECORD, "synsets")):
        return problems
    if not path.is_file():
        return []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        return [f"{path}: not text (damaged)"]
    wnids = [line.split(" ", 1)[0] for line in lines]
    problems = []
    if wnids != sorted(set(wnids)):
        problems.append(f"{path}: WNIDs not sorted or not unique")
    if any(" " not in line or not line.split(" ", 1)[1] for line in lines):
        problems.append(f"{path}: a line without a description")
    unknown = [w for w in wnids if w not in metadata.wnid_to_index()]
    if unknown:
        problems.append(f"{path}: {unknown[0]} is not an ILSVRC2012 class")
    train = dataset / "train"
    if train.is_dir():
        present = class_dirs(train)
        if present != wnids:
            problems.append(f"{path}: lists {len(wnids)} classes, train/ has {len(present)}")
    return problems
