"""Reading a class tree on disk: DATASET/train/WNID/*, a grouped DATASET/val/WNID/*.

Readers only (the writers are folders/extract.py and folders/valtree.py): `check`,
`report` and `flatten` list the trees the same way, skipping our temporary files
and any folder that is not an ILSVRC2012 class.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from imagenet_prep.layout import tree_path
from imagenet_prep.runtime.files import is_tmp_name
from imagenet_prep.sources.catalog import class_dirs


def has_class_folders(root: Path) -> bool:
    return root.is_dir() and bool(class_dirs(root))


def class_files(folder: Path) -> list[str]:
    """Sorted file names of one class folder (our temporary files left out)."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it
                      if e.is_file(follow_symlinks=False) and not is_tmp_name(e.name))


def iter_tree(root: Path) -> Iterator[tuple[str, str]]:
    """(wnid, name) of every image in a class tree, sorted."""
    for wnid in class_dirs(root):
        for name in class_files(root / wnid):
            yield wnid, name


def count_images(folder: Path) -> int:
    """The *.JPEG entries of one folder (a flat folder, test/, a val/ not yet grouped)."""
    with os.scandir(folder) as it:
        return sum(1 for e in it if e.name.endswith(".JPEG") and not is_tmp_name(e.name))


def flat_entries(folder: Path) -> tuple[int, list[str]]:
    """(*.JPEG entries, sorted folders) of a folder that holds only files (a flat folder,
    test/), in one listing: no stage puts a folder there, and a loader listing the
    folder would take it for an image."""
    images, folders = 0, []
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                folders.append(e.name)
            elif e.name.endswith(".JPEG") and not is_tmp_name(e.name):
                images += 1
    return images, sorted(folders)


def flat_strays(flat: Path, root: Path, split: str) -> list[str]:
    """Sorted images of a flat folder that stand for no file of the class tree `root`: put
    there by something else (one stat per entry: called only when the counts differ)."""
    with os.scandir(flat) as it:
        return sorted(e.name for e in it if e.name.endswith(".JPEG") and not is_tmp_name(e.name)
                      and not os.path.isfile(root / tree_path(split, e.name)))
