"""A resized variant's folder and its claim: one set of options and library versions.

A variant (`DATASET/variants/short256/`) is a dataset of its own, with the layout of
the original, whose images are resized (formats/resize.py).  Its bytes depend on the
options and on the versions of Pillow, libjpeg and libwebp, so the first run writes
both into VARIANT/.imagenet-prep/variant.json and every later run that would write
into the folder must match them: a variant never mixes images of two encoders.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_prep.errors import BadImageError, PrepError
from imagenet_prep.formats.resize import ResizeSpec, versions
from imagenet_prep.layout import STATE_DIR, VARIANT_RECORD, VARIANTS_DIR, variant_folder
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.storage import as_path, listdir


def folder_of(dataset: Path, spec: ResizeSpec | None) -> Path:
    """Where outputs go: DATASET itself without resizing, else DATASET/variants/<tag>."""
    root = as_path(dataset)  # a bucket prefix stays one
    return root if spec is None else root / variant_folder(spec.tag)


def claim(root: Path, spec: ResizeSpec | None) -> dict[str, Any] | None:
    """Record (first run) or match (later runs) the variant `root` is; returns its record.

    A folder recorded as a variant refuses a run without resizing, other options or
    other library versions, in one line saying how to start over.
    """
    rec = stage_state.load(root, VARIANT_RECORD)
    if spec is None:
        if rec is not None:
            raise PrepError(f"{root}: holds the resized variant {rec['resize']} "
                            f"q{rec['quality']} {rec['image_format']}; rerun with those "
                            "--resize, --quality and --image-format options")
        return None
    want = {**spec.as_dict(), "versions": versions()}
    if rec is None:
        stage_state.save(root, VARIANT_RECORD, want)
        _note_asked(root, spec)
        return want
    old = {k: rec.get(k) for k in spec.as_dict()}
    old["full_decode"] = bool(old["full_decode"])  # absent: a fast-path variant, as check reads it
    if old != spec.as_dict():
        raise PrepError(
            f"{root}: holds the variant {old['resize']} q{old['quality']} "
            f"{old['image_format']}{' full-decode' if old.get('full_decode') else ''}, not "
            f"{spec.text}; choose another folder, or delete "
            f"{root} to start over")
    if rec.get("versions") != want["versions"]:
        was = _libs(rec.get("versions") or {})
        raise PrepError(
            f"{root}: written with {was}, this run has {_libs(want['versions'])}; outputs "
            f"would mix: delete {root} to start over, or run with the recorded versions")
    _note_asked(root, spec)
    return rec


def _asked_record(tag: str) -> str:
    return f"{VARIANT_RECORD}-{tag}"  # DATASET/.imagenet-prep/variant-short256.json


def _note_asked(root: Path, spec: ResizeSpec) -> None:
    """DATASET keeps a record of each variant it was asked to hold, so that `check DATASET`
    finds a variant that is gone (its folder or its record deleted) instead of saying OK."""
    if root.name != spec.tag or root.parent.name != VARIANTS_DIR:
        return  # a folder given by hand (`wds --out`): no dataset above it to tell
    dataset, name = root.parent.parent, _asked_record(spec.tag)
    if stage_state.load(dataset, name) != spec.as_dict():
        stage_state.save(dataset, name, spec.as_dict())


def missing_variants(dataset: Path) -> list[str]:
    """Problems: the variants DATASET was asked to hold whose record is not there."""
    folder = as_path(dataset) / STATE_DIR
    problems = []
    prefix, suffix = _asked_record(""), ".json"
    for entry in sorted(listdir(folder)) if folder.is_dir() else ():
        if not (entry.startswith(prefix) and entry.endswith(suffix)):
            continue
        tag = entry[len(prefix):-len(suffix)]
        root = as_path(dataset) / variant_folder(tag)
        asked = stage_state.load(dataset, _asked_record(tag)) or {}
        if stage_state.load(root, VARIANT_RECORD) is None:
            flags = (f"--resize {asked.get('resize')} --quality {asked.get('quality')} "
                     f"--image-format {asked.get('image_format')}"
                     + (" --full-decode" if asked.get("full_decode") else ""))
            problems.append(
                f"{root}: this dataset was asked to hold that variant and it is not there "
                f"(no {VARIANT_RECORD}.json); rerun prepare with {flags} to write it again, "
                f"or delete {stage_state.record_path(dataset, _asked_record(tag))} if it is "
                "no longer wanted")
    return problems


def record(root: Path) -> dict[str, Any] | None:
    """The variant record of `root` (None: not a variant)."""
    return stage_state.load(root, VARIANT_RECORD)


def add_quality(root: Path, quality: dict[str, Any]) -> None:
    """Keep the sample quality check (fast path against reference) with the variant."""
    rec = stage_state.load(root, VARIANT_RECORD)
    if rec is not None and rec.get("quality_sample") != quality:
        stage_state.save(root, VARIANT_RECORD, {**rec, "quality_sample": quality})


def _libs(v: dict[str, Any]) -> str:
    return (f"Pillow {v.get('pillow')} (libjpeg {v.get('libjpeg')}, "
            f"libjpeg-turbo {v.get('libjpeg_turbo')}, libwebp {v.get('libwebp')}), "
            f"simplejpeg {v.get('simplejpeg')}")


SAMPLE = 48  # images in the quality sample: enough for a mean, about half a second


def quality_sample(archives: Path, spec: ResizeSpec, count: int = SAMPLE
                   ) -> dict[str, Any] | None:
    """PSNR of the fast path against the reference path (full decode, same filter, same
    size) on `count` validation images spread evenly over the archive (train when there is
    no validation archive); None without either archive.

    Images that keep their size are not resampled and do not count; `reduced` is how
    many of the resampled ones took the reduced JPEG decode (the rest match exactly).
    """
    from imagenet_prep.formats.resize import fast_vs_reference
    from imagenet_prep.sources.archives import find_archive
    from imagenet_prep.sources.catalog import flat_from_archive, train_from_archive

    val, train = find_archive(archives, "val"), find_archive(archives, "train")
    if val is None and train is None:
        return None
    cat = flat_from_archive("val", val, None) if val is not None else train_from_archive(train)
    picks = np.unique(np.linspace(0, len(cat) - 1, min(count, len(cat))).astype(np.int64))
    sub = cat.subset(picks)
    values: list[float] = []
    with sub.open() as src:
        for i in range(len(sub)):
            try:
                p = fast_vs_reference(src.read(i), str(sub.names[i]), spec)
            except BadImageError:
                continue
            if p is not None:
                values.append(p)
    finite = [v for v in values if math.isfinite(v)]
    return {
        "images": len(sub), "resampled": len(values), "reduced": len(finite),
        "mean_psnr_db": round(sum(finite) / len(finite), 2) if finite else None,
        "min_psnr_db": round(min(finite), 2) if finite else None,
    }


def note_quality(root: Path, archives: Path | None, spec: ResizeSpec | None
                 ) -> dict[str, Any] | None:
    """The variant's quality sample, measured once (when first written) and kept with it."""
    if spec is None or archives is None:
        return None
    rec = stage_state.load(root, VARIANT_RECORD) or {}
    if "quality_sample" in rec:
        return rec["quality_sample"]
    quality = quality_sample(archives, spec)
    if quality is not None:
        add_quality(root, quality)
    return quality


