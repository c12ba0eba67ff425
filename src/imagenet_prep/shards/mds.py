"""`mds`: MosaicML Streaming (MDS) shards, one streaming dataset per split, as a shard format.

DATASET/mds/train/, val/ and test/ each hold shard.00000.mds, ... and index.json,
what `streaming.StreamingDataset(local=...)` (and `StreamingImageNet(split=...)`)
reads.  The columns are those of MosaicML's own ImageNet converter: `x` (jpeg, the
image bytes), `y` (int, the label 0..999; -1 in test), `i` (int, the image's index
in the split's sorted file names), plus `filename` (str).  Samples follow the
seeded order of the TFRecords, cut into shards of about `--shard-size` (default
64 MiB, MosaicML's `size_limit`).  The format is written here from its
specification (formats/mds.py), so the tool needs no `mosaicml-streaming`; the
shard header holds every sample's offset, so a shard is assembled in memory (one
shard per worker) before it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_prep import layout
from imagenet_prep.errors import OptionError, PrepError
from imagenet_prep.formats import mds
from imagenet_prep.formats.resize import ResizeSpec
from imagenet_prep.runtime import variant
from imagenet_prep.runtime.files import write_if_changed
from imagenet_prep.runtime.memory import keep_freed_memory
from imagenet_prep.runtime.pool import Workers
from imagenet_prep.runtime.storage import as_path, listdir
from imagenet_prep.shards import engine
from imagenet_prep.shards.order import Bounds, size_bounds
from imagenet_prep.shards.parquet import default_splits
from imagenet_prep.shards.planned_sizes import planned_sizes
from imagenet_prep.sources.catalog import Catalog
from imagenet_prep.sources.subset import Subset

SPLITS = tuple(layout.MDS_SPLIT)
DEFAULT_SHARD_SIZE = 1 << 26  # MosaicML's default size_limit
SAMPLE_OVERHEAD = 64  # offset, lengths, file name and the two integers, about
MAX_SHARD_SIZE = 1 << 31  # offsets are 32-bit: leave room for images re-encoded larger


class _Samples(engine.ShardEncoder):
    """A shard's samples, held until the end: the header lists every sample's offset."""

    def __init__(self, task: engine.ShardTask, size_limit: int) -> None:
        cat = task.catalog
        self.names, self.labels = cat.names, cat.out_labels().tolist()  # a subset's, if any
        assert task.indices is not None
        self.indices = task.indices.tolist()
        self.size_limit = size_limit
        keep_freed_memory(2 * size_limit)  # the next shard reuses this one's pages
        self.parts: list[bytes] = []
        self.sizes: list[int] = []

    def sample(self, i: int, image: bytes, width: int, height: int, boxes: np.ndarray
               ) -> list[bytes]:
        pieces = mds.sample_pieces(self.names[i], self.indices[i], image, self.labels[i])
        self.parts += pieces
        self.sizes.append(sum(map(len, pieces)))
        return []

    def end(self, offset: int) -> list[bytes]:
        return [mds.shard_header(self.sizes, self.size_limit), *self.parts]


@dataclass(frozen=True)
class MdsFormat(engine.ShardFormat, record=layout.MDS_RECORD, report=layout.MDS_REPORT,
                unit="samples", title="MDS shards", splits=SPLITS, sized=True,
                needs_boxes=False):
    """DATASET/mds/SPLIT/shard.NNNNN.mds and index.json; the state in DATASET/.imagenet-prep."""

    root: Path
    options: dict[str, Any]  # seed, shard_size

    @property
    def out(self) -> Path:
        return self.root / layout.MDS_DIR

    def split_folder(self, split: str) -> Path:
        return self.out / layout.MDS_SPLIT[split]

    def folder(self, split: str) -> Path:
        return self.out  # shard names carry the split's folder: unique in the state

    def folders(self, split: str) -> tuple[Path, ...]:
        return (self.split_folder(split),)

    def shard_name(self, split: str, k: int, shards: int) -> str:
        return f"{layout.MDS_SPLIT[split]}/{layout.mds_shard_name(k)}"

    def is_ours(self, name: str) -> bool:
        return name in layout.MDS_SPLIT.values()  # a split folder nothing recorded

    def is_shard(self, split: str, name: str) -> bool:
        return bool(layout.MDS_SHARD_RE.fullmatch(name))

    def found_shards(self, split: str) -> list[str]:
        try:  # in the split's own folder, named with it (as shard_name names them)
            names = listdir(self.split_folder(split))
        except FileNotFoundError:
            return []
        return [f"{layout.MDS_SPLIT[split]}/{n}" for n in names if self.is_shard(split, n)]

    def bounds(self, split: str, cat: Catalog, order: np.ndarray) -> Bounds:
        return size_bounds(planned_sizes(cat, order, self.options.get("resize"))
                           + SAMPLE_OVERHEAD, self.options["shard_size"])

    def encoder(self, task: engine.ShardTask) -> engine.ShardEncoder:
        return _Samples(task, self.options["shard_size"])

    def finish_split(self, split: str, entries: list[dict]) -> None:
        """The split's index.json: every shard with its sample count and size."""
        limit = self.options["shard_size"]
        text = mds.index_text([mds.index_entry(Path(e["name"]).name, e["samples"], e["bytes"],
                                               limit) for e in entries])
        path = self.split_folder(split) / layout.MDS_INDEX
        write_if_changed(path, text)

    def sources(self, dataset: Path, archives: Path | None, from_folders: bool,
                splits: tuple[str, ...]) -> str:
        return ", ".join(str(dataset / s) for s in splits) if from_folders else \
            f"the {', '.join(splits)} archives in {archives}"

    def asked(self) -> dict[str, Any]:
        return {**self.options, "folder": layout.MDS_DIR}

    def describe(self, split: str | None = None) -> dict[str, Any]:
        if split is None:
            return {"folder": str(self.out)}
        return {"folder": str(self.split_folder(split)),
                "index": str(self.split_folder(split) / layout.MDS_INDEX)}


