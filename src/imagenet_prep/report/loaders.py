"""Summary rows for the outputs made for other loaders: TFDS splits, meta.bin, _info.json."""

from __future__ import annotations

import json
from pathlib import Path

from imagenet_prep.formats import tfds
from imagenet_prep.layout import (
    TFDS_DATA,
    TFDS_RECORD,
    TIMM_INFO,
    TORCHVISION_META,
    TORCHVISION_RECORD,
    WDS_DIR,
)
from imagenet_prep.report.model import Row
from imagenet_prep.runtime import stage_state


def loader_rows(dataset: Path) -> list[Row]:
    """One row per TFDS split (records, shards, bytes on disk), meta.bin and _info.json."""
    rows = []
    state = stage_state.load(dataset, TFDS_RECORD) or {}
    folder = dataset / TFDS_DATA
    for split, lengths, _ in tfds.complete_splits(state):
        names = [tfds.shard_name(split, k, len(lengths)) for k in range(len(lengths))]
        size = sum(p.stat().st_size for n in names if (p := folder / n).is_file())
        rows.append(Row(f"tfds_{split}", f"TFDS {tfds.SPLIT_NAMES[split]} records",
                        sum(lengths), None, size, f"{len(lengths):,} shards in {TFDS_DATA}/"))
    if (rec := stage_state.load(dataset, TORCHVISION_RECORD)) is not None:
        rows.append(Row("meta_bin", TORCHVISION_META, rec["val_images"], rec["classes"],
                        rec["bytes"], "torchvision ImageNet: classes, validation WNIDs"))
    info = dataset / WDS_DIR / TIMM_INFO
    if info.is_file():
        splits = json.loads(info.read_text()).get("splits", {})
        rows.append(Row("timm_info", f"{WDS_DIR}/{TIMM_INFO}",
                        sum(s.get("num_samples", 0) for s in splits.values()), None,
                        info.stat().st_size, "timm wds reader: " + ", ".join(splits)))
    return rows