def quality_line(quality: dict[str, Any] | None) -> str:
    """The quality sample in one line, for summaries."""
    if not quality:
        return "quality sample: none (no image archive)"
    if not quality["reduced"]:
        return (f"quality sample: {quality['resampled']} of {quality['images']} images "
                "resampled, none by a reduced decode (identical to the full-decode path)")
    return (f"quality sample: fast path vs full decode, mean PSNR {quality['mean_psnr_db']} dB "
            f"(min {quality['min_psnr_db']}) over {quality['reduced']} images decoded reduced "
            f"of {quality['images']}")


def with_summary(report: dict[str, Any], root: Path, archives: Path | None,
                 spec: ResizeSpec | None) -> dict[str, Any]:
    """A shard run's report, with the variant it wrote (options, versions, quality sample)
    when resizing; saved reports stay as they are."""
    if spec is None:
        return report
    note_quality(root, archives, spec)
    return {**report, "variant": {"tag": spec.tag, **(record(root) or {})}}


def variant_lines(rec: dict[str, Any]) -> list[str]:
    """What a summary says of a variant: options, libraries, quality sample."""
    full = " full-decode" if rec.get("full_decode") else ""
    return [f"variant {rec.get('tag', '')}: {rec['resize']} q{rec['quality']} "
            f"{rec['image_format']}{full}, {_libs(rec.get('versions') or {})}",
            "  " + quality_line(rec.get("quality_sample"))]


def variant_roots(dataset: Path) -> list[Path]:
    """The resized variants under DATASET/variants/ (folders with a variant record)."""
    base = as_path(dataset) / VARIANTS_DIR
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir()
                  if p.is_dir() and stage_state.record_path(p, VARIANT_RECORD).is_file())
