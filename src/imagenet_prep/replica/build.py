"""A synthetic, deterministic replica of the six official ILSVRC2012 archives.

Real ImageNet is 155 GB behind a login, so every test and demo runs on this
replica instead.  It copies the archives' layout and their known traps
(docs/archives.md, docs/labels.md, docs/boxes.md, docs/quirks.md) at any
scale: real WNIDs and class texts, devkit numbering that is not alphabetical,
unsorted tar members, image numbers that sort differently as text and as
numbers, CMYK / YCCK / grayscale JPEGs, a PNG under a .JPEG name, and box XMLs
with the real files' oddities.

Output is a pure function of the parameters: images are rendered by a process
pool (replica_images.py) but every archive is written sequentially here, with
fixed tar metadata and gzip mtime 0, so the bytes do not depend on the worker
count.  Archives stream to disk; each inner class tar is spooled (memory up to
64 MB, then a temporary file) before it is appended to the outer train tar.
`replica.json` records the parameters and which members carry which quirk.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import io
import itertools
import json
import os
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from imagenet_prep.errors import PrepError
from imagenet_prep.replica.images import ImageTask, image_rng, render_batch, worker_init
from imagenet_prep.runtime.files import check_writable, ensure_dir
from imagenet_prep.runtime.pool import default_workers
from imagenet_prep.runtime.progress import bar
from imagenet_prep.sources import metadata
from imagenet_prep.sources.archives import (
    BBOX_TRAIN,
    BBOX_VAL,
    DEVKIT,
    MD5SUMS,
    SIZES,
    TEST,
    TRAIN,
    VAL,
)

ARCHIVES = (TRAIN, VAL, TEST, BBOX_TRAIN, BBOX_VAL, DEVKIT)
REPLICA_JSON = "replica.json"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"

MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Thu Jun 14 02:27:01 2012"
DEFAULT_SIZE = (500, 375)  # the most common ImageNet size
DEFAULT_CLASSES, DEFAULT_TRAIN_PER_CLASS, DEFAULT_VAL_PER_CLASS, DEFAULT_TEST = 10, 40, 5, 20
MTIME = 1_335_830_400  # 2012-05-01 00:00 UTC, for every tar member
UID = GID = 1000
UNAME = GNAME = "ilsvrc"
SPOOL_BYTES = 64 << 20  # inner class tars above this spill to a temporary file
BOX_FRACTION = 0.4  # share of train images with a box XML (real: 42.5 %)
BLACKLIST_FRACTION = 0.035  # real: 1,762 of 50,000 validation images
COUNT_SPREAD = 0.3  # per-class train counts vary by up to ±30 % around the request

# Quirk keys in replica.json -> what the listed members carry.
QUIRKS = {
    "cmyk": "CMYK JPEG, Adobe transform 0 (train and val)",
    "ycck": "YCCK JPEG, Adobe transform 2, opens as CMYK (train)",
    "png": "PNG stored under a .JPEG name (train)",
    "grayscale": "1-channel (mode L) JPEG (train, val, test)",
    "bbox_beyond_image": "a box reaching past the XML <size> (train XML)",
    "bbox_min_gt_max": "a box with xmin > xmax and ymin > ymax (train XML)",
    "bbox_float": "coordinates written as floats such as 12.5 (train XML)",
    "bbox_multi_object": "three <object>s in one file (train XML)",
    "bbox_other_wnid": "first <object> named by another class's WNID (train XML)",
    "bbox_human_word": "<object><name> is a word such as Scottish_deerhound (train XML)",
    "bbox_size_mismatch": "<size> differs from the JPEG's real size (train XML)",
    "bbox_filename_%s": "<filename> is a literal %s (train XML)",
}


@dataclass(frozen=True)
class ArchiveFile:
    """One written archive: its byte size and MD5 (what MD5SUMS and SIZES list)."""

    size: int
    md5: str


@dataclass(frozen=True)
class ReplicaInfo:
    """What make_replica wrote; the same facts as replica.json plus the full val labels."""

    out: Path
    params: dict[str, Any]
    wnids: tuple[str, ...]  # the replica's classes, ascending
    devkit_order: tuple[str, ...]  # WNID of the replica's ILSVRC2012_ID 1..N
    train_counts: dict[str, int]  # WNID -> images in its class tar
    val_labels: tuple[str, ...]  # WNID of ILSVRC2012_val_%08d.JPEG, i = 1..len
    test_images: int
    bbox_train_files: int
    bbox_val_files: int
    quirks: dict[str, tuple[str, ...]]
    archives: dict[str, ArchiveFile]
    seconds: float = field(compare=False)

    @property
    def train_images(self) -> int:
        return sum(self.train_counts.values())

    @property
    def val_images(self) -> int:
        return len(self.val_labels)

    @property
    def images(self) -> int:
        return self.train_images + self.val_images + self.test_images


# ----------------------------------------------------------------------------- planning


@dataclass
class _Box:
    name: str
    coords: tuple[str, str, str, str]  # xmin, ymin, xmax, ymax as written


@dataclass
class _Annotation:
    folder: str
    filename: str
    size: tuple[int, int]
    objects: list[_Box]


@dataclass
class _Plan:
    wnids: list[str]
    devkit_order: list[str]
    train_order: list[str]  # outer tar member order (WNIDs)
    train: dict[str, list[ImageTask]]  # WNID -> inner tar members in order
    val_labels: list[str]
    val: list[ImageTask]  # member order
    test: list[ImageTask]  # member order
    bbox_train: dict[str, list[tuple[str, _Annotation]]]  # WNID -> (xml member, annotation)
    bbox_train_order: list[str]
    bbox_val: list[tuple[str, _Annotation]]
    blacklist: list[int]
    quirks: dict[str, list[str]]


def _unsorted(items: list[Any], rng: np.random.Generator,
              keys: tuple[Callable[[Any], Any], ...]) -> list[Any]:
    """A shuffled copy that equals none of the sorted orders by `keys` (when possible)."""
    if len(items) < 2:
        return list(items)
    sorted_orders = [sorted(items, key=k) for k in keys]
    order = list(items)
    for _ in range(64):
        order = [items[i] for i in rng.permutation(len(items))]
        if all(order != s for s in sorted_orders):
            return order
    return sorted_orders[0][1:] + sorted_orders[0][:1]


def _text(name: str) -> str:
    return name


def _number(name: str) -> int:
    return int(name.rsplit("_", 1)[1].split(".", 1)[0])


def _image_sizes(rng: np.random.Generator, size: tuple[int, int],
                 n: int) -> list[tuple[int, int]]:
    """Mostly the requested size, else portrait, a 3:2 crop, or another width and shape."""
    w, h = size
    r, scale, aspect = rng.random(n), rng.uniform(0.5, 1.0, n), rng.uniform(0.75, 1.33, n)
    other_w = np.rint(w * scale)
    widths = np.select([r < 0.55, r < 0.75, r < 0.87], [w, h, w], other_w)
    heights = np.select([r < 0.55, r < 0.75, r < 0.87], [h, w, round(h * 0.888)],
                        np.rint(other_w * h / w * aspect))
    widths, heights = np.maximum(widths, 2), np.maximum(heights, 2)
    return [(int(x), int(y)) for x, y in zip(widths, heights, strict=True)]


def _train_numbers(rng: np.random.Generator, count: int) -> list[int]:
    """`count` distinct image numbers, not consecutive, not fixed width, and (count >= 2)
    holding a pair such as 57 / 123 that sorts one way as text and the other as numbers."""
    if count == 1:
        return [int(rng.integers(1, 2000))]
    forced = [int(rng.integers(50, 99)), int(rng.integers(101, 200))]
    span = max(40 * count, 400)
    pool = [int(x) + 1 for x in rng.choice(span, size=min(span, count + 2), replace=False)]
    rest = [x for x in pool if x not in forced][: count - 2]
    return forced + rest


def _boxes(rng: np.random.Generator, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """One box per (w, h) frame, inside it, with xmin < xmax and ymin < ymax: (n, 4)."""
    out = []
    for side in (w, h):
        low = np.maximum(2, side // 4)
        extent = low + np.floor(rng.random(len(side)) * (side - low + 1)).astype(np.int64)
        start = np.floor(rng.random(len(side)) * (side - extent + 1)).astype(np.int64)
        out.append((start, start + extent - 1))
    (x0, x1), (y0, y1) = out
    return np.stack([x0, y0, x1, y1], axis=1)


def _box(rng: np.random.Generator, w: int, h: int) -> list[int]:
    return [int(v) for v in _boxes(rng, np.array([w]), np.array([h]))[0]]


def _coords(values: list[int]) -> tuple[str, str, str, str]:
    a, b, c, d = (str(v) for v in values)
    return a, b, c, d


def _annotations(rng: np.random.Generator, folder: str, stems: list[str], labels: list[str],
                 sizes: list[tuple[int, int]]) -> list[_Annotation]:
    """Ordinary box files: the real size, one object (15 % two) of the image's class."""
    objects = 1 + (rng.random(len(stems)) < 0.15)
    frames = np.repeat(np.array(sizes, dtype=np.int64).reshape(-1, 2), objects, axis=0)
    boxes = iter(_boxes(rng, frames[:, 0], frames[:, 1]).tolist())
    return [
        _Annotation(folder, stem, size, [_Box(label, _coords(next(boxes))) for _ in range(k)])
        for stem, label, size, k in zip(stems, labels, sizes, objects.tolist(), strict=True)
    ]


