"""Write TFDS metadata beside nothing but itself: it describes the reference's TFRecord
shards where they are (formats/tfds_reference.py says how)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagenet_prep.errors import PrepError
from imagenet_prep.formats.tfds_reference import metadata_files
from imagenet_prep.layout import (
    TFDS_DIR,
    TFDS_REFERENCE,
    TFDS_REFERENCE_VERSION,
    TFRECORD,
    TFRECORD_RECORD,
)
from imagenet_prep.runtime import expectation, stage_state
from imagenet_prep.runtime.files import ensure_dir, write_if_changed


def reference_folder(dataset: Path) -> Path:
    return dataset / TFDS_DIR / TFDS_REFERENCE / TFDS_REFERENCE_VERSION


def write_reference_metadata(dataset: Path) -> dict[str, Any]:
    """dataset_info.json and features.json for DATASET's finished TFRecord shards; refused
    while a recorded shard is missing or of another size than recorded."""
    state = stage_state.load(dataset, TFRECORD_RECORD) or {}
    files = metadata_files(state)
    if files is None:
        raise PrepError(f"{dataset}: no finished TFRecord shards to describe; run "
                        "`imagenet-prep tfrecord` (or prepare) first")
    for name, entry in state["shards"].items():
        path = dataset / TFRECORD[entry["split"]].folder / name
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            raise PrepError(f"{path}: missing or changed since it was written; run the same "
                            "tfrecord command again first")
    expectation.expect(dataset, {"tfds_reference": {}}, {})
    folder = ensure_dir(reference_folder(dataset))
    for name, text in files.items():
        path = folder / name
        write_if_changed(path, text)
    return {"folder": str(folder),
            "splits": {s: state["splits"][s]["images"] for s in state["splits"]}}
