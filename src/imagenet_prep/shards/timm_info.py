"""Write timm's `_info.json` beside WebDataset shards (formats/timm_info.py says what)."""

from __future__ import annotations

from pathlib import Path

from imagenet_prep.formats.timm_info import info_from_indexes
from imagenet_prep.layout import TIMM_INFO
from imagenet_prep.runtime.files import write_if_changed


def write_timm_info(folder: Path) -> None:
    """(Re)write folder/_info.json from the split indexes there, when it differs."""
    text = info_from_indexes(folder)
    path = folder / TIMM_INFO
    if text is not None:
        write_if_changed(path, text)
