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


def _shardlist(path: Path, strict: bool) -> list[dict] | None:
    """The index's shards; None when it is absent or damaged (a rerun writes it again, and
    the table with it, when its split finishes: this split may finish first); `strict`:
    a damaged one raises ValueError."""
    try:
        shards = json.loads(path.read_text())["shardlist"]
        if all(isinstance(s["url"], str) and isinstance(s["nsamples"], int) for s in shards):
            return shards
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):  # not JSON, not UTF-8, not an index
        pass
    if strict:
        raise ValueError(f"{path}: not a shard index")
    return None


def info_from_indexes(folder: Path, strict: bool = False) -> str | None:
    """The _info.json text for the split indexes present and readable in `folder` (None:
    none is); `strict`: a damaged index raises ValueError."""
    splits = {}
    for split, prefix in WDS_PREFIX.items():
        shards = _shardlist(folder / wds_index_name(split), strict)
        if shards is None:
            continue
        splits[prefix] = {
            "name": prefix, "num_samples": sum(s["nsamples"] for s in shards),
            "filenames": [s["url"] for s in shards],
            "shard_lengths": [s["nsamples"] for s in shards],
        }
    if not splits:
        return None
    return json.dumps({"name": NAME, "splits": splits}, indent=1, sort_keys=True) + "\n"
