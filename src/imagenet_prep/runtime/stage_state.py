"""Small JSON records in DATASET/.imagenet-prep: what each stage finished, for resume and check.

`load` hands out only records of the shape their readers rely on (see SCHEMAS): a
record that is not JSON, or not of that shape (a disk error, an edit by hand), is a
one-line DamagedStateError naming the file and how to start that stage over, never a
JSONDecodeError, AttributeError or KeyError deep inside a stage.

Each record carries its own SHA-256 (SEAL), so a changed byte that still reads as JSON
of the right shape (a digit of a digest, a size or an option) is "damaged" too: such a
record made `check` say OK while the next run refused the outputs it describes.
Records written before the seal are read without it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagenet_prep.errors import DamagedStateError, os_error
from imagenet_prep.layout import (
    BBOX_RECORD,
    CARD_RECORD,
    DAMAGED_RECORD,
    EXPECT_RECORD,
    EXTRACT_SPLITS,
    FLATTEN_RECORD,
    MDS_RECORD,
    MDS_REPORT,
    PARQUET_RECORD,
    PARQUET_REPORT,
    PREPARE_RECORD,
    SHARD_FOLDERS,
    STATE_DIR,
    SUBSET_RECORD,
    SYNSETS_RECORD,
    TFDS_RECORD,
    TFRECORD_RECORD,
    TFRECORD_REPORT,
    TORCHVISION_RECORD,
    VALTREE_RECORD,
    VARIANT_LIBRARIES,
    VARIANT_RECORD,
    WDS_RECORD,
    WDS_REPORT,
    extract_record,
)
from imagenet_prep.runtime.files import state_dir, write_atomic


def record_path(dataset: Path, name: str) -> Path:
    return dataset / STATE_DIR / f"{name}.json"


# --- the shapes -------------------------------------------------------------------------
# A spec is a type (isinstance; int for numbers that are counts, float accepts ints too),
# `Fields` (an object with these fields), `MapOf` (an object of any keys, each value of a
# spec) or `ListOf`.  Only what some reader indexes or iterates is listed: other fields
# are free to come and go.


@dataclass(frozen=True)
class Fields:
    required: dict[str, Any]
    optional: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MapOf:
    value: Any


@dataclass(frozen=True)
class ListOf:
    item: Any


OPTIONAL_STR = (str, type(None))  # a library version: null when the library is absent
_NAMES = {int: "a whole number", float: "a number", str: "a string", list: "a list",
          dict: "an object", bool: "true or false", OPTIONAL_STR: "a string or null"}
# what formats.resize.versions() records: a flipped key must not read as another version
_VERSIONS = Fields(dict.fromkeys(VARIANT_LIBRARIES, OPTIONAL_STR))
_EXTRACT = Fields({"split": str, "archive": str, "archive_size": int, "files": int,
                   "bytes": int, "classes": MapOf(int)})
_PAIRS = ListOf(ListOf(str))  # [[name, reason or error], ...]
_TF_SHARD = Fields({"split": str, "name": str, "records": int, "bytes": int},
                   {"crc32c": int, "converted": _PAIRS, "skipped": _PAIRS})
_WDS_SHARD = Fields({"split": str, "name": str, "samples": int, "bytes": int},
                    {"crc32c": int, "converted": _PAIRS, "skipped": _PAIRS})
_SPLIT = Fields({"images": int}, {"shards": int})

SCHEMAS: dict[str, Fields] = {
    **{extract_record(s): _EXTRACT for s in EXTRACT_SPLITS},
    VALTREE_RECORD: Fields({"classes": MapOf(int), "files": int}),
    BBOX_RECORD: Fields({"bytes": int, "sha256": str, "boxes_written": int, "images": int,
                         "files_skipped": int, "boxes_skipped": int}),
    PREPARE_RECORD: Fields({}, {"runs": ListOf(dict)}),
    TFRECORD_RECORD: Fields({"shards": MapOf(_TF_SHARD), "splits": MapOf(_SPLIT)},
                            {"options": dict}),
    TFRECORD_REPORT: Fields({}, {"run": dict, "skipped": list, "converted": list,
                                 "splits": MapOf(dict)}),
    WDS_RECORD: Fields({"shards": MapOf(_WDS_SHARD), "splits": MapOf(_SPLIT)},
                       {"options": dict}),
    WDS_REPORT: Fields({}, {"run": dict, "skipped": list, "converted": list}),
    EXPECT_RECORD: Fields({"version": int, "outputs": MapOf(dict), "archives": MapOf(dict)}),
    FLATTEN_RECORD: Fields({"modes": MapOf(str)}),
    SYNSETS_RECORD: Fields({"bytes": int, "sha256": str, "classes": int}),
    DAMAGED_RECORD: Fields({"files": ListOf(str)}),
    PARQUET_RECORD: Fields({"shards": MapOf(_WDS_SHARD), "splits": MapOf(_SPLIT)},
                           {"options": dict}),
    PARQUET_REPORT: Fields({}, {"run": dict, "skipped": list, "converted": list}),
    MDS_RECORD: Fields({"shards": MapOf(_WDS_SHARD), "splits": MapOf(_SPLIT)},
                       {"options": dict}),
    MDS_REPORT: Fields({}, {"run": dict, "skipped": list, "converted": list}),
    CARD_RECORD: Fields({}, {"bytes": int, "sha256": str, "skipped": str}),
    SUBSET_RECORD: Fields({"num_classes": int, "classes_sha256": str, "labels": str}),
    VARIANT_RECORD: Fields({"resize": str, "quality": int, "image_format": str,
                            "versions": _VERSIONS}, {"quality_sample": dict}),
    TFDS_RECORD: Fields({"shards": MapOf(Fields({"split": str, "name": str, "records": int,
                                                 "bytes": int},
                                                {"crc32c": int, "example_bytes": int})),
                         "splits": MapOf(_SPLIT)}, {"options": dict}),
    TORCHVISION_RECORD: Fields({"bytes": int, "sha256": str, "classes": int, "val_images": int}),
}


def shape_problem(value: Any, spec: Any, where: str = "") -> str | None:
    """Why `value` does not match `spec` ('splits.train.images is not a whole number'),
    or None when it does."""
    here = where or "the record"
    if isinstance(spec, Fields):
        if not isinstance(value, dict):
            return f"{here} is not an object"
        for name in spec.required:
            if name not in value:
                return f"{where + '.' if where else ''}{name} is missing"
        for name, sub in (*spec.required.items(), *spec.optional.items()):
            if name in value and (p := shape_problem(value[name], sub, _join(where, name))):
                return p
        return None
    if isinstance(spec, MapOf):
        if not isinstance(value, dict):
            return f"{here} is not an object"
        for key, v in value.items():
            if p := shape_problem(v, spec.value, _join(where, key)):
                return p
        return None
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            return f"{here} is not a list"
        for i, v in enumerate(value):
            if p := shape_problem(v, spec.item, f"{here}[{i}]"):
                return p
        return None
    ok = (isinstance(value, int | float) and not isinstance(value, bool) if spec is float
          else isinstance(value, spec) and not (spec is int and isinstance(value, bool)))
    return None if ok else f"{here} is not {_NAMES.get(spec) or spec.__name__}"


def _misnamed_shard(data: dict[str, Any]) -> str | None:
    """A shard entry filed under another name than its own (the name is what the run
    writes the shard's index from)."""
    shards = data.get("shards")
    for key, entry in shards.items() if isinstance(shards, dict) else ():
        if isinstance(entry, dict) and "name" in entry and entry["name"] != key:
            return f"shards.{key}.name is {entry['name']!r}, not {key!r}"
    return None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


RERUN = "delete it to run that stage again from its start"


def start_over(root: Path, name: str) -> str:
    """How to start the stage of record `name` over: a shard stage's record goes with its
    shard folders (a rerun refuses shards no record lists), any other record alone."""
    folders = SHARD_FOLDERS.get(name)
    if folders is None:
        return RERUN
    if folders == (".",):  # the state lives inside the folder: deleting it is enough
        return f"to start over, delete {root}"
    return (f"to start over, delete {', '.join(str(root / f) for f in folders)} and "
            f"{record_path(root, name)}")


def _damaged(path: Path, why: str, remedy: str) -> DamagedStateError:
    return DamagedStateError(f"{path}: damaged state record ({why}); {remedy}")


# --- load and save ----------------------------------------------------------------------


def load(dataset: Path, name: str, remedy: str | None = None) -> dict[str, Any] | None:
    """The record `name`, or None when that stage has not finished.

    A record that is not JSON, or not of its shape, raises DamagedStateError, whose line
    ends with `remedy`, what the user does about it (by default `start_over`).
    """
    path = record_path(dataset, name)
    remedy = remedy or start_over(dataset, name)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise _damaged(path, "not UTF-8 text", remedy) from None
    except OSError as e:
        raise os_error(path, e, "read") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        why = "empty" if not text.strip() else f"not valid JSON: {getattr(e, 'msg', e)}"
        raise _damaged(path, why, remedy) from None
    if isinstance(data, dict) and SEAL in data and data.pop(SEAL) != _digest(data):
        raise _damaged(path, "its content differs from its own SHA-256", remedy)
    problem = shape_problem(data, SCHEMAS.get(name, Fields({}))) or _misnamed_shard(data)
    if problem is not None:
        raise _damaged(path, problem, remedy)
    return data


SEAL = "record_sha256"  # the record's SHA-256 of the rest, as `_digest` computes it


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, indent=1, sort_keys=True).encode()).hexdigest()


def sealed_text(data: dict[str, Any]) -> str:
    """A record's text: its fields and, under SEAL, their SHA-256."""
    body = {k: v for k, v in data.items() if k != SEAL}
    return json.dumps({**body, SEAL: _digest(body)}, indent=1, sort_keys=True) + "\n"


def save(dataset: Path, name: str, data: dict[str, Any]) -> None:
    state_dir(dataset)
    write_atomic(record_path(dataset, name), sealed_text(data))