def write_mds(
    dataset: Path, *, archives: Path | None = None, from_folders: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE, seed: int = 0, workers: Workers = None,
    on_bad_image: str = "fail", splits: tuple[str, ...] | None = None, labels: str = "auto",
    subset: Subset | None = None, resize: ResizeSpec | None = None,
) -> dict[str, Any]:
    """Write the missing MDS shards and each split's index.json; returns the run report.
    A subset (None: the dataset's recorded one, else all) restricts the images, and `y` is
    its label (docs/subsets.md).  With `resize`, `dataset` is the variant's folder
    (runtime/variant.py)."""
    policy = engine.bad_image_policy(on_bad_image)
    if not 1 <= shard_size <= MAX_SHARD_SIZE:
        raise OptionError(f"--shard-size must be between 1 byte and {MAX_SHARD_SIZE:,} "
                          "(MDS offsets are 32-bit)")
    if not from_folders and archives is None:
        raise PrepError("mds needs --archives DIR, or --from-folders")
    dataset = as_path(dataset)
    if resize is not None and (from_folders or resize.image_format != "jpeg"):
        raise OptionError("mds --resize reads the archives (not --from-folders) and stores "
                          "JPEG, the type of MDS's x column (not --image-format webp)")
    variant.claim(dataset, resize)
    if splits is None:
        splits = default_splits(archives, dataset, from_folders)
    options: dict[str, Any] = {"seed": seed, "shard_size": shard_size}
    if resize is not None:
        options["resize"] = resize.text
    report = engine.write_shards(
        MdsFormat(dataset, options), dataset=dataset,
        archives=archives, from_folders=from_folders, labels=labels, splits=splits,
        workers=workers, policy=policy, boxes_csv=None, subset=subset)
    return variant.with_summary(report, dataset, archives, resize)
