"""Hugging Face dataset cards for the outputs `datasets` cannot read right by guessing.

- DATASET/wds/README.md: without it, `load_dataset(DATASET/wds)` infers the columns
  from five samples of one split, and validation's empty box lists fail the cast;
  the card names the splits' shards and every column's type.
- DATASET/README.md: without it, `load_dataset("imagefolder", data_dir=DATASET)`
  counts train_flatten/ with train/ (and val_flatten/ with val/) and, the depths
  differing, adds no label; with it, `load_dataset(DATASET)` reads only the class
  folders, labels from the folder names (the WNIDs present in sorted order: with all
  1000 classes, label i is our label i).

A card is rewritten only when its text changes; a README.md at the DATASET root
that imagenet-prep did not write is left alone (and said so).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from imagenet_prep import layout
from imagenet_prep.formats import hf_card
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.files import write_atomic, write_if_changed


def write_wds_card(out: Path) -> Path:
    """OUT/README.md for the splits the WebDataset state records."""
    path = out / layout.HF_CARD
    splits = (stage_state.load(out, layout.WDS_RECORD) or {}).get("splits", {})
    text = hf_card.wds_card_text(list(splits))
    write_if_changed(path, text)
    return path


def write_root_card(dataset: Path, ours: bool = False) -> Path | None:
    """DATASET/README.md for the class folders present; None when train/ is absent or a
    README.md of someone else's is there (`ours`: a card we wrote before, damaged or not)."""
    splits = [s for s in ("train", "val") if (dataset / s).is_dir()]
    if "train" not in splits:
        return None
    path = dataset / layout.HF_CARD
    text = hf_card.root_card_text(splits)
    if path.is_file():
        old = path.read_text(errors="replace")
        if old == text:
            return path
        if not ours and hf_card.MARK not in old:
            print(f"{path}: not written by imagenet-prep; left as it is (no dataset card)",
                  file=sys.stderr)
            return None
    write_atomic(path, text)
    return path


def record_root_card(dataset: Path) -> dict[str, Any] | None:
    """Write the root card and record it (`check` proves it by its SHA-256), or record why
    not; None when there are no class folders."""
    if not (dataset / "train").is_dir():
        return None
    before = stage_state.load(dataset, layout.CARD_RECORD) or {}
    path = write_root_card(dataset, ours="sha256" in before)
    if path is None:
        rec: dict[str, Any] = {"skipped": f"{dataset / layout.HF_CARD} is not imagenet-prep's"}
    else:
        data = path.read_bytes()
        rec = {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    stage_state.save(dataset, layout.CARD_RECORD, rec)
    return rec
