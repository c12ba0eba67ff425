"""Hugging Face dataset cards and feature descriptions, written without `datasets`.

A card is README.md with a YAML header: `configs` (the data files of each split)
and `dataset_info.features` (the column types), which `datasets.load_dataset(FOLDER)`
reads instead of guessing.  The features are spelled here twice, as the card's YAML
list and as the `huggingface` entry of a Parquet schema's metadata, in the exact
shapes `datasets.Features` writes (tests/test_hf_cards.py compares them with the
library's own).  The YAML is emitted by a small writer: every string double-quoted
(JSON escapes are YAML's), so any class name or path reads back unchanged.
"""

from __future__ import annotations

import json
import re
from typing import Any

from imagenet_prep.layout import HF_SPLIT, PARQUET_DATA, WDS_PREFIX
from imagenet_prep.sources import metadata

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- a small YAML writer ----------------------------------------------------------------

def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "null"
    return json.dumps(str(value))


def _key(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key)


def yaml_lines(value: Any, indent: int = 0) -> list[str]:
    """Block-style YAML of dicts, lists and scalars (lists of lists are not needed here)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{_key(k)}:")
                lines += yaml_lines(v, indent + 2)
            else:
                text = ("{}" if isinstance(v, dict) else "[]") if isinstance(v, dict | list) \
                    else _scalar(v)
                lines.append(f"{pad}{_key(k)}: {text}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item:
                sub = yaml_lines(item, indent + 2)
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines += sub[1:]
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(value))
    return lines


def card(header: dict[str, Any], body: str) -> str:
    """README.md: the YAML header between `---` lines, then the markdown body."""
    return "---\n" + "\n".join(yaml_lines(header)) + "\n---\n\n" + body.strip() + "\n"


# --- features ---------------------------------------------------------------------------

def class_label_yaml(names: tuple[str, ...]) -> dict[str, Any]:
    return {"class_label": {"names": {str(i): n for i, n in enumerate(names)}}}


def hub_features_yaml() -> list[dict[str, Any]]:
    """The Hub's imagenet-1k columns: image {bytes, path} and its 1000-name ClassLabel."""
    return [{"name": "image", "dtype": "image"},
            {"name": "label", "dtype": class_label_yaml(metadata.hub_class_names())}]


def hub_features_metadata() -> bytes:
    """The same features as `datasets` stores them in a Parquet schema (`huggingface` key)."""
    features = {"image": {"_type": "Image"},
                "label": {"names": list(metadata.hub_class_names()), "_type": "ClassLabel"}}
    return json.dumps({"info": {"features": features}}).encode()


def wds_features_yaml() -> list[dict[str, Any]]:
    """Our WebDataset samples as the `webdataset` builder reads them: the key, the shard,
    .cls (absent in test: null), .jpg and the decoded .json (docs/webdataset.md)."""
    meta = [{"name": "boxes", "list": {"list": "float64"}},
            {"name": "filename", "dtype": "string"}, {"name": "height", "dtype": "int64"},
            {"name": "label", "dtype": "int64"}, {"name": "width", "dtype": "int64"},
            {"name": "wnid", "dtype": "string"}]
    return [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"},
            {"name": "cls", "dtype": "int64"}, {"name": "jpg", "dtype": "image"},
            {"name": "json", "struct": meta}]


def configs(data_files: dict[str, str]) -> list[dict[str, Any]]:
    """One default config whose splits (Hub names) read these file patterns."""
    return [{"config_name": "default",
             "data_files": [{"split": HF_SPLIT[s], "path": p} for s, p in data_files.items()]}]


# --- the cards ----------------------------------------------------------------------------

MARK = "<!-- written by imagenet-prep -->"  # a root card with it is ours to rewrite


def parquet_card_text(splits: list[str]) -> str:
    """DATASET/parquet/README.md for the splits written (train, val, test order)."""
    files = {s: f"{PARQUET_DATA}/{HF_SPLIT[s]}-*.parquet"
             for s in HF_SPLIT if s in splits}
    header = {"configs": configs(files),
              "dataset_info": {"features": hub_features_yaml()}}
    return card(header, PARQUET_BODY)


PARQUET_BODY = """
# ImageNet (ILSVRC2012) as Parquet

Written by imagenet-prep from the official ILSVRC2012 archives, in the schema of the
Hugging Face Hub's `imagenet-1k`: `image` ({bytes, path}: the JPEG bytes and the
original file name) and `label` (0..999, the rank of the WNID in sorted order, named
as on the Hub; -1 in `test`). CMYK and PNG files are stored re-encoded as RGB JPEG.

```python
from datasets import load_dataset
ds = load_dataset("path/to/parquet")                  # train, validation, test
ds = load_dataset("path/to/parquet", streaming=True)  # row group by row group
```
"""


def wds_card_text(splits: list[str]) -> str:
    files = {s: f"{WDS_PREFIX[s]}-*.tar" for s in ("train", "val", "test") if s in splits}
    header = {"configs": configs(files),
              "dataset_info": {"features": wds_features_yaml()}}
    return card(header, WDS_BODY)


WDS_BODY = """
# ImageNet (ILSVRC2012) WebDataset shards

Written by imagenet-prep. A sample is `KEY.cls` (label 0..999; absent in test),
`KEY.jpg` and `KEY.json` (file name, WNID, size, boxes). The card names each
split's shards and the columns' types, so Hugging Face `datasets` does not infer
them from a few samples:

```python
from datasets import load_dataset
ds = load_dataset("path/to/wds")                  # train, validation (, test)
ds = load_dataset("path/to/wds", streaming=True)
```
"""


def root_card_text(splits: list[str]) -> str:
    files = {"train": "train/*/*.JPEG", "val": "val/*/*.JPEG"}
    # no dataset_info: `imagefolder` names the classes after the folders present, whatever
    # a card says (all 1000: label i is our label i)
    header = {"configs": configs({s: p for s, p in files.items() if s in splits})}
    return card(header, MARK + "\n" + ROOT_BODY)


ROOT_BODY = """
# ImageNet (ILSVRC2012), prepared by imagenet-prep

The class folders `train/WNID/` and `val/WNID/` are this card's splits; the flat
folders, box folders, test images and shards are left out. The label is the class
folder's WNID, numbered in sorted order: with all 1000 classes, label i is the i-th
WNID, the label every output of imagenet-prep uses.

```python
from datasets import load_dataset
ds = load_dataset("path/to/DATASET")   # train, validation: image, label
```

`load_dataset("imagefolder", data_dir="path/to/DATASET")` does not read this card
and would count the flat folders as well; pass `data_files` instead:
`load_dataset("imagefolder", data_files={"train": "DATASET/train/*/*.JPEG",
"validation": "DATASET/val/*/*.JPEG"})`.
"""
