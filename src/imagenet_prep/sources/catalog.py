"""The catalog: every image of a split, sorted, with its label and where its bytes are.

It is the single source of truth for every sink.  Train is sorted by (WNID, file
name) and val/test by file name, so everything downstream is deterministic.
Per image it keeps a name, a label and two integers (about 100 bytes per image,
~130 MB for the 1.28 M training images); image bytes are never held.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imagenet_prep.errors import CorruptArchiveError, PrepError
from imagenet_prep.runtime.files import is_tmp_name
from imagenet_prep.runtime.storage import RemotePath
from imagenet_prep.sources import metadata
from imagenet_prep.sources.names import Names
from imagenet_prep.sources.tarindex import ArchiveReader, Member, iter_members, iter_nested

if TYPE_CHECKING:
    from imagenet_prep.sources.subset import Subset


@dataclass
class Catalog:
    """One split's images; `labels` are 0..999 (sorted-WNID rank), -1 for the test split.

    The bytes of image i are at `offsets[i]`, `sizes[i]` in `archive`, or in the file
    `path(i)` under `root` when the catalog was built from extracted folders.
    """

    split: str
    names: Names
    labels: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray | None = None
    archive: Path | None = None
    root: Path | None = None
    label_map: np.ndarray | None = None  # 0..999 -> the label outputs write (a subset's)

    def __len__(self) -> int:
        return len(self.names)

    def wnid(self, i: int) -> str | None:
        label = int(self.labels[i])
        return metadata.wnids()[label] if label >= 0 else None

    def path(self, i: int) -> Path:
        assert self.root is not None
        wnid = self.wnid(i)
        return self.root / wnid / self.names[i] if wnid else self.root / self.names[i]

    def out_labels(self) -> np.ndarray:
        """The labels the outputs write: the subset's index of each image's class when the
        catalog is a subset's (sources/subset.py), else 0..999; -1 unlabelled."""
        if self.label_map is None:
            return self.labels
        return np.where(self.labels >= 0, self.label_map[np.maximum(self.labels, 0)], -1)

    def total_bytes(self) -> int:
        return int(self.sizes.sum())

    def open(self) -> ImageSource:
        return ImageSource(self)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Catalog:
        """The same split restricted to `indices` (in that order); cheap to pickle for a task."""
        idx = np.asarray(indices, dtype=np.int64)
        return Catalog(
            split=self.split, names=self.names[idx], labels=self.labels[idx],
            sizes=self.sizes[idx], offsets=None if self.offsets is None else self.offsets[idx],
            archive=self.archive, root=self.root, label_map=self.label_map,
        )


