"""Write timm's `_info.json` beside WebDataset shards (formats/timm_info.py says what)."""

from __future__ import annotations

from pathlib import Path

from imagenet_prep.formats.timm_info import info_from_indexes
from imagenet_prep.layout import TIMM_INFO
from imagenet_prep.runtime.files import write_atomic


def write_timm_info(folder: Path) -> None:
    """(Re)write folder/_info.json from the split indexes there, when it differs."""
    text = info_from_indexes(folder)
    path = folder / TIMM_INFO
    if text is not None and (not path.is_file() or path.read_bytes() != text.encode()):
        write_atomic(path, text)
