"""Check WebDataset shards: tar structure, sample members, labels, metadata, bytes, indexes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from imagenet_prep.check.shard_bytes import shard_bytes_problems
from imagenet_prep.check.timm_info import check_timm_info
from imagenet_prep.errors import PrepError
from imagenet_prep.formats.images import stored_image_problems
from imagenet_prep.formats.resize import from_text
from imagenet_prep.formats.webdataset import INDEX_KIND, iter_samples, sample_key, wids_index
from imagenet_prep.layout import (
    WDS_PREFIX,
    WDS_RECORD,
    WDS_SHARD_RE,
    wds_index_name,
    wds_shard_name,
)
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.files import is_tmp_name
from imagenet_prep.runtime.pool import run_tasks
from imagenet_prep.runtime.storage import as_path, listdir, local_file
from imagenet_prep.sources import metadata

_FORMATS = {"jpg": ("JPEG", "MPO"), "webp": ("WEBP",)}


@dataclass(frozen=True)
class _CheckTask:
    path: Path
    split: str
    entry: dict | None  # the state's record of this shard
    decode_first: bool
    classes: tuple[str, ...] | None = None  # what labels 0..N-1 name (a subset's), else all
    image_ext: str = "jpg"  # webp in a WebP variant (formats/resize.py)


def _check_shard(task: _CheckTask) -> tuple[str, int, list[str]]:
    """(name, samples, problems) of one shard: tar structure, sample members, labels, metadata,
    the state's size and CRC32C, and optionally the first image decoded.  An object in a
    bucket is read once into a local temporary copy (the tar is read by header offsets)."""
    try:
        with local_file(task.path) as local:
            return _check_local_shard(task, local)
    except FileNotFoundError:
        return task.path.name, 0, [f"{task.path}: missing"]


def _check_local_shard(task: _CheckTask, local: Path) -> tuple[str, int, list[str]]:
    problems: list[str] = []
    wnids = task.classes or metadata.wnids()
    img = task.image_ext
    want_exts = ("json", img) if task.split == "test" else ("cls", "json", img)
    samples = 0
    try:  # streamed: a shard of any size costs one sample's members at a time
        with open(local, "rb") as f:
            fd = f.fileno()
            for key, group in iter_samples(local, str(task.path)):
                where = f"{task.path}: sample {samples} ({key})"
                samples += 1
                exts = {ext: m for ext, m in group}
                if sorted(exts) != sorted(want_exts) or len(group) != len(want_exts):
                    problems.append(f"{where}: members {sorted(e for e, _ in group)}, expected "
                                    f"{sorted(want_exts)}")
                    continue
                try:
                    meta = json.loads(os.pread(fd, exts["json"].size, exts["json"].offset))
                    label, wnid = meta["label"], meta["wnid"]
                    width, height, filename = meta["width"], meta["height"], meta["filename"]
                except (ValueError, KeyError, TypeError) as e:
                    problems.append(f"{where}: unreadable .json ({e})")
                    continue
                if sample_key(filename, where) != key:
                    problems.append(f"{where}: .json names {filename!r}")
                if task.split == "test":
                    if label is not None or wnid is not None:
                        problems.append(f"{where}: a test sample with a label")
                else:
                    cls = os.pread(fd, exts["cls"].size, exts["cls"].offset)
                    index = meta.get("imagenet_label")
                    if not isinstance(label, int) or not 0 <= label < len(wnids):
                        problems.append(f"{where}: label {label!r} outside "
                                        f"0..{len(wnids) - 1}")
                    elif cls != str(label).encode():
                        problems.append(f"{where}: .cls {cls!r} but .json label {label}")
                    elif wnids[label] != wnid:
                        problems.append(f"{where}: label {label} but WNID {wnid}")
                    elif index is not None and (not isinstance(index, int) or not 0 <= index
                                                < 1000 or metadata.wnids()[index] != wnid):
                        problems.append(f"{where}: imagenet_label {index!r} but WNID {wnid}")
                if not (isinstance(width, int) and isinstance(height, int)) or width <= 0 \
                        or height <= 0:
                    problems.append(f"{where}: size {width}x{height}")
                elif task.decode_first and samples == 1:
                    jpg = exts[img]
                    image = os.pread(fd, jpg.size, jpg.offset)
                    problems += stored_image_problems(where, image, width, height, ".json",
                                                      formats=_FORMATS[img])
    except PrepError as e:  # not a well-formed tar of samples: that alone is said
        return task.path.name, 0, [str(e)]
    if task.entry is not None:
        problems += shard_bytes_problems(task.path, task.entry, local)
    return task.path.name, samples, problems


def _check_index(folder: Path, split: str, shards: dict[int, Path], counts: dict[str, int],
                 recorded: dict[str, dict]) -> list[str]:
    """The split's index lists its shards with their counts, and is, byte for byte, the
    index the run writes from the shards' states (`recorded`: shard name -> state)."""
    path = folder / wds_index_name(split)
    try:
        text = path.read_text()
        doc = json.loads(text)
        listed = [(s["url"], s["nsamples"]) for s in doc["shardlist"]]
        kind = doc.get("__kind__")
    except FileNotFoundError:
        return [f"{path}: missing"]
    except (ValueError, KeyError, TypeError) as e:
        return [f"{path}: not a shard index ({e})"]
    problems = [] if kind == INDEX_KIND else [f"{path}: __kind__ is {kind!r}"]
    want = [(p.name, counts.get(p.name)) for _, p in sorted(shards.items())]
    if listed != want:
        problems.append(f"{path}: lists {len(listed)} shards / {sum(n for _, n in listed)} "
                        f"samples, the folder holds {len(want)} / "
                        f"{sum(n or 0 for _, n in want)}")
    elif not problems and all(name in recorded for name, _ in want):
        states = [recorded[name] for name, _ in want]
        if text != wids_index(f"imagenet-{WDS_PREFIX[split]}",
                              [(e["name"], e["samples"], e["bytes"]) for e in states]):
            problems.append(f"{path}: differs from the index of the shards' recorded states")
    return problems


