"""Check the folder outputs: class trees and flat splits against the extraction records,
the flat folders against the trees, synsets.txt, and leftover temporary files."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable
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
from imagenet_prep.runtime import stage_state, val_classes
from imagenet_prep.runtime.file_manifest import extracted_names, file_crc32c, not_extracted
from imagenet_prep.runtime.files import is_tmp_name
from imagenet_prep.runtime.storage import is_remote
from imagenet_prep.sources import metadata
from imagenet_prep.sources.catalog import class_dirs
from imagenet_prep.sources.class_tree import (
    class_files,
    count_images,
    flat_entries,
    flat_strays,
    iter_tree,
)


def _scan_tree(root: Path) -> tuple[dict[str, int], list[str]]:
    """(files per class folder, problems): a folder that is not a class of ours, or a
    folder, link or special file inside a class folder, is read by ImageFolder all the
    same (as one more class, or as images of that class), so each is named."""
    counts: dict[str, int] = {}
    strays: list[str] = []
    known = metadata.wnid_to_index()
    with os.scandir(root) as top:
        for e in sorted(top, key=lambda e: e.name):
            if not e.is_dir(follow_symlinks=False) or e.name not in known:
                if e.is_dir():  # another folder, or a link to one: ImageFolder's class too
                    strays.append(f"{e.path}: not a class folder of this dataset (loaders "
                                  "would read it as one); move it away")
                continue  # a file: no loader reads it (val's flat images are said below)
            n = 0
            with os.scandir(e.path) as inner:
                for f in inner:
                    if f.is_file(follow_symlinks=False):
                        n += not is_tmp_name(f.name)
                    else:
                        strays.append(f"{f.path}: not an image of the archive (a folder, "
                                      f"link or special file in class {e.name}); move it away")
            counts[e.name] = n
    return counts, sorted(strays)


def _diff_counts(root: Path, want: dict[str, int], got: dict[str, int],
                 extra: Callable[[str], list[str]] = lambda wnid: []) -> list[str]:
    """Classes whose file count is not the recorded one, each with the files it holds
    beyond what was written (`extra`, when the record can name them: then the count line
    is left out when the named files are the whole difference)."""
    out = []
    for wnid in sorted(set(want) | set(got)):
        has, wrote = got.get(wnid, 0), want.get(wnid, 0)
        named = extra(wnid) if has > wrote else []
        if has != wrote and len(named) != has - wrote:
            out.append(f"{root}/{wnid}: {has} files, expected {wrote}")
        out += named
    return out


def _extra_train(dataset: Path) -> Callable[[str], list[str]]:
    """The files of a train class folder its manifest does not list (named, so a user finds
    one stray file among 1,300)."""
    def extra(wnid: str) -> list[str]:
        folder = dataset / "train" / wnid
        names = class_files(folder) if folder.is_dir() else []
        return [f"{folder / n}: not an image of the archive (extraction did not write it); "
                "move it away" for n in not_extracted(dataset, "train", wnid, names)]
    return extra


def _unlisted(dataset: Path, split: str, most: int = 10) -> list[str]:
    """The first files of a split folder (test, bbox_train, bbox_val) that its manifests do
    not list: named, so one stray file among 544,546 box XMLs is found.  Only called when
    the folder holds more files than were extracted."""
    listed = extracted_names(dataset, split)
    if listed is None:
        return []  # named as damaged by the manifest check
    folder, out = dataset / split, []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            if rel not in listed and not is_tmp_name(name) and len(out) < most:
                out.append(f"{folder / rel}: not a file of the archive (extraction did not "
                           "write it); move it away")
    return out


def _misplaced_val(dataset: Path) -> list[str]:
    """Every grouped validation image in the class folder valtree put it in (a swap
    between two folders keeps every count and every CRC32C)."""
    val, classes = dataset / "val", val_classes.load(dataset)
    if classes is None:
        return [f"{val_classes.path(dataset)}: missing (the class valtree gave each image); "
                "run the same command again to write it"]
    problems = []
    for wnid, name in iter_tree(val) if val.is_dir() else ():
        want = classes.get(name)
        if want is None:
            problems.append(f"{val / wnid / name}: not an image valtree grouped; move it "
                            "out of val/")
        elif want != wnid and (val / want / name).is_file():
            problems.append(f"{val / wnid / name}: a copy of an image of {want}, which is "
                            f"there too; move this copy away")
        elif want != wnid:
            problems.append(f"{val / wnid / name}: in the folder of {wnid}, but valtree "
                            f"grouped it under {want}; the next run moves it back")
    return problems


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
            counts, strays = _scan_tree(folder)
            problems += strays + _diff_counts(folder, rec["classes"], counts,
                                              _extra_train(dataset))
        else:
            n, folders = flat_entries(folder) if split == "test" else \
                (sum(len(f) for _, _, f in os.walk(folder)), [])
            named = _unlisted(dataset, split) if n > rec["files"] else []
            if n != rec["files"] and len(named) != n - rec["files"]:  # not all explained
                problems.append(f"{folder}: {n} files, expected {rec['files']}")
            problems += named
            # test/ is flat: a folder there is read as an image by a listing
            problems += [f"{folder / d}: a folder in {split}/ (no stage put it here); move it "
                         "away" for d in folders[:10]]
    val = dataset / "val"
    extracted = stage_state.load(dataset, extract_record("val"))
    grouped = stage_state.load(dataset, VALTREE_RECORD)
    if grouped is not None:
        counts, strays = _scan_tree(val) if val.is_dir() else ({}, [])
        problems += strays + _diff_counts(val, grouped["classes"], counts)
        problems += _misplaced_val(dataset)
        if val.is_dir() and (flat := [e.name for e in os.scandir(val)
                                      if e.is_file() and e.name.endswith(".JPEG")]):
            problems.append(f"{val}: {len(flat)} images not in class folders, e.g. {flat[0]}")
    elif extracted is not None:
        n = count_images(val) if val.is_dir() else 0
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
        # counted, and only then named (a set of 1.28 M names would cost ~100 MB)
        found, folders = flat_entries(out)
        if found > expected:
            problems.append(f"{out}: {found - expected} files not in {split}/")
            problems += [f"{out / n}: not an image of {split}/ (no stage put it here); move "
                         "it away" for n in flat_strays(out, root, split)[:10]]
        problems += [f"{out / n}: a folder in a flat folder (no stage put it here); move it "
                     "away" for n in folders[:10]]
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
        if not is_remote(path) and not stat.S_ISREG(path.lstat().st_mode):  # no links in a bucket
            return [f"{path}: not a regular file (a link or special file where {what} wrote "
                    "one); run the same command again to write it"]
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
