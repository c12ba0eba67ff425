"""Summary rows for the Parquet and MDS shards, from their state records (nothing listed)."""

from __future__ import annotations

from pathlib import Path

from imagenet_prep import layout
from imagenet_prep.report.model import Row
from imagenet_prep.runtime import stage_state


def hf_rows(dataset: Path) -> list[Row]:
    """One row per split of each of the two formats: samples, files and bytes recorded."""
    rows = []
    for kind, record, folder in (("parquet", layout.PARQUET_RECORD, layout.PARQUET_DIR),
                                 ("mds", layout.MDS_RECORD, layout.MDS_DIR)):
        state = stage_state.load(dataset, record)
        for split in ("train", "val", "test"):
            if state is None or split not in state["splits"]:
                continue
            entries = [e for e in state["shards"].values() if e["split"] == split]
            want = state["splits"][split].get("shards", len(entries))
            title = "Parquet" if kind == "parquet" else "MDS"
            rows.append(Row(f"{kind}_{split}", f"{split} {title} samples",
                            sum(e["samples"] for e in entries), None,
                            sum(e["bytes"] for e in entries),
                            f"{len(entries):,} of {want:,} shards in {folder}/"))
    return rows
