"""Build the report: pick each split's source, gather, thumbnail, render, write atomically.

Each split is read from its class folders when they exist, else from its TFRecord
shards, so a TensorFlow-only dataset gets the same page.  What is read is bounded
whatever the dataset size: the records, a seeded sample of image headers, the
contact sheet's classes x K images and at most MAX_SPECIALS converted files.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from imagenet_prep import __version__
from imagenet_prep.errors import BadImageError, LabelError, PrepError
from imagenet_prep.layout import REPORT_HTML, SYNSETS_TXT, TFRECORD, VAL_BOX_DIR
from imagenet_prep.report import gather
from imagenet_prep.report.folders import FolderSplit
from imagenet_prep.report.html import GENERATOR, render
from imagenet_prep.report.model import ContactClass, Report, Row, Special, SplitView, Thumb
from imagenet_prep.report.shards import ShardSplit, shard_files
from imagenet_prep.report.thumbs import data_uri, facts, thumbnail
from imagenet_prep.runtime import subset_record
from imagenet_prep.runtime.files import write_atomic
from imagenet_prep.runtime.storage import RemotePath, as_path
from imagenet_prep.runtime.variant import variant_roots
from imagenet_prep.sources import metadata
from imagenet_prep.sources.class_tree import has_class_folders
from imagenet_prep.sources.labels import bbox_labels

REPORT_NAME = REPORT_HTML
MAX_SPECIALS = 100
VAL_CMYK = "ILSVRC2012_val_00019877.JPEG"  # docs/quirks.md: not in TensorFlow's list


def default_path(dataset: Path) -> Path:
    return as_path(dataset) / REPORT_NAME


def check_target(path: Path) -> None:
    """Refuse to replace a file at `path` that an earlier report did not write."""
    try:
        if isinstance(path, RemotePath):
            head = path.read_bytes(0, 1024) if path.is_file() else None
        else:
            with open(path, "rb") as f:
                head = f.read(1024)
    except FileNotFoundError:
        return
    except OSError as e:
        raise PrepError(f"{path}: cannot read: {e.strerror}") from None
    if head is None:  # no such object
        return
    if GENERATOR.encode() not in head:
        raise PrepError(f"{path}: exists and was not written by imagenet-prep; move it away "
                        "or choose another --out")


def _thumb(section: str, split: str, wnid: str | None, name: str, data: bytes,
           box: str | None = None) -> Thumb:
    try:
        uri = data_uri(thumbnail(data, f"{split}/{wnid}/{name}"))
    except BadImageError as e:
        return Thumb(section, split, wnid, name, None, box, str(e))
    return Thumb(section, split, wnid, name, uri, box)


def _box_wnid(dataset: Path, name: str) -> str | None:
    """The class the validation image's box XML names (DATASET/bbox_val/val/), if present."""
    folder = dataset / VAL_BOX_DIR
    if not folder.is_dir():
        return None
    try:
        return bbox_labels([name], folder=folder, archive=None)[0]
    except LabelError:
        return None


def _descriptions(dataset: Path) -> dict[str, str]:
    """WNID -> words: DATASET/synsets.txt (the devkit's words) over the bundled ones."""
    out = dict(metadata.descriptions())
    path = dataset / SYNSETS_TXT
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            wnid, _, words = line.partition(" ")
            if words:
                out[wnid] = words
    return out


def _sources(dataset: Path, sample: int, seed: int, recorded: list[gather.Recorded] | None,
             workers: int | None, precheck: bool) -> dict[str, FolderSplit | ShardSplit]:
    out: dict[str, FolderSplit | ShardSplit] = {}
    for split in ("train", "val"):
        if not isinstance(dataset, RemotePath) and has_class_folders(dataset / split):
            out[split] = FolderSplit(dataset, split)
        elif shard_files(dataset, split):
            names = [(r.shard, r.name) for r in recorded or ()
                     if r.split == split and r.reason != "skipped"][:MAX_SPECIALS]
            out[split] = ShardSplit(dataset, split, sample=sample, seed=seed, names=names,
                                    workers=workers, precheck=precheck)
    if not out:
        shards = ", ".join(f"{lay.folder}/" for lay in TFRECORD.values())
        variants = [str(v) for v in variant_roots(dataset)]  # each has its own report
        hint = f"; report each variant: {', '.join(variants)}" if variants else ""
        raise PrepError(f"{dataset}: nothing to report on: no class folders (train/WNID/, "
                        f"val/WNID/) and no TFRecord shards ({shards}){hint}")
    return out


