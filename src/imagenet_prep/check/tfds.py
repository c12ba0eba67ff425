"""Check a TFDS data directory: every shard's bytes and records, the shard set, the metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagenet_prep.check.shard_bytes import shard_bytes_problems
from imagenet_prep.formats import tfds
from imagenet_prep.formats.tfrecord import RecordError, decode_example, iter_records
from imagenet_prep.layout import TFDS_DATA, TFDS_RECORD, TFDS_SHARD_RE
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.files import is_tmp_name
from imagenet_prep.runtime.pool import run_tasks
from imagenet_prep.runtime.storage import listdir, local_file
from imagenet_prep.sources import metadata


@dataclass(frozen=True)
class _CheckTask:
    path: Path
    split: str
    entry: dict


def _check_shard(task: _CheckTask) -> tuple[Path, list[str]]:
    """(the shard, its problems): its size and CRC32C against the state, every record's
    CRCs and features."""
    return task.path, _shard_problems(task)


def _shard_problems(task: _CheckTask) -> list[str]:
    try:
        with local_file(task.path) as local:  # an object: one GET into a temporary copy
            return _local_problems(task, local)
    except FileNotFoundError:
        return [f"{task.path}: missing"]


def _local_problems(task: _CheckTask, local: Path) -> list[str]:
    path, entry = task.path, task.entry
    problems = shard_bytes_problems(path, entry, local)
    if problems:
        return problems
    labels = (-1, -1) if task.split == "test" else (0, metadata.NUM_CLASSES - 1)
    n = 0
    try:
        for offset, data in iter_records(local):
            where = f"{path}: record {n} (byte {offset})"
            n += 1
            try:
                ex = decode_example(data)
                label, name, image = ex["label"][0], ex["file_name"][0], ex["image"][0]
            except (KeyError, IndexError, ValueError) as e:
                problems.append(f"{where}: not an imagenet2012 Example ({e})")
                continue
            if not labels[0] <= label <= labels[1] or not name or not image:
                problems.append(f"{where}: label {label}, file name {name!r}, "
                                f"{len(image)} image bytes")
    except RecordError as e:
        problems.append(str(e))
    if n != entry["records"]:
        problems.append(f"{path}: {n} records, the state records {entry['records']}")
    return problems


def check_tfds(dataset: Path, workers: int | None = None, damaged: list[Path] | None = None,
               required: tuple[str, ...] = ()) -> list[str]:
    """Problems with DATASET/tfds (empty when all is well): every shard the state plans is
    there, with its recorded size and CRC32C and well-formed records; no other shard; the
    metadata files say what the shards hold."""
    folder = dataset / TFDS_DATA
    state = stage_state.load(dataset, TFDS_RECORD)
    if state is None or not folder.is_dir():
        return [f"{folder}: missing (TFDS shards were asked for)"]
    problems: list[str] = []
    for split in required:
        if split not in state["splits"]:
            problems.append(f"{folder}: no {tfds.SPLIT_NAMES[split]} split")
    planned: dict[str, str] = {}  # shard name -> split
    for split, info in state["splits"].items():
        for k in range(info["shards"]):
            planned[tfds.shard_name(split, k, info["shards"])] = split
    present = set()
    for name in sorted(listdir(folder)):
        if is_tmp_name(name):
            problems.append(f"{folder / name}: leftover temporary file")
        elif TFDS_SHARD_RE.fullmatch(name):
            present.add(name)
            if name not in planned:
                problems.append(f"{folder / name}: a shard no run planned; move it away")
    missing = [n for n in planned if n not in present or n not in state["shards"]]
    for name in missing:
        problems.append(f"{folder / name}: missing")
    tasks = [_CheckTask(folder / n, s, state["shards"][n]) for n, s in planned.items()
             if n not in missing]
    results = dict(run_tasks(_check_shard, tasks, workers))  # in the order they finish
    for task in tasks:
        problems += results[task.path]
    if damaged is not None:
        damaged += [t.path for t in tasks if results[t.path]]
    for name, text in tfds.metadata_files(state).items():
        path = folder / name
        try:
            if path.read_text() != text:
                problems.append(f"{path}: does not describe the shards (differs from what "
                                "the state implies)")
        except (FileNotFoundError, UnicodeDecodeError):
            problems.append(f"{path}: missing or not text")
    return problems