def _human_word(wnid: str) -> str:
    """The class's first name with underscores, as in the real `Scottish_deerhound` files."""
    return metadata.descriptions()[wnid].split(", ")[0].replace(" ", "_")


# Application order, so that quirks sharing one file (tiny replicas) do not undo each
# other: re-framing first, then objects added or renamed, then coordinate changes.
_BOX_QUIRK_ORDER = ("bbox_size_mismatch", "bbox_multi_object", "bbox_other_wnid",
                    "bbox_human_word", "bbox_beyond_image", "bbox_min_gt_max", "bbox_float",
                    "bbox_filename_%s")


def _apply_box_quirk(kind: str, ann: _Annotation, wnid: str, others: list[str],
                     rng: np.random.Generator, touched: set[int]) -> None:
    """Give `ann` the quirk `kind`; `touched` holds ids of objects a coordinate quirk owns."""
    w, h = ann.size
    if kind == "bbox_size_mismatch":
        # the size shown to the annotator: boxes are drawn in that frame
        ann.size = (max(3, round(w * 1.6)), max(3, round(h * 1.6)))
        for obj in ann.objects:
            obj.coords = _coords(_box(rng, *ann.size))
    elif kind == "bbox_multi_object":
        ann.objects += [_Box(ann.objects[-1].name, _coords(_box(rng, w, h))) for _ in range(2)]
    elif kind == "bbox_other_wnid":
        other = others[int(rng.integers(0, len(others)))]
        ann.objects.insert(0, _Box(other, _coords(_box(rng, w, h))))
        touched.add(id(ann.objects[0]))
    elif kind == "bbox_human_word":
        for obj in ann.objects:
            if obj.name == wnid:
                obj.name = _human_word(wnid)
    elif kind == "bbox_filename_%s":
        ann.filename = "%s"
    else:
        free = [o for o in ann.objects if id(o) not in touched]
        if not free:
            ann.objects.append(_Box(ann.objects[-1].name, _coords(_box(rng, w, h))))
            free = ann.objects[-1:]
        obj = free[0]
        touched.add(id(obj))
        x0, y0, x1, y1 = _box(rng, w, h)
        if kind == "bbox_beyond_image":
            past = rng.integers(1, 40, size=2)
            obj.coords = _coords([x0, y0, w + int(past[0]), h + int(past[1])])
        elif kind == "bbox_min_gt_max":
            obj.coords = _coords([x1, y1, x0, y0])
        elif kind == "bbox_float":
            obj.coords = (f"{x0}.5", f"{y0}.5", f"{x1}.5", f"{y1}.5")
        else:
            raise ValueError(kind)


