"""`flatten`: train_flatten/WNID_N.JPEG and val_flatten/WNID_ILSVRC2012_val_N.JPEG.

Hard links by default, so flattening costs no data bytes; symlinks or copies on
request, and copies automatically where the file system refuses hard links.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from pathlib import Path

from imagenet_prep.errors import PrepError
from imagenet_prep.layout import FLAT_DIR, FLATTEN_RECORD, flat_name
from imagenet_prep.runtime import expectation, stage_state, subset_record, val_classes
from imagenet_prep.runtime.file_manifest import not_extracted
from imagenet_prep.runtime.files import atomic_file, ensure_dir, is_tmp_name, os_error, tmp_path
from imagenet_prep.runtime.progress import bar
from imagenet_prep.sources.catalog import class_dirs
from imagenet_prep.sources.class_tree import (
    class_files,
    count_images,
    flat_entries,
    flat_strays,
    iter_tree,
)
from imagenet_prep.sources.subset import Subset

MODES = ("hardlink", "symlink", "copy")
_NO_LINKS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def is_flattened(src: Path, dst: Path, mode: str) -> bool:
    """True when dst already stands for src in the given mode."""
    try:
        if mode == "symlink":
            return dst.is_symlink() and os.readlink(dst) == os.path.relpath(src, dst.parent)
        if dst.is_symlink():
            return False
        return os.path.samefile(src, dst) or (
            mode != "hardlink" and dst.stat().st_size == src.stat().st_size
        )
    except FileNotFoundError:
        return False


def _place(src: Path, dst: Path, mode: str) -> None:
    """Create dst for src under a temporary name, then rename over any stale dst."""
    tmp = tmp_path(dst)
    if os.path.lexists(tmp):
        os.unlink(tmp)
    if mode == "copy":
        with atomic_file(dst) as f, open(src, "rb") as s:
            shutil.copyfileobj(s, f, 1 << 20)
        return
    try:
        if mode == "symlink":
            os.symlink(os.path.relpath(src, dst.parent), tmp)
        else:
            os.link(src, tmp)
        os.replace(tmp, dst)
    except BaseException:  # an error, Ctrl-C or SIGTERM: no temporary name left behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _link_class(src_dir: str, out: str, split: str, wnid: str) -> tuple[int, int]:
    """Hard-link one class folder's images into the flat folder; returns (made, kept).

    The hot path of 1.33 M links: plain strings, inode numbers from the class folder's
    listing, and a link straight to the final name (link() is atomic: the name appears
    whole or not at all); only an existing name costs a stat, to see whether it is
    already this image (kept) or stale (replaced through a temporary name).
    """
    made = kept = 0
    with os.scandir(src_dir) as it:
        entries = [(e.name, e.inode()) for e in it
                   if e.is_file(follow_symlinks=False) and not is_tmp_name(e.name)]
    for name, inode in entries:
        src = os.path.join(src_dir, name)
        dst = os.path.join(out, flat_name(split, wnid, name))
        try:
            os.link(src, dst)
            made += 1
            continue
        except FileExistsError:
            pass
        st = os.lstat(dst)
        if st.st_ino == inode and not os.path.islink(dst):
            kept += 1
            continue
        _place(Path(src), Path(dst), "hardlink")
        made += 1
    return made, kept


def flatten(dataset: Path, splits: tuple[str, ...] = ("train", "val"), mode: str = "hardlink",
            subset: Subset | None = None) -> dict[str, dict]:
    """Make the flat folders; returns per-split counts and the mode actually used.  They
    mirror the class trees, so a subset's (`subset` is only held to the recorded one)."""
    if mode not in MODES:
        raise PrepError(f"unknown flatten mode {mode!r}; choose from {', '.join(MODES)}")
    subset_record.claim(dataset, subset)
    expectation.expect(dataset, {"flatten": {"mode": mode, "splits": list(splits)}}, {})
    summary = {}
    for split in splits:
        root = dataset / split
        if not root.is_dir():
            raise PrepError(f"{root}: folder not found; run extract (and valtree for val) first")
        _refuse_extra(dataset, split, root)
        out = ensure_dir(dataset / FLAT_DIR[split])
        if folders := flat_entries(out)[1]:
            raise PrepError(f"{out / folders[0]}: a folder in a flat folder (no stage put it "
                            "here); move it away and rerun")
        used, made, kept = mode, 0, 0
        with bar(None, f"flatten {split}") as pb:
            if used == "hardlink":
                try:
                    for wnid in class_dirs(root):
                        m, k = _link_class(os.path.join(root, wnid), os.fspath(out), split, wnid)
                        made, kept = made + m, kept + k
                        pb.update(m + k)
                except OSError as e:
                    if e.errno not in _NO_LINKS:
                        raise os_error(out, e) from None
                    print(f"flatten: {out}: hard links refused ({e.strerror}); copying instead",
                          file=sys.stderr)
                    used, made, kept = "copy", 0, 0
            if used != "hardlink":
                made, kept = _place_each(root, out, split, used, pb)
        if strays := flat_strays(out, root, split) if count_images(out) > made + kept else []:
            raise PrepError(f"{out / strays[0]}: not an image of {root} (no stage put it "
                            "here); move it away and rerun")
        summary[split] = {"files": made + kept, "created": made, "mode": used}
    modes = (stage_state.load(dataset, FLATTEN_RECORD) or {}).get("modes", {})
    stage_state.save(dataset, FLATTEN_RECORD,  # what `check` proves the links against
                     {"modes": {**modes, **{s: v["mode"] for s, v in summary.items()}}})
    return summary


def _refuse_extra(dataset: Path, split: str, root: Path) -> None:
    """A file in a class folder that extraction did not write (train) or valtree did not
    group (val) would be flattened as an image of that class: refused by name."""
    grouped = val_classes.load(dataset) if split == "val" else None
    for wnid in class_dirs(root):
        names = class_files(root / wnid)
        extra = not_extracted(dataset, split, wnid, names) if split == "train" else \
            [n for n in names if n not in grouped] if grouped is not None else []
        if extra:
            what = "extraction did not write it" if split == "train" else \
                "valtree did not group it"
            raise PrepError(f"{root / wnid / extra[0]}: not an image of the archive ({what}); "
                            f"move it out of {root} and rerun")


def _place_each(root: Path, out: Path, split: str, mode: str, pb) -> tuple[int, int]:
    """Symlinks or copies, one image at a time (modes where the file system does the work)."""
    made = kept = 0
    for wnid, name in iter_tree(root):
        src, dst = root / wnid / name, out / flat_name(split, wnid, name)
        if is_flattened(src, dst, mode):
            kept += 1
            continue
        try:
            _place(src, dst, mode)
        except OSError as e:
            raise os_error(dst, e) from None
        made += 1
        pb.update()
    return made, kept
