"""Which stages of `prepare` can write into a bucket, and the refusal of the others.

An object store has whole objects and no folders, links or renames: every stage whose
outputs are files written once through `files.atomic_file` (uploaded whole when a
URL) can go there; the class trees (extract, valtree's moves), the flat hard links,
and what describes the class folders (meta.bin, the root card) need a POSIX folder
(synsets.txt can go: without class folders it lists the train archive's class
tars).  The report can go too: it scans each TFRecord shard from one temporary local
copy (as `check` reads shards in a bucket) and reads its thumbnails by ranged requests.
Facts relied on: docs/storage.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from imagenet_prep.errors import OptionError
from imagenet_prep.runtime.storage import RemotePath, is_remote

# stages whose every output is a whole file written through atomic_file
BUCKET_STAGES = frozenset({"download", "verify", "bbox", "tfrecord", "wds", "parquet", "mds",
                           "tfds", "synsets", "report"})

WHAT_FITS = ("into a bucket, prepare writes --only tensorflow (the box CSV, TFRecords, "
             "--dali-index) with --wds, --parquet, --mds, --tfds, labels.json/csv and the "
             "state and the report; the synsets command writes synsets.txt")


def refuse_folder_stages(dataset: Path | RemotePath, stages: Iterable[str]) -> None:
    """One line (exit 2) when DATASET is a bucket and a stage needs a POSIX folder."""
    if not is_remote(dataset):
        return
    posix = [s for s in stages if s not in BUCKET_STAGES]
    if posix:
        raise OptionError(f"{dataset}: {', '.join(posix)} need a local or shared folder "
                          f"(class trees, flat links, files made from them); {WHAT_FITS}")