def _place(kinds: list[str], slots: list[list[str]], start: Callable[[int], int],
           used: set[str]) -> dict[str, list[str]]:
    """Give each quirk kind a distinct member, starting at class start(i) and moving on
    to the next class when one has no free member.  Kinds that find none are left out."""
    out: dict[str, list[str]] = {}
    n = len(slots)
    for i, kind in enumerate(kinds):
        for step in range(n):
            free = [m for m in slots[(start(i) + step) % n] if m not in used]
            if free:
                used.add(free[0])
                out.setdefault(kind, []).append(free[0])
                break
    return out


def _plan(classes: int, train_per_class: int, val_per_class: int, test: int,
          size: tuple[int, int], seed: int, chosen: Sequence[str] | None = None,
          extra_train: Collection[str] = ()) -> _Plan:
    """Every name, size, label, box and quirk position: all from the seed, no pixels yet.

    `chosen` replaces the first `classes` WNIDs; `extra_train` names training files that
    join the generated ones of their class (a subset list's real names)."""
    wnids = sorted(set(chosen)) if chosen else list(metadata.wnids()[:classes])
    by_class: dict[str, list[str]] = {}
    for n in sorted(extra_train):
        by_class.setdefault(n.split("_", 1)[0], []).append(n)
    devkit_rank = {w: i for i, w in metadata.devkit_id_to_wnid().items()}
    devkit_order = sorted(wnids, key=devkit_rank.__getitem__)
    quirks: dict[str, list[str]] = {}

    # train: per-class counts and names
    rng = image_rng(seed, "train")
    names: dict[str, list[str]] = {}
    for wnid in wnids:
        spread = rng.uniform(1 - COUNT_SPREAD, 1 + COUNT_SPREAD)
        count = max(1, round(train_per_class * spread))
        if train_per_class >= 2:
            count = max(2, count)
        nums = _train_numbers(rng, count)
        names[wnid] = [f"{wnid}_{n}.JPEG" for n in nums]
        if by_class.get(wnid):
            have = set(names[wnid])
            names[wnid] += [n for n in by_class[wnid] if n not in have]
    train_order = _unsorted(wnids, rng, (_text,))
    every_name = [n for w in wnids for n in names[w]]
    sizes = dict(zip(every_name, _image_sizes(rng, size, len(every_name)), strict=True))
    kinds: dict[str, str] = {}
    # deterministic positions: class i's members in a seeded order
    slots = [[names[w][int(j)] for j in rng.permutation(len(names[w]))] for w in wnids]
    used: set[str] = set()
    placed = _place(["cmyk", "png", "ycck", "grayscale", "grayscale"], slots,
                    lambda i: [1, 3, 2, 0, classes // 2][i], used)
    for kind, members in placed.items():
        quirks.setdefault(kind, []).extend(members)
        for m in members:
            kinds[m] = {"grayscale": "gray"}.get(kind, kind)
    train: dict[str, list[ImageTask]] = {}
    for wnid in wnids:
        keys = (_text, _number) if len(names[wnid]) >= 3 else (_text,)
        order = _unsorted(names[wnid], rng, keys)
        train[wnid] = [ImageTask(n, *sizes[n], kinds.get(n, "rgb")) for n in order]

    # val: exactly val_per_class per class, seeded label assignment, shuffled members
    rng = image_rng(seed, "val")
    nval = classes * val_per_class
    val_labels = [wnids[i] for i in rng.permutation(np.repeat(np.arange(classes), val_per_class))]
    val_names = [metadata.val_name(i) for i in range(1, nval + 1)]
    val_kinds: dict[str, str] = {}
    picks = [val_names[int(j)] for j in rng.permutation(nval)[:2]]
    for kind, name in zip(("cmyk", "grayscale"), picks, strict=False):
        quirks.setdefault(kind, []).append(name)
        val_kinds[name] = {"grayscale": "gray"}.get(kind, kind)
    val = [ImageTask(n, *wh, val_kinds.get(n, "rgb")) for n, wh in zip(
        _unsorted(val_names, rng, (_text,)), _image_sizes(rng, size, nval), strict=True)]
    blacklist = sorted(int(x) + 1 for x in rng.choice(
        nval, size=max(1, round(nval * BLACKLIST_FRACTION)) if nval else 0, replace=False))

    # test
    rng = image_rng(seed, "test")
    test_names = [f"ILSVRC2012_test_{i:08d}.JPEG" for i in range(1, test + 1)]
    gray_test = test_names[int(rng.integers(0, test))] if test else None
    if gray_test:
        quirks.setdefault("grayscale", []).append(gray_test)
    test_tasks = [ImageTask(n, *wh, "gray" if n == gray_test else "rgb") for n, wh in zip(
        _unsorted(test_names, rng, (_text,)), _image_sizes(rng, size, test), strict=True)]

    # train boxes: ~40 % of each class, at least one
    rng = image_rng(seed, "bbox_train")
    bbox_train: dict[str, list[tuple[str, _Annotation]]] = {}
    for wnid in wnids:
        members = sorted(names[wnid], key=_number)
        k = max(1, round(len(members) * BOX_FRACTION))
        chosen = [members[int(j)] for j in rng.permutation(len(members))[:k]]
        stems = [n[:-5] for n in chosen]
        anns = _annotations(rng, wnid, stems, [wnid] * k, [sizes[n] for n in chosen])
        bbox_train[wnid] = [(f"{wnid}/{stem}.xml", a) for stem, a in zip(stems, anns, strict=True)]
    box_kinds = [k for k in QUIRKS if k.startswith("bbox_")]
    if classes < 2:
        box_kinds.remove("bbox_other_wnid")
    box_slots = [[m for m, _ in bbox_train[w]] for w in wnids]
    placed = _place(box_kinds, box_slots, lambda i: i, set())
    missing = [k for k in box_kinds if k not in placed]
    everything = [m for s in box_slots for m in s]
    for i, kind in enumerate(missing):  # too few annotated files: quirks share files
        placed[kind] = [everything[i % len(everything)]]
    by_member = {m: (w, a) for w in wnids for m, a in bbox_train[w]}
    touched: set[int] = set()
    for kind in _BOX_QUIRK_ORDER:
        for member in placed.get(kind, ()):
            wnid, ann = by_member[member]
            _apply_box_quirk(kind, ann, wnid, [w for w in wnids if w != wnid], rng, touched)
    for kind in box_kinds:
        quirks[kind] = list(placed[kind])
    for wnid in wnids:
        bbox_train[wnid] = _unsorted(bbox_train[wnid], rng, (lambda e: e[0],))
    bbox_train_order = _unsorted(wnids, rng, (_text,))

    # val boxes: one file per image, first object = the image's label
    rng = image_rng(seed, "bbox_val")
    val_size = {t.name: (t.width, t.height) for t in val}
    stems = [n[:-5] for n in val_names]
    anns = _annotations(rng, "val", stems, val_labels, [val_size[n] for n in val_names])
    bbox_val = [(f"val/{stem}.xml", a) for stem, a in zip(stems, anns, strict=True)]
    bbox_val = _unsorted(bbox_val, rng, (lambda e: e[0],))

    quirks = {k: quirks[k] for k in QUIRKS if k in quirks}
    return _Plan(wnids, devkit_order, train_order, train, val_labels, val, test_tasks,
                 bbox_train, bbox_train_order, bbox_val, blacklist, quirks)


# ----------------------------------------------------------------------------- writing


class _HashingWriter(io.RawIOBase):
    """A write-only file that counts and MD5s what passes through to the real file."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.md5 = hashlib.md5()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.raw.write(view)
        self.md5.update(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size


def _member(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = MTIME
    info.uid, info.gid, info.uname, info.gname = UID, GID, UNAME, GNAME
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.size = 0
    else:
        info.mode = 0o644
    return info


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    tf.addfile(_member(name, len(data)), io.BytesIO(data))


def _add_dir(tf: tarfile.TarFile, name: str) -> None:
    tf.addfile(_member(name.rstrip("/") + "/", directory=True))


@contextmanager
def _archive(out: Path, name: str, record: dict[str, ArchiveFile]) -> Iterator[tarfile.TarFile]:
    """Write `name` as NAME.part, then rename; gzip (mtime 0, no file name) for .gz/.tgz."""
    final = out / name
    part = out / (name + ".part")
    try:
        with open(part, "wb") as raw:
            sink = _HashingWriter(raw)
            if name.endswith((".gz", ".tgz")):
                with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0) as gz:
                    with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tf:
                        yield tf
            else:
                with tarfile.open(fileobj=sink, mode="w", format=tarfile.GNU_FORMAT) as tf:
                    yield tf
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, final)
    record[name] = ArchiveFile(sink.size, sink.md5.hexdigest())


def _rendered(tasks: Iterable[ImageTask], seed: int, workers: int,
              batch: int) -> Iterator[bytes]:
    """Image bytes in task order; a bounded window of batches runs ahead in the pool."""
    batches: Iterator[list[ImageTask]] = _batched(tasks, batch)
    if workers <= 1:
        for b in batches:
            yield from render_batch(seed, b)
        return
    gc.freeze()  # forked workers then share the plan's pages instead of copying them
    pool = ProcessPoolExecutor(max_workers=workers, initializer=worker_init)
    pending: deque[Future[list[bytes]]] = deque()
    try:
        for b in batches:
            pending.append(pool.submit(render_batch, seed, b))
            if len(pending) >= workers * 4:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        gc.unfreeze()


def _batched(tasks: Iterable[ImageTask], n: int) -> Iterator[list[ImageTask]]:
    chunk: list[ImageTask] = []
    for t in tasks:
        chunk.append(t)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _xml(ann: _Annotation) -> bytes:
    """PASCAL VOC as the real files are laid out (tabs, no XML declaration)."""
    lines = [
        "<annotation>",
        f"\t<folder>{ann.folder}</folder>",
        f"\t<filename>{ann.filename}</filename>",
        "\t<source>",
        "\t\t<database>ILSVRC_2012</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{ann.size[0]}</width>",
        f"\t\t<height>{ann.size[1]}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in ann.objects:
        x0, y0, x1, y1 = obj.coords
        lines += [
            "\t<object>",
            f"\t\t<name>{obj.name}</name>",
            "\t\t<pose>Unspecified</pose>",
            "\t\t<truncated>0</truncated>",
            "\t\t<difficult>0</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0}</xmin>",
            f"\t\t\t<ymin>{y0}</ymin>",
            f"\t\t\t<xmax>{x1}</xmax>",
            f"\t\t\t<ymax>{y1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return ("\n".join(lines) + "\n").encode("ascii")


def _uint(value: int) -> np.ndarray:
    """A MATLAB-saved integer: the smallest unsigned type, as scipy reads the real file."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if value <= np.iinfo(dtype).max:
            return np.array(value, dtype=dtype)
    raise ValueError(f"{value} does not fit a MATLAB uint32")


# Internal nodes of the replica's hierarchy.  The root is the real meta.mat's ID 1001
# (`entity` is not among the fall-2011 synsets); groups are real synsets of that list.
_ROOT = ("n00001740", "entity")
_GROUP_WNIDS = ("n00021939", "n00015388", "n00017222", "n00021265", "n03183080",
                "n09287968")


def _meta_mat(plan: _Plan) -> bytes:
    """devkit data/meta.mat: N leaves in devkit order, then a root and a few groups."""
    n = len(plan.devkit_order)
    counts = {w: len(plan.train[w]) for w in plan.wnids}
    words = metadata.descriptions()
    every = metadata.imagenet_metadata()
    groups = [(w, every[w]) for w in _GROUP_WNIDS[: max(1, min(len(_GROUP_WNIDS), n // 3))]]
    # leaf ID i+1 goes to group i % len(groups); the root (ID n+1) holds the groups
    members: list[list[int]] = [[] for _ in groups]
    for i in range(n):
        members[i % len(groups)].append(i + 1)
    rows: list[tuple[int, str, str, str, list[int], int, int]] = []
    for i, wnid in enumerate(plan.devkit_order):
        rows.append((i + 1, wnid, words[wnid], f"replica gloss of {wnid}", [], 0, counts[wnid]))
    group_ids = list(range(n + 2, n + 2 + len(groups)))
    rows.append((n + 1, _ROOT[0], _ROOT[1], "that which is perceived or known or inferred",
                 group_ids, 2, sum(counts.values())))
    for gid, (gw, gwords), kids in zip(group_ids, groups, members, strict=True):
        total = sum(counts[plan.devkit_order[k - 1]] for k in kids)
        rows.append((gid, gw, gwords, f"replica gloss of {gw}", kids, 1, total))
    names = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
             "wordnet_height", "num_train_images"]
    synsets = np.empty((len(rows), 1), dtype=[(k, object) for k in names])
    for j, (ident, wnid, text, gloss, kids, height, ntrain) in enumerate(rows):
        kid_type = np.uint8 if max(kids, default=0) < 256 else np.uint16
        synsets[j, 0] = (
            _uint(ident), wnid, text, gloss, _uint(len(kids)),
            np.array(kids, dtype=kid_type).reshape(1, -1) if kids else np.zeros((0, 0), np.uint8),
            _uint(height), _uint(ntrain),
        )
    from scipy.io import savemat  # here, not at the top: every command imports this module

    buf = io.BytesIO()
    savemat(buf, {"synsets": synsets}, format="5", oned_as="row")
    # scipy writes the current time into the 116-byte text header; the real file's
    # fixed text keeps the devkit archive byte-identical from run to run
    data = buf.getvalue()
    return MAT_HEADER.ljust(116, b" ") + data[116:]


_README = """\
ILSVRC2012 development kit (imagenet-prep synthetic replica)
=============================================================

This is NOT the real devkit. It was written by `imagenet-prep fake` and follows
the layout of ILSVRC2012_devkit_t12.tar.gz:

  data/meta.mat                                 synsets struct array (ILSVRC2012_ID,
                                                WNID, words, gloss, num_children,
                                                children, wordnet_height,
                                                num_train_images); IDs 1..{n} are the
                                                replica's classes in devkit order
  data/ILSVRC2012_validation_ground_truth.txt   one ILSVRC2012_ID per validation
                                                image, ascending file-name order
  data/ILSVRC2012_validation_blacklist.txt      validation image numbers excluded
                                                from localisation scoring
"""


def _devkit_files(plan: _Plan) -> list[tuple[str, bytes | None]]:
    ids = {w: i + 1 for i, w in enumerate(plan.devkit_order)}
    gt = "".join(f"{ids[w]}\n" for w in plan.val_labels)
    black = "".join(f"{i}\n" for i in plan.blacklist)
    d = DEVKIT_DIR
    return [
        (f"{d}/", None),
        (f"{d}/readme.txt", _README.format(n=len(plan.wnids)).encode()),
        (f"{d}/data/", None),
        (f"{d}/data/meta.mat", _meta_mat(plan)),
        (f"{d}/data/ILSVRC2012_validation_ground_truth.txt", gt.encode()),
        (f"{d}/data/ILSVRC2012_validation_blacklist.txt", black.encode()),
    ]


def _check(classes: int, train_per_class: int, val_per_class: int, test: int,
           size: tuple[int, int], workers: int | None) -> None:
    if not 1 <= classes <= metadata.NUM_CLASSES:
        raise PrepError(f"--classes must be 1..{metadata.NUM_CLASSES}, not {classes}")
    if train_per_class < 1:
        raise PrepError(f"--train-per-class must be at least 1, not {train_per_class}")
    if val_per_class < 0 or test < 0:
        raise PrepError("--val-per-class and --test must not be negative")
    if classes * val_per_class > 99_999_999 or test > 99_999_999:
        raise PrepError("too many validation or test images for 8-digit names")
    if len(size) != 2 or min(size) < 2:
        raise PrepError(f"--size must be at least 2x2, not {size}")
    if workers is not None and workers < 1:
        raise PrepError(f"--workers must be at least 1, not {workers}")


def make_replica(
    out: str | os.PathLike[str],
    *,
    classes: int = DEFAULT_CLASSES,
    train_per_class: int = DEFAULT_TRAIN_PER_CLASS,
    val_per_class: int = DEFAULT_VAL_PER_CLASS,
    test: int = DEFAULT_TEST,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    workers: int | None = None,
    wnids: Sequence[str] | None = None,
    train_files: Collection[str] = (),
) -> ReplicaInfo:
    """Write the six archives, MD5SUMS, SIZES and replica.json into `out`.

    The output depends only on the parameters other than `workers`.  Existing
    files of the same names are replaced.  `wnids` picks the classes (instead of the
    first `classes`); `train_files` adds those training file names of the replica's
    classes to the generated ones, so a subset list's files exist (the defaults leave
    the replica as it always was).
    """
    if wnids:
        classes = len(set(wnids))
        unknown = [w for w in wnids if w not in metadata.wnid_to_index()]
        if unknown:
            raise PrepError(f"--wnids: {unknown[0]} is not an ILSVRC2012 class")
    if train_files:
        keep = set(wnids) if wnids else set(metadata.wnids()[:classes])
        train_files = [n for n in train_files if n.split("_", 1)[0] in keep]
    start = time.monotonic()
    size = (int(size[0]), int(size[1]))
    _check(classes, train_per_class, val_per_class, test, size, workers)
    workers = workers or default_workers()
    outdir = ensure_dir(Path(out))
    check_writable(outdir)  # an unwritable --out is one line, before any image is made
    plan = _plan(classes, train_per_class, val_per_class, test, size, seed, wnids, train_files)
    record: dict[str, ArchiveFile] = {}

    tasks = itertools.chain(*(plan.train[w] for w in plan.train_order), plan.val, plan.test)
    total = sum(len(v) for v in plan.train.values()) + len(plan.val) + len(plan.test)
    batch = int(np.clip(2_000_000 // (size[0] * size[1]), 8, 256))
    progress = bar(total, "fake")
    with closing(_rendered(tasks, seed, workers, batch)) as images, progress:
        with _archive(outdir, TRAIN, record) as outer:
            for wnid in plan.train_order:
                with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=outdir) as spool:
                    with tarfile.open(fileobj=spool, mode="w",
                                      format=tarfile.GNU_FORMAT) as inner:
                        for task in plan.train[wnid]:
                            _add_bytes(inner, task.name, next(images))
                            progress.update()
                    length = spool.tell()
                    spool.seek(0)
                    outer.addfile(_member(f"{wnid}.tar", length), spool)
        for name, members in ((VAL, plan.val), (TEST, plan.test)):
            with _archive(outdir, name, record) as tf:
                for task in members:
                    _add_bytes(tf, task.name, next(images))
                    progress.update()

    with _archive(outdir, BBOX_TRAIN, record) as tf:
        for wnid in plan.bbox_train_order:
            _add_dir(tf, wnid)
            for member, ann in plan.bbox_train[wnid]:
                _add_bytes(tf, member, _xml(ann))
    with _archive(outdir, BBOX_VAL, record) as tf:
        _add_dir(tf, "val")
        for member, ann in plan.bbox_val:
            _add_bytes(tf, member, _xml(ann))
    with _archive(outdir, DEVKIT, record) as tf:
        for name, data in _devkit_files(plan):
            if data is None:
                _add_dir(tf, name)
            else:
                _add_bytes(tf, name, data)

    params = dict(classes=classes, train_per_class=train_per_class,
                  val_per_class=val_per_class, test=test, size=list(size), seed=seed)
    if wnids:
        params["wnids"] = sorted(set(wnids))
    if train_files:
        params["train_files"] = len(train_files)
    info = ReplicaInfo(
        out=outdir,
        params=params,
        wnids=tuple(plan.wnids),
        devkit_order=tuple(plan.devkit_order),
        train_counts={w: len(plan.train[w]) for w in plan.wnids},
        val_labels=tuple(plan.val_labels),
        test_images=len(plan.test),
        bbox_train_files=sum(len(v) for v in plan.bbox_train.values()),
        bbox_val_files=len(plan.bbox_val),
        quirks={k: tuple(v) for k, v in plan.quirks.items()},
        archives={name: record[name] for name in ARCHIVES},
        seconds=time.monotonic() - start,
    )
    _write_text(outdir / MD5SUMS, "".join(f"{record[n].md5}  {n}\n" for n in ARCHIVES))
    _write_text(outdir / SIZES, "".join(f"{record[n].size}  {n}\n" for n in ARCHIVES))
    _write_text(outdir / REPLICA_JSON, json.dumps(_summary(info), indent=1) + "\n")
    return info


def _summary(info: ReplicaInfo) -> dict[str, Any]:
    """replica.json: small, deterministic (no timings), no per-image lists."""
    return {
        "format": 1,
        "params": info.params,
        "wnids": list(info.wnids),
        "devkit_order": list(info.devkit_order),
        "counts": {
            "train": info.train_images, "val": info.val_images, "test": info.test_images,
            "bbox_train": info.bbox_train_files, "bbox_val": info.bbox_val_files,
        },
        "train_per_class": info.train_counts,
        "archives": {n: {"size": a.size, "md5": a.md5} for n, a in info.archives.items()},
        "quirks": {k: list(v) for k, v in info.quirks.items()},
        "quirk_meaning": {k: QUIRKS[k] for k in info.quirks},
    }


def _write_text(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="ascii")
    os.replace(part, path)
