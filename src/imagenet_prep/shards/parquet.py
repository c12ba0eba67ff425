"""`parquet`: Parquet shards in the schema of the Hugging Face Hub's `imagenet-1k`, as a
shard format.

A row is `image` {bytes, path} and `label` (int64, the Hub's ClassLabel; -1 in
test), the features in the schema's `huggingface` metadata and in the card
DATASET/parquet/README.md, so `datasets.load_dataset(DATASET/parquet)` needs no
guessing.  Each split's seeded order (the TFRecords') is cut into files of about
`--shard-size` (default 500 MB, as `datasets` cuts its own) named like the Hub's,
data/train-00000-of-00294.parquet; inside a file, rows are grouped into row groups
of about `--row-group-size` image bytes (default 4 MB, ~36 ImageNet images), the
unit a streaming reader fetches and holds.  pyarrow writes the files with fixed
options (no compression, no dictionaries, statistics for `label` only), so the
bytes depend only on the inputs, the options and the pyarrow version, which the
state records: a rerun with another pyarrow is refused rather than mixing files.
pyarrow is imported only here (the `imagenet-prep[parquet]` extra).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_prep import layout
from imagenet_prep.errors import OptionError, PrepError
from imagenet_prep.formats import hf_card
from imagenet_prep.formats.resize import ResizeSpec
from imagenet_prep.runtime import stage_state, variant
from imagenet_prep.runtime.files import write_if_changed
from imagenet_prep.runtime.pool import Workers
from imagenet_prep.runtime.storage import as_path
from imagenet_prep.shards import engine
from imagenet_prep.shards.order import Bounds, size_bounds
from imagenet_prep.shards.planned_sizes import planned_sizes
from imagenet_prep.sources.catalog import Catalog
from imagenet_prep.sources.subset import Subset

SPLITS = tuple(layout.HF_SPLIT)
DEFAULT_SHARD_SIZE = 500 * 10**6
DEFAULT_ROW_GROUP_SIZE = 4 * 10**6
ROW_OVERHEAD = 64  # bytes a row adds to its image in the cut (path, label, offsets)
MAX_SHARDS = 99_999  # five-digit names
# fixed writer options: the bytes must not follow pyarrow's defaults as they change
WRITER_OPTIONS: dict[str, Any] = {
    "version": "2.6", "compression": "none", "use_dictionary": False,
    "write_statistics": ["label"], "data_page_size": 1 << 20, "data_page_version": "1.0",
    "write_page_index": False, "write_page_checksum": False, "store_schema": True,
}


def import_pyarrow() -> Any:
    """pyarrow, or a one-line error naming the extra that installs it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise PrepError("parquet needs pyarrow: pip install 'imagenet-prep[parquet]'") from None
    return pyarrow


def pyarrow_version() -> str:
    """The installed pyarrow's version, read without importing it: only the workers need
    pyarrow itself (it would add ~70 MB to the process that holds the catalogs)."""
    try:
        if importlib.util.find_spec("pyarrow") is None:
            raise ImportError
        return importlib.metadata.version("pyarrow")
    except (ImportError, importlib.metadata.PackageNotFoundError):
        raise PrepError("parquet needs pyarrow: pip install 'imagenet-prep[parquet]'") from None


def arrow_schema(pa: Any) -> Any:
    """image {bytes: binary, path: string}, label: int64, with the Hub's features attached."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.schema([("image", image), ("label", pa.int64())],
                     metadata={b"huggingface": hf_card.hub_features_metadata()})


def binary_array(pa: Any, values: tuple[bytes, ...]) -> Any:
    """A binary array over one joined buffer (one memcpy in C), the same array
    `pa.array(values, pa.binary())` builds value by value from Python objects."""
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), len(values),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])


class _Sink:
    """The file-like object pyarrow writes into: its bytes are handed to the engine as
    pieces (the engine writes, fsyncs and checksums them)."""

    closed = False

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.offset = 0

    def write(self, data: Any) -> int:
        piece = bytes(data)
        self.pieces.append(piece)
        self.offset += len(piece)
        return len(piece)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[bytes]:
        out, self.pieces = self.pieces, []
        return out


class _Rows(engine.ShardEncoder):
    """A shard's rows, buffered a row group at a time and written by pyarrow."""

    def __init__(self, task: engine.ShardTask, row_group_size: int, version: str) -> None:
        self.pa = import_pyarrow()
        if self.pa.__version__ != version:  # a Dask worker with another install
            raise PrepError(f"{task.path}: this worker has pyarrow {self.pa.__version__}, the "
                            f"run writes with pyarrow {version}; install the same everywhere")
        self.names, self.labels = task.catalog.names, task.catalog.labels.tolist()
        self.limit = row_group_size
        self.sink = _Sink()
        self.schema = arrow_schema(self.pa)
        self.writer = self.pa.parquet.ParquetWriter(self.sink, self.schema, **WRITER_OPTIONS)
        self.rows: list[tuple[bytes, str, int]] = []
        self.held = 0

    def begin(self) -> list[bytes]:
        return self.sink.take()

    def sample(self, i: int, image: bytes, width: int, height: int, boxes: np.ndarray
               ) -> list[bytes]:
        self.rows.append((image, self.names[i], self.labels[i]))
        self.held += len(image)
        return self._flush() if self.held >= self.limit else []

    def _flush(self) -> list[bytes]:
        if self.rows:
            pa = self.pa
            images, paths, labels = zip(*self.rows, strict=True)
            image = pa.StructArray.from_arrays(
                [binary_array(pa, images), pa.array(paths, pa.string())],
                fields=list(self.schema.field("image").type))
            table = pa.Table.from_arrays([image, pa.array(labels, pa.int64())],
                                         schema=self.schema)
            self.writer.write_table(table, row_group_size=len(self.rows))
            self.rows, self.held = [], 0
        return self.sink.take()

    def end(self, offset: int) -> list[bytes]:
        pieces = self._flush()
        self.writer.close()
        return pieces + self.sink.take()