class ImageSource:
    """Reads image bytes for a catalog: one positioned read per image from an archive (from
    one in object storage: batched, concurrent ranged reads, see remote_tar)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._remote = None
        if isinstance(catalog.archive, RemotePath):
            from imagenet_prep.sources.remote_tar import ImageFetcher

            assert catalog.offsets is not None
            self._remote = ImageFetcher(catalog.archive, catalog.offsets, catalog.sizes)
        self._reader = ArchiveReader(catalog.archive) if catalog.archive \
            and self._remote is None else None

    def read(self, i: int) -> bytes:
        c = self.catalog
        if self._remote is not None:
            return self._remote.read(i)
        if self._reader is not None:
            assert c.offsets is not None
            return self._reader.read(int(c.offsets[i]), int(c.sizes[i]))
        path = c.path(i)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise PrepError(f"{path}: cannot read: {e.strerror}") from None
        if len(data) != int(c.sizes[i]):
            raise PrepError(f"{path}: changed size while being read")
        return data

    def io(self) -> dict[str, int] | None:
        """Requests and bytes of remote reads (None for a local source)."""
        return None if self._remote is None else self._remote.stats()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._remote is not None:
            self._remote.close()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_archive(archive: Path | RemotePath) -> Path | RemotePath:
    return archive if isinstance(archive, RemotePath) else Path(archive)


def _label_of(wnid: str, where: str) -> int:
    try:
        return metadata.wnid_to_index()[wnid]
    except KeyError:
        raise PrepError(f"{where}: {wnid!r} is not one of the 1000 ILSVRC2012 classes") from None


def _make(split: str, rows: list[tuple[str, int, int, int]], **kw: object) -> Catalog:
    """rows: (name, label, offset, size), already sorted."""
    return Catalog(
        split=split,
        names=Names.of(r[0] for r in rows),
        labels=np.fromiter((r[1] for r in rows), dtype=np.int16, count=len(rows)),
        offsets=np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows)),
        sizes=np.fromiter((r[3] for r in rows), dtype=np.int64, count=len(rows)),
        **kw,  # type: ignore[arg-type]
    )


def _flat_name(archive: str, name: str) -> str:
    if "/" in name:
        raise CorruptArchiveError(
            f"{archive}: unexpected member {name!r}: images are expected at the top level"
        )
    return name


def iter_classes(archive: Path, subset: Subset | None = None
                 ) -> Iterator[tuple[str, tuple[Member, ...]]]:
    """(WNID, its images) for each class tar of ILSVRC2012_img_train.tar, layout checked.

    With a `subset`, the class tars of other classes are skipped unread (their headers
    too) and only the subset's training files are yielded; names of the subset that
    the archive lacks are refused once every kept class is read.
    """
    found: list[str] = []
    classes: set[str] = set()
    for inner, members in iter_nested(archive):
        where = f"{archive}:{inner.name}"
        if not inner.name.endswith(".tar") or "/" in inner.name:
            raise CorruptArchiveError(
                f"{archive}: unexpected member {inner.name!r}: expected only WNID.tar files"
            )
        wnid = inner.name[:-4]
        _label_of(wnid, where)
        if subset is not None and not subset.keeps_class(wnid):
            continue
        classes.add(wnid)
        images = tuple(members)
        for m in images:
            _flat_name(where, m.name)
        if not images:
            raise CorruptArchiveError(f"{where}: class archive holds no images")
        if subset is not None and subset.train_files is not None:
            images = tuple(m for m in images if m.name in subset.train_files)
            found += [m.name for m in images]
            if not images:
                continue  # refused below: the subset names files of this class
        yield wnid, images
    if subset is not None:
        subset.missing_train(found, archive)
        subset.missing_classes(classes, archive)


def flat_members(archive: Path) -> list[Member]:
    """The images of a flat archive (val or test), sorted by name, layout checked."""
    members = sorted(iter_members(archive), key=lambda m: m.name)
    for m in members:
        _flat_name(str(archive), m.name)
    if not members:
        raise CorruptArchiveError(f"{archive}: holds no images")
    return members


def train_from_archive(archive: Path, subset: Subset | None = None) -> Catalog:
    """Index ILSVRC2012_img_train.tar (a tar of per-class tars) by headers only.

    Built a class at a time into arrays (no object per image survives the class), then
    ordered by (label, name) as a sort of the rows would.
    """
    wnid_index = metadata.wnid_to_index()
    parts: list[tuple[int, Names, np.ndarray, np.ndarray]] = []
    for wnid, images in iter_classes(archive, subset):
        names = Names.of(m.name for m in images)
        order = np.argsort(names.raw, kind="stable")
        offsets = np.fromiter((m.offset for m in images), dtype=np.int64, count=len(images))
        sizes = np.fromiter((m.size for m in images), dtype=np.int64, count=len(images))
        parts.append((wnid_index[wnid], names[order], offsets[order], sizes[order]))
    if not parts:
        raise CorruptArchiveError(f"{archive}: holds no class archives")
    parts.sort(key=lambda p: p[0])
    width = max(p[1].raw.dtype.itemsize for p in parts)
    return Catalog(
        split="train", names=Names(np.concatenate([p[1].raw.astype(f"S{width}") for p in parts])),
        labels=np.concatenate([np.full(len(p[1]), p[0], dtype=np.int16) for p in parts]),
        offsets=np.concatenate([p[2] for p in parts]), sizes=np.concatenate([p[3] for p in parts]),
        archive=_as_archive(archive),
    )


def flat_from_archive(split: str, archive: Path, labels: Sequence[str] | None) -> Catalog:
    """Index a flat image archive (val or test); pair sorted names with `labels` when given."""
    members = flat_members(archive)
    labs = _pair_labels(split, [m.name for m in members], labels, str(archive))
    rows = [(m.name, lab, m.offset, m.size) for m, lab in zip(members, labs, strict=True)]
    return _make(split, rows, archive=_as_archive(archive))


def with_labels(cat: Catalog, labels: Sequence[str]) -> Catalog:
    """The same images labelled with `labels` (one WNID per image, in catalog order)."""
    where = str(cat.archive or cat.root)
    cat.labels = np.asarray(_pair_labels(cat.split, cat.names, labels, where), dtype=np.int16)
    return cat


def _pair_labels(
    split: str, names: list[str], labels: Sequence[str] | None, where: str,
) -> list[int]:
    if labels is None:
        return [-1] * len(names)
    if len(labels) != len(names):
        raise PrepError(
            f"{where}: {len(names)} {split} images but {len(labels)} labels; "
            "the label source does not belong to these images"
        )
    return [_label_of(w, where) for w in labels]


def _scan_files(folder: Path) -> Iterator[tuple[str, int]]:
    """(name, size) of the image files directly in `folder`, skipping our temporary files."""
    with os.scandir(folder) as it:
        for e in it:
            if e.is_file(follow_symlinks=False) and not is_tmp_name(e.name):
                yield e.name, e.stat(follow_symlinks=False).st_size


def class_dirs(root: Path) -> list[str]:
    """The sorted WNID-named folders of a class tree; other entries are the user's own."""
    known = metadata.wnid_to_index()
    with os.scandir(root) as it:
        return sorted(e.name for e in it if e.is_dir(follow_symlinks=False) and e.name in known)


def grouped_from_folder(split: str, root: Path) -> Catalog:
    """Index a class tree root/WNID/*.JPEG (train/ or a grouped val/)."""
    if not root.is_dir():
        raise PrepError(f"{root}: folder not found")
    index = metadata.wnid_to_index()
    rows = [(name, index[wnid], -1, size)
            for wnid in class_dirs(root) for name, size in _scan_files(root / wnid)]
    if not rows:
        raise PrepError(f"{root}: no class folders with images (expected {root}/WNID/*.JPEG)")
    rows.sort(key=lambda r: (r[1], r[0]))
    return _make(split, rows, root=root)
