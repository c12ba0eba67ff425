"""Check timm's `_info.json` beside WebDataset shards: what the split indexes imply."""

from __future__ import annotations

from pathlib import Path

from imagenet_prep.formats.timm_info import info_from_indexes
from imagenet_prep.layout import TIMM_INFO


def check_timm_info(folder: Path) -> list[str]:
    path = folder / TIMM_INFO
    try:
        want = info_from_indexes(folder, strict=True)
    except ValueError:
        return []  # an unreadable index is reported by the index check
    if want is None:
        return []
    try:
        if path.read_text() != want:
            return [f"{path}: does not list the shards of the split indexes"]
    except (FileNotFoundError, UnicodeDecodeError):
        return [f"{path}: missing or not text"]
    return []
