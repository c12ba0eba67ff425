"""TFDS metadata that describes the reference's TFRecord shards in place (no copy).

`DATASET/tfds/imagenet2012_reference/1.0.0/` holds only `dataset_info.json` and
`features.json`; each split's `filepathTemplate` leads back to `tfrecord_train/` and
`tfrecord_val/`, so `tfds.builder_from_directory` reads the shards `tfrecord` wrote.
The features are the reference's 15 keys as nested FeaturesDicts (TFDS joins nested
names with `/`, which gives back `image/encoded`, `image/object/bbox/xmin`, ...):
the label stays 1..1000 as stored, the boxes are variable-length lists
(docs/tfds.md).
"""

from __future__ import annotations

import json
from typing import Any

from imagenet_prep.formats.tfds import CITATION, FEATURES_FILE, INFO_FILE
from imagenet_prep.layout import (
    TFDS_REFERENCE,
    TFDS_REFERENCE_VERSION,
    TFRECORD,
    tfrecord_shard_name,
)

SPLITS = ("train", "val")
_CORE = "tensorflow_datasets.core.features."
_RECORD_OVERHEAD = 16


def _tensor(dtype: str, varlen: bool = False) -> dict[str, Any]:
    shape = {"dimensions": ["-1"]} if varlen else {}
    return {"pythonClassName": _CORE + "tensor_feature.Tensor",
            "tensor": {"dtype": dtype, "encoding": "none", "shape": shape}}


def _text() -> dict[str, Any]:
    return {"pythonClassName": _CORE + "text_feature.Text", "text": {}}


def _group(features: dict[str, Any]) -> dict[str, Any]:
    return {"featuresDict": {"features": features},
            "pythonClassName": _CORE + "features_dict.FeaturesDict"}


def features() -> str:
    """features.json: the reference's Example keys, nested at each `/`."""
    box = {k: _tensor("float32", varlen=True) for k in ("xmax", "xmin", "ymax", "ymin")}
    box["label"] = _tensor("int64", varlen=True)
    image = {
        "channels": _tensor("int64"), "colorspace": _text(),
        "encoded": {"image": {"dtype": "uint8", "encodingFormat": "jpeg",
                              "shape": {"dimensions": ["-1", "-1", "3"]}},
                    "pythonClassName": _CORE + "image_feature.Image"},
        "filename": _text(), "format": _text(), "height": _tensor("int64"),
        "width": _tensor("int64"),
        "class": _group({"label": _tensor("int64"), "synset": _text(), "text": _text()}),
        "object": _group({"bbox": _group(box)}),
    }
    return json.dumps(_group({"image": _group(image)}), indent=4, sort_keys=True)


def dataset_info(state: dict) -> str | None:
    """dataset_info.json from the tfrecord stage's state, or None while a split is not
    complete there."""
    splits = []
    for split in SPLITS:
        info = state.get("splits", {}).get(split)
        if info is None:
            continue
        n = state.get("options", {}).get(f"{split}_shards")
        entries = [state["shards"].get(tfrecord_shard_name(split, k, n)) for k in range(n or 0)]
        if not entries or any(e is None for e in entries):
            return None
        splits.append({
            "filepathTemplate": f"../../../{TFRECORD[split].folder}/{{SPLIT}}-{{SHARD_X_OF_Y}}",
            "name": TFRECORD[split].prefix,
            "numBytes": str(sum(e["bytes"] - _RECORD_OVERHEAD * e["records"] for e in entries)),
            "shardLengths": [str(e["records"]) for e in entries],
        })
    if not splits:
        return None
    doc = {
        "citation": CITATION,
        "description": ("ILSVRC 2012 (ImageNet) in the TFRecord schema of TensorFlow's "
                        "reference converter (build_imagenet_data.py): labels 1..1000, "
                        "training boxes. The shards are DATASET/tfrecord_train and "
                        "DATASET/tfrecord_val, read in place."),
        "location": {"urls": ["https://image-net.org/"]},
        "name": TFDS_REFERENCE, "splits": splits, "version": TFDS_REFERENCE_VERSION,
    }
    return json.dumps(doc, indent=2, sort_keys=True)


def metadata_files(state: dict) -> dict[str, str] | None:
    info = dataset_info(state)
    return None if info is None else {INFO_FILE: info, FEATURES_FILE: features()}
