"""DATASET/meta.bin: what `torchvision.datasets.ImageNet(root=DATASET, split=...)` loads.

torchvision reads `(wnid_to_classes, val_wnids)` from it with torch.load, then lists
DATASET/train or DATASET/val as an ImageFolder; without the file it asks for the
devkit archive in DATASET.  `wnid_to_classes` maps each of the 1000 WNIDs to its
class names (the description split at ", ", as torchvision parses the devkit's
`words`); `val_wnids` is the WNID of every validation image in file-name order, read
from the class folders valtree made.  Written with formats/torch_save.py (no torch).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from imagenet_prep.formats.torch_save import torch_save_bytes
from imagenet_prep.layout import TORCHVISION_META, TORCHVISION_RECORD
from imagenet_prep.runtime import expectation, stage_state
from imagenet_prep.runtime.files import is_tmp_name, write_if_changed
from imagenet_prep.sources import metadata
from imagenet_prep.sources.catalog import class_dirs


def val_wnids(dataset: Path) -> list[str]:
    """The WNID of each image in DATASET/val/WNID/ in ascending file-name order ([] when val
    is absent or not grouped into class folders)."""
    root = dataset / "val"
    if not root.is_dir():
        return []
    pairs: list[tuple[str, str]] = []
    for wnid in class_dirs(root):
        with os.scandir(root / wnid) as it:
            pairs += [(e.name, wnid) for e in it if e.is_file() and not is_tmp_name(e.name)]
    pairs.sort()
    return [w for _, w in pairs]


def meta_object(dataset: Path) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    words = metadata.descriptions()
    return {w: tuple(words[w].split(", ")) for w in metadata.wnids()}, val_wnids(dataset)


def write_meta_bin(dataset: Path) -> dict[str, Any]:
    """Write DATASET/meta.bin; returns (and records, for check) what it holds."""
    expectation.expect(dataset, {"torchvision": {}}, {})
    classes, val = meta_object(dataset)
    data = torch_save_bytes((classes, val), Path(TORCHVISION_META).stem)
    path = dataset / TORCHVISION_META
    write_if_changed(path, data)
    rec = {"classes": len(classes), "val_images": len(val), "bytes": len(data),
           "sha256": hashlib.sha256(data).hexdigest()}
    stage_state.save(dataset, TORCHVISION_RECORD, rec)
    return rec
