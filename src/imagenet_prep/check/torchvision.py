"""Check DATASET/meta.bin: the bytes the torchvision stage recorded, and what they hold."""

from __future__ import annotations

import hashlib
from pathlib import Path

from imagenet_prep.formats.torch_save import torch_load_plain
from imagenet_prep.layout import TORCHVISION_META, TORCHVISION_RECORD
from imagenet_prep.runtime import stage_state
from imagenet_prep.sources import metadata


def check_meta_bin(dataset: Path) -> list[str]:
    path = dataset / TORCHVISION_META
    rec = stage_state.load(dataset, TORCHVISION_RECORD)
    if rec is None:
        return [f"{path}: not written (the torchvision stage did not finish)"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [f"{path}: missing"]
    if hashlib.sha256(data).hexdigest() != rec["sha256"]:
        return [f"{path}: changed after it was written (SHA-256 differs)"]
    try:
        classes, val = torch_load_plain(data)
    except Exception as e:  # any unreadable content is the one problem to report
        return [f"{path}: not a torch.save file of (wnid_to_classes, val_wnids) ({e})"]
    problems = []
    if sorted(classes) != list(metadata.wnids()):
        problems.append(f"{path}: {len(classes)} classes, not the 1000 WNIDs")
    if len(val) != rec["val_images"] or not set(val) <= set(classes):
        problems.append(f"{path}: {len(val)} validation WNIDs, {rec['val_images']} recorded")
    return problems
