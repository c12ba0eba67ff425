"""timm's `_info.json`: the split table its WebDataset reader (`wds/` datasets) starts from.

timm's reader looks for `_info.json` (then `info.json`) in the shard folder and takes
a split by name from `splits`: its `num_samples` (required for training, where each
worker stops after its share), `filenames` (relative to the folder) and
`shard_lengths` (docs/loaders.md).  We derive it from the wids indexes, which list
the same shards with their sample counts, so the two can never disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

from imagenet_prep.layout import WDS_PREFIX, wds_index_name

NAME = "imagenet-1k"


def info_from_indexes(folder: Path) -> str | None:
    """The _info.json text for the split indexes present in `folder` (None: none is)."""
    splits = {}
    for split, prefix in WDS_PREFIX.items():
        path = folder / wds_index_name(split)
        if not path.is_file():
            continue
        shards = json.loads(path.read_text())["shardlist"]
        splits[prefix] = {
            "name": prefix, "num_samples": sum(s["nsamples"] for s in shards),
            "filenames": [s["url"] for s in shards],
            "shard_lengths": [s["nsamples"] for s in shards],
        }
    if not splits:
        return None
    return json.dumps({"name": NAME, "splits": splits}, indent=1, sort_keys=True) + "\n"