@dataclass(frozen=True)
class ParquetFormat(engine.ShardFormat, record=layout.PARQUET_RECORD,
                    report=layout.PARQUET_REPORT, unit="samples", title="Parquet shards",
                    splits=SPLITS, sized=True, needs_boxes=False):
    """DATASET/parquet/data/SPLIT-NNNNN-of-NNNNN.parquet; the state in DATASET/.imagenet-prep."""

    root: Path
    options: dict[str, Any]  # seed, shard_size, row_group_size, pyarrow (the version)

    @property
    def out(self) -> Path:
        return self.root / layout.PARQUET_DIR

    def folder(self, split: str) -> Path:
        return self.out / layout.PARQUET_DATA

    def shard_name(self, split: str, k: int, shards: int) -> str:
        return layout.parquet_shard_name(split, k, shards)

    def is_ours(self, name: str) -> bool:
        return bool(layout.PARQUET_SHARD_RE.fullmatch(name))

    def is_shard(self, split: str, name: str) -> bool:
        return self.is_ours(name)

    def bounds(self, split: str, cat: Catalog, order: np.ndarray) -> Bounds:
        bounds = size_bounds(planned_sizes(cat, order, self.options.get("resize")) + ROW_OVERHEAD,
                             self.options["shard_size"])
        if len(bounds) > MAX_SHARDS:
            raise OptionError(f"{split}: {len(bounds):,} Parquet files, more than the "
                              f"{MAX_SHARDS:,} five-digit names hold; choose a larger "
                              "--shard-size")
        return bounds

    def encoder(self, task: engine.ShardTask) -> engine.ShardEncoder:
        return _Rows(task, self.options["row_group_size"], self.options["pyarrow"])

    def finish_split(self, split: str, entries: list[dict]) -> None:
        pass  # the card covers every split: written once the run is over

    def sources(self, dataset: Path, archives: Path | None, from_folders: bool,
                splits: tuple[str, ...]) -> str:
        return ", ".join(str(dataset / s) for s in splits) if from_folders else \
            f"the {', '.join(splits)} archives in {archives}"

    def asked(self) -> dict[str, Any]:
        return {**self.options, "folder": layout.PARQUET_DIR}

    def describe(self, split: str | None = None) -> dict[str, Any]:
        return {"folder": str(self.out if split is None else self.folder(split))}


def write_card(dataset: Path) -> Path:
    """The card for the splits the state records (rewritten only when it changes)."""
    state = stage_state.load(dataset, layout.PARQUET_RECORD) or {"splits": {}}
    path = dataset / layout.PARQUET_DIR / layout.HF_CARD
    text = hf_card.parquet_card_text(list(state["splits"]))
    write_if_changed(path, text)
    return path


def refuse_other_pyarrow(dataset: Path, version: str) -> None:
    """pyarrow's bytes may change between versions: one dataset, one version."""
    state = stage_state.load(dataset, layout.PARQUET_RECORD)
    before = (state or {}).get("options", {}).get("pyarrow")
    if before is not None and before != version:
        raise PrepError(
            f"{dataset / layout.PARQUET_DIR}: written with pyarrow {before}, this is pyarrow "
            f"{version} (whose bytes may differ); install pyarrow=={before} to finish it, or "
            + stage_state.start_over(dataset, layout.PARQUET_RECORD))


def default_splits(archives: Path | None, dataset: Path, from_folders: bool
                   ) -> tuple[str, ...]:
    """train and val, and test when its archive (or folder) is there: the Hub has all three."""
    from imagenet_prep.sources.archives import find_archive

    has_test = (dataset / "test").is_dir() if from_folders else \
        archives is not None and find_archive(archives, "test") is not None
    return ("train", "val", "test") if has_test else ("train", "val")


def write_parquet(
    dataset: Path, *, archives: Path | None = None, from_folders: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE, row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    seed: int = 0, workers: Workers = None, on_bad_image: str = "fail",
    splits: tuple[str, ...] | None = None, labels: str = "auto", subset: Subset | None = None,
    resize: ResizeSpec | None = None,
) -> dict[str, Any]:
    """Write the missing Parquet files and the card; returns the run report.  A subset
    (None: the dataset's recorded one, else all) restricts the images; its labels stay the
    Hub's 0..999, which the schema's ClassLabel names (docs/subsets.md).  With `resize`,
    `dataset` is the variant's folder (runtime/variant.py)."""
    version = pyarrow_version()
    policy = engine.bad_image_policy(on_bad_image)
    if shard_size < 1 or row_group_size < 1:
        raise PrepError("the shard size and the row group size must be at least 1 byte")
    if not from_folders and archives is None:
        raise PrepError("parquet needs --archives DIR, or --from-folders")
    dataset = as_path(dataset)
    refuse_other_pyarrow(dataset, version)
    if resize is not None and from_folders:
        raise OptionError("--resize reads the archives: give --archives, not --from-folders")
    variant.claim(dataset, resize)
    if splits is None:
        splits = default_splits(archives, dataset, from_folders)
    options = {"seed": seed, "shard_size": shard_size, "row_group_size": row_group_size,
               "pyarrow": version, **({"resize": resize.text} if resize else {})}
    report = engine.write_shards(
        ParquetFormat(dataset, options), dataset=dataset, archives=archives,
        from_folders=from_folders, labels=labels, splits=splits, workers=workers,
        policy=policy, boxes_csv=None, subset=subset)
    report["card"] = str(write_card(dataset))
    return variant.with_summary(report, dataset, archives, resize)
