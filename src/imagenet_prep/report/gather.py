"""The dataset's facts from the records its stages saved, so nothing large is re-listed.

Every stage writes a small JSON record in DATASET/.imagenet-prep when it finishes
(extract-SPLIT, valtree, bbox, tfrecord, prepare); the summary table, timings and
the list of converted files come from those, and `check` is run as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagenet_prep.layout import (
    BBOX_RECORD,
    FLAT_DIR,
    PREPARE_RECORD,
    SYNSETS_TXT,
    TFRECORD,
    TFRECORD_RECORD,
    TFRECORD_REPORT,
    WDS_DIR,
    WDS_RECORD,
    extract_record,
)
from imagenet_prep.report.hf import hf_rows
from imagenet_prep.report.loaders import loader_rows
from imagenet_prep.report.model import Row, SplitView
from imagenet_prep.report.shards import shard_files
from imagenet_prep.runtime import stage_state, variant
from imagenet_prep.runtime.storage import relpath
from imagenet_prep.runtime.variant import variant_roots

if TYPE_CHECKING:
    from imagenet_prep.check.tfrecord import RecordsPass


@dataclass(frozen=True)
class Recorded:
    """A file the TFRecord run converted to RGB JPEG or left out, and the shard it went to."""

    split: str
    shard: str
    name: str
    reason: str  # cmyk, ycck, png, ... or "skipped"
    error: str | None = None


def tfrecord_specials(dataset: Path) -> list[Recorded] | None:
    """Converted and left-out files from the TFRecord state (every shard of every run),
    sorted; None when no TFRecord run is recorded."""
    state = stage_state.load(dataset, TFRECORD_RECORD)
    if state is None:
        return None
    out = []
    for shard, e in sorted(state.get("shards", {}).items()):
        out += [Recorded(e["split"], shard, n, r) for n, r in e.get("converted", [])]
        out += [Recorded(e["split"], shard, n, "skipped", err) for n, err in e.get("skipped", [])]
    return sorted(out, key=lambda r: (r.split != "train", r.name))


def _row_for_split(dataset: Path, split: str, view: SplitView | None) -> Row | None:
    rec = stage_state.load(dataset, extract_record(split))
    recorded_bytes = rec["bytes"] if rec else None
    if view is not None:
        detail = f"from {view.source}; counts from {view.counts_from}"
        return Row(split, f"{split} images", view.images, len(view.counts),
                   recorded_bytes if view.source == "folders" else None, detail)
    if rec is None:
        return None
    if split == "val":
        return Row(split, "val images", rec["files"], None, recorded_bytes,
                   "flat in val/ (valtree not run: no class folders)")
    return Row(split, f"{split} images", rec["files"], len(rec["classes"]) or None,
               recorded_bytes, f"record {extract_record(split)}.json")


def summary_rows(dataset: Path, views: dict[str, SplitView]) -> list[Row]:
    """One row per thing the dataset holds, in the order a user reads them."""
    rows = [r for s in ("train", "val") if (r := _row_for_split(dataset, s, views.get(s)))]
    for split, what in (("test", "test images"), ("bbox_train", "train box XMLs"),
                        ("bbox_val", "val box XMLs")):
        if rec := stage_state.load(dataset, extract_record(split)):
            rows.append(Row(split, what, rec["files"], None, rec["bytes"],
                            f"record {extract_record(split)}.json"))
    synsets = dataset / SYNSETS_TXT
    if synsets.is_file():
        n = len(synsets.read_text().splitlines())
        rows.append(Row("synsets", SYNSETS_TXT, n, n, synsets.stat().st_size, "lines (classes)"))
    if rec := stage_state.load(dataset, BBOX_RECORD):
        rows.append(Row("bbox_csv", "box CSV rows", rec["boxes_written"], None, rec["bytes"],
                        f"boxes of {rec['images']:,} images; {rec['files_skipped']:,} XMLs and "
                        f"{rec['boxes_skipped']:,} boxes outside the 1000 classes"))
    for flat in FLAT_DIR.values():
        if (dataset / flat).is_dir():
            rows.append(Row(flat, f"{flat}/", None, None, None,
                            "present (links to the class folders; see check)"))
    state = stage_state.load(dataset, TFRECORD_RECORD) or {}
    for split, lay in TFRECORD.items():
        shards = shard_files(dataset, split)
        if not shards:
            continue
        entries = [state.get("shards", {}).get(p.name) for p in shards]
        recorded = sum(e["records"] for e in entries if e) if all(entries) else None
        size = sum(p.stat().st_size for p in shards)
        opts = state.get("options", {})
        detail = f"{len(shards):,} shards in {lay.folder}/"
        if opts:
            detail += f" (seed {opts.get('seed')})"
        rows.append(Row(lay.folder, f"{split} TFRecords", recorded, None, size, detail))
    return rows + hf_rows(dataset) + loader_rows(dataset) + variant_rows(dataset)


def variant_rows(dataset: Path) -> list[Row]:
    """One row per resized variant under DATASET/variants/ (docs/resize.md), or for DATASET
    when it is one: its images and stored bytes from its records, its options and quality
    sample."""
    rows = []
    itself = [dataset] if variant.record(dataset) else []  # the report of a variant itself
    for root in itself + variant_roots(dataset):
        rec = variant.record(root) or {}
        made, images, size = [], None, 0
        extracted = [r for s in ("train", "val") if (r := stage_state.load(root,
                                                                          extract_record(s)))]
        if extracted:
            made.append("class trees")
            images = sum(r["files"] for r in extracted)
            size += sum(r.get("stored_bytes", 0) for r in extracted)
        for name, record, unit in (("TFRecords", TFRECORD_RECORD, "records"),
                                   ("WebDataset", WDS_RECORD, "samples")):
            for where in (root, root / WDS_DIR):
                state = stage_state.load(where, record) if where.is_dir() else None
                if state and state.get("shards"):
                    made.append(name)
                    entries = state["shards"].values()
                    images = images or sum(e[unit] for e in entries)
                    size += sum(e["bytes"] for e in entries)
                    break
        quality = rec.get("quality_sample") or {}
        psnr = (f"; fast path vs full decode {quality['mean_psnr_db']} dB mean PSNR"
                if quality.get("mean_psnr_db") is not None else "")
        rows.append(Row(f"variant_{root.name}", f"variant {root.name}", images, None,
                        size or None,
                        f"{rec.get('resize')} q{rec.get('quality')} {rec.get('image_format')}: "
                        f"{', '.join(made) or 'nothing finished yet'}{psnr}; "
                        f"{relpath(root, dataset)}/"))
    return rows


def timings(dataset: Path) -> dict[str, Any] | None:
    """Stage timings of the recorded `prepare` runs, and the TFRecord run's throughput."""
    prep = stage_state.load(dataset, PREPARE_RECORD)
    tf = stage_state.load(dataset, TFRECORD_REPORT)
    if prep is None and tf is None:
        return None
    out: dict[str, Any] = {}
    if prep is not None:
        out["prepare"] = prep.get("runs", [])
    if tf is not None and "run" in tf:
        out["tfrecord"] = tf["run"]
    return out


def run_check(dataset: Path, prechecked: Mapping[str, RecordsPass] | None = None
              ) -> dict[str, Any]:
    """What `imagenet-prep check` says (it reads every TFRecord, at full scale minutes,
    but for the shards in `prechecked`, which the report's scan already read whole)."""
    from imagenet_prep.check import check_dataset

    problems, checked = check_dataset(dataset, prechecked=prechecked)
    return {"ok": not problems, "problems": problems,
            "skipped": checked.get("skipped_images", []),
            "checked": sorted(k for k, v in checked.items() if v is True)}