def _specials(dataset: Path, recorded: list[gather.Recorded] | None,
              sources: dict[str, FolderSplit | ShardSplit], views: dict[str, SplitView],
              odd: dict[str, list[tuple[str, str, str, bytes]]]) -> tuple[list[Special], int, str]:
    """(files shown, how many there are, how they were found)."""
    if recorded is not None:
        shown = recorded[:MAX_SPECIALS]
        found = {split: src.find(r.name for r in shown if r.split == split)
                 for split, src in sources.items()}
        out = []
        for r in shown:
            hit = found.get(r.split, {}).get(r.name)
            thumb = _thumb("converted", r.split, hit[0], r.name, hit[1]) if hit else None
            out.append(Special(r.split, r.name, r.reason, "tfrecord", thumb, r.error))
        basis = ("Every image was examined by the TFRecord run: the files whose content is not "
                 "a baseline RGB or grayscale JPEG were converted to RGB JPEG, unreadable ones "
                 "left out (from its record).")
        return out, len(recorded), basis
    hits: dict[tuple[str, str], Special] = {}
    for split, src in sources.items():
        known = [n for n in metadata.special_images() if split == "train"]
        known += [VAL_CMYK] if split == "val" else []
        for name, (wnid, data) in src.find(known).items():
            try:
                reason = facts(data, name).reason
            except BadImageError as e:
                hits[split, name] = Special(split, name, "unreadable", "content", None, str(e))
                continue
            if reason:
                hits[split, name] = Special(split, name, reason, "content",
                                            _thumb("converted", split, wnid, name, data))
        for wnid, name, reason, data in odd.get(split, []):
            hits[split, name] = Special(split, name, reason, "content", _thumb(
                "converted", split, wnid, name, data) if data else None)
        for name, err in views[split].sample.unreadable:
            hits[split, name] = Special(split, name, "unreadable", "content", None, err)
    out = sorted(hits.values(), key=lambda s: (s.split != "train", s.name))
    basis = ("No TFRecord run is recorded, so these were found by content among the "
             f"{len(metadata.special_images()) + 1} known special files of ILSVRC2012 and the "
             "sampled images; `imagenet-prep tfrecord` examines every image.")
    return out[:MAX_SPECIALS], len(out), basis


def build_report(
    dataset: Path, out: Path | None = None, *, classes: int = 24, per_class: int = 8,
    seed: int = 0, sample: int = 5000, check: bool = True, workers: int | None = None,
) -> dict[str, Any]:
    """Write the report page; returns a summary (path, size, seconds, what it shows)."""
    t0 = time.monotonic()
    dataset = as_path(dataset)  # a bucket prefix stays one
    if not dataset.is_dir():
        raise PrepError(f"{dataset}: not a folder")
    if classes < 0 or per_class < 0 or sample < 0:
        raise PrepError("--classes, --per-class and --sample must not be negative")
    out = as_path(out) if out is not None else default_path(dataset)
    check_target(out)
    recorded = gather.tfrecord_specials(dataset)
    # a bucket's shards are downloaded once: the scan also does check's read of them
    sources = _sources(dataset, sample, seed, recorded, workers,
                       precheck=check and isinstance(dataset, RemotePath))
    views: dict[str, SplitView] = {}
    odd: dict[str, list] = {}
    for split, src in sources.items():
        counts, counts_from = src.counts()
        smp, odd[split] = src.sample(counts, sample, seed)
        views[split] = SplitView(split, src.source, counts, counts_from, smp, {},
                                 problems=getattr(src, "problems", []))  # grows as read

    known = metadata.wnid_to_index()
    pool = sorted({w for v in views.values() for w in v.counts if w in known})
    chosen = sorted(random.Random(seed).sample(pool, min(classes, len(pool))))
    words = _descriptions(dataset)
    contact = []
    for wnid in chosen:
        rows: dict[str, list[Thumb]] = {}
        for split, src in sources.items():
            rows[split] = [
                _thumb("contact", split, wnid, name, data,
                       _box_wnid(dataset, name) if split == "val" else None)
                for name, data in src.pick(wnid, per_class, seed)]
        contact.append(ContactClass(
            wnid, words.get(wnid, ""), {s: v.counts.get(wnid, 0) for s, v in views.items()},
            rows.get("train", []), rows.get("val", [])))

    specials, total, basis = _specials(dataset, recorded, sources, views, odd)
    prechecked = {k: v for src in sources.values() if isinstance(src, ShardSplit)
                  for k, v in src.prechecked.items()}
    checked = gather.run_check(dataset, prechecked) if check else None
    report = Report(
        dataset=str(dataset), version=__version__,
        rows=gather.summary_rows(dataset, views) + subset_rows(dataset),
        timings=gather.timings(dataset), check=checked, views=views, specials=specials,
        specials_total=total, specials_basis=basis, contact=contact, seed=seed,
        problems=[p for v in views.values() for p in v.problems])
    page = render(report).encode()
    write_atomic(out, page, fsync=False)
    thumbs = sum(len(c.train) + len(c.val) for c in contact) + sum(1 for s in specials if s.thumb)
    return {
        "path": str(out), "bytes": len(page), "seconds": round(time.monotonic() - t0, 3),
        "sources": {s: v.source for s, v in views.items()},
        "images": {s: v.images for s, v in views.items()},
        "sampled": {s: [v.sample.count, v.sample.total] for s, v in views.items()},
        "classes_shown": chosen, "thumbnails": thumbs, "converted": total,
        "check": None if checked is None else checked["ok"],
    }


def subset_rows(dataset: Path) -> list[Row]:
    """The summary's subset line: which classes and training images the dataset holds."""
    subset = subset_record.recorded(dataset)
    if subset is None or subset.full:
        return []
    train = None if subset.train_files is None else len(subset.train_files)
    return [Row("subset", "subset", train, len(subset.classes),
                detail=f"{subset.describe()} (labels.json, labels.csv)")]