def check_wds(folder: Path, sample: int = 20, workers: int | None = None,
              damaged: list[Path] | None = None, classes: tuple[str, ...] | None = None,
              expected_counts: dict[str, int] | None = None) -> list[str]:
    """Problems with a folder of WebDataset shards (empty when all is well).

    Every shard's tar structure and samples, the shard set (numbered from 0, no gap),
    each split's index against the shards, the totals and every shard's size and
    CRC32C against the state, and a decoded sample of images.
    """
    folder = as_path(folder)
    state = stage_state.load(folder, WDS_RECORD) or {}
    spec = from_text(state.get("options", {}).get("resize"))
    ext = "jpg" if spec is None else spec.extension
    problems: list[str] = []
    by_prefix: dict[str, dict[int, Path]] = {p: {} for p in WDS_PREFIX.values()}
    for entry in sorted(listdir(folder)):
        if is_tmp_name(entry):
            problems.append(f"{folder / entry}: leftover temporary file")
        elif m := WDS_SHARD_RE.fullmatch(entry):
            by_prefix[m.group(1)][int(m.group(2))] = folder / entry
    if not state and any(by_prefix.values()):  # the next run refuses shards it has no record of
        problems.append(f"{folder}: holds shards that no wds run recorded (no "
                        f"{stage_state.record_path(folder, WDS_RECORD)})")
    for split, prefix in WDS_PREFIX.items():
        shards = by_prefix[prefix]
        recorded = state.get("splits", {}).get(split)
        if not shards:
            if recorded is not None or (folder / wds_index_name(split)).exists():
                problems.append(f"{folder}: no {prefix} shards")
            continue
        if recorded is not None and "shards" in recorded:  # the cut the run recorded
            for k in sorted(k for k in shards if k >= recorded["shards"]):
                problems.append(f"{shards.pop(k)}: a shard beyond the recorded "
                                f"{recorded['shards']} (no wds run wrote it); move it away")
            if not shards:
                problems.append(f"{folder}: no {prefix} shards")
                continue
        missing = [k for k in range(max(shards) + 1) if k not in shards]
        if recorded is not None and recorded.get("shards", len(shards)) > len(shards):
            missing += list(range(max(shards) + 1, recorded["shards"]))
        if missing:
            problems.append(f"{folder}: {len(missing)} {prefix} shards missing, first "
                            f"{wds_shard_name(split, missing[0])}")
        step = max(1, len(shards) // max(1, sample)) if sample else 0
        tasks = [
            _CheckTask(path, split, state.get("shards", {}).get(path.name),
                       bool(step) and j % step == 0 and j // step < sample, classes, ext)
            for j, (_, path) in enumerate(sorted(shards.items()))
        ]
        results = {name: (n, more) for name, n, more in run_tasks(_check_shard, tasks, workers)}
        counts = {name: n for name, (n, _) in results.items()}
        problems += [p for name in sorted(results) for p in results[name][1]]
        if damaged is not None:  # shards to write again, for the next run
            damaged += [folder / name for name in sorted(results) if results[name][1]]
        problems += _check_index(folder, split, shards, counts, state.get("shards", {}))
        if recorded is not None:
            skipped = sum(len(e["skipped"]) for e in state.get("shards", {}).values()
                          if e.get("split") == split)
            expected = (expected_counts or {}).get(split, recorded["images"]) - skipped
            if sum(counts.values()) != expected:
                problems.append(f"{folder}: {sum(counts.values())} {prefix} samples, "
                                f"expected {expected}")
    return problems + check_timm_info(folder)
