"""Check the Parquet and MDS shards and the Hugging Face cards.

Every shard is proven by the size and CRC32C its state records, the shard set by
its names (numbered from 0, no gap, none extra) and the totals by the catalog counts;
then each format's own structure: for Parquet (with pyarrow, which wrote it) each
file's row count, schema and labels; for MDS every sample's columns (labels, file
names, indices, lengths) and a decoded image per few shards, and each index.json
against the shards.  A card must be the text its writer makes today.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from imagenet_prep import layout
from imagenet_prep.check.shard_bytes import shard_bytes_problems
from imagenet_prep.formats import hf_card, mds
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.files import is_tmp_name
from imagenet_prep.runtime.pool import run_tasks
from imagenet_prep.runtime.storage import listdir, local_file
from imagenet_prep.sources.metadata import NUM_CLASSES


@dataclass(frozen=True)
class _Shard:
    kind: str  # parquet or mds
    path: Path
    split: str
    entry: dict | None
    options: dict
    decode: bool


def _check_shard(task: _Shard) -> tuple[Path, list[str]]:
    try:
        with local_file(task.path) as local:  # an object: one GET into a temporary copy
            problems = shard_bytes_problems(task.path, task.entry, local)
            if not problems:  # the bytes are the ones written: their structure is worth reading
                problems = (_parquet_problems if task.kind == "parquet" else _mds_problems)(
                    task, local)
    except FileNotFoundError:
        return task.path, [f"{task.path}: missing"]
    return task.path, problems


def _label_ok(split: str, label: int) -> bool:
    return label == -1 if split == "test" else 0 <= label < NUM_CLASSES


def _parquet_problems(task: _Shard, local: Path) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # size and CRC32C proved the bytes; the structure needs pyarrow
        return []
    from imagenet_prep.formats.hf_card import hub_features_metadata

    try:
        pf = pq.ParquetFile(local)
        meta = pf.schema_arrow.metadata or {}
        labels = pf.read(columns=["label"]).column("label").to_pylist()
    except Exception as e:  # noqa: BLE001 (pyarrow raises several kinds)
        return [f"{task.path}: not a readable Parquet file ({e})"]
    problems = []
    if meta.get(b"huggingface") != hub_features_metadata():
        problems.append(f"{task.path}: its schema lacks the Hub's features")
    want = task.entry["samples"] if task.entry else len(labels)
    if len(labels) != want:
        problems.append(f"{task.path}: {len(labels)} rows, the state records {want}")
    bad = [x for x in labels if not _label_ok(task.split, x)]
    if bad:
        problems.append(f"{task.path}: label {bad[0]} in {task.split}")
    return problems


def _mds_problems(task: _Shard, local: Path) -> list[str]:
    limit = task.options["shard_size"]
    n = 0
    try:
        with open(local, "rb") as f:
            fd = f.fileno()
            for s in mds.iter_shard(fd, os.fstat(fd).st_size, limit):
                where = f"{task.path}: sample {n} ({s.filename})"
                n += 1
                if not _label_ok(task.split, s.label):
                    return [f"{where}: label {s.label} in {task.split}"]
                if not s.filename.endswith(".JPEG") or s.index < 0:
                    return [f"{where}: index {s.index}"]
                if task.decode and n == 1:
                    from PIL import Image

                    try:
                        with Image.open(io.BytesIO(os.pread(fd, s.image_size,
                                                            s.image_offset))) as im:
                            im.load()
                            if im.format != "JPEG":
                                return [f"{where}: x is {im.format}, not JPEG"]
                    except Exception as e:  # noqa: BLE001 (Pillow raises several kinds)
                        return [f"{where}: x does not decode ({e})"]
    except ValueError as e:
        return [f"{task.path}: not an MDS shard of ours ({e})"]
    want = task.entry["samples"] if task.entry else n
    return [] if n == want else [f"{task.path}: {n} samples, the state records {want}"]


def _shard_set(folder: Path, names: list[str], pattern, kind: str) -> list[str]:
    """Leftover temporary files and shards that no run recorded."""
    problems = []
    if not folder.is_dir():
        return problems
    for name in sorted(listdir(folder)):
        if is_tmp_name(name):
            problems.append(f"{folder / name}: leftover temporary file")
        elif pattern.fullmatch(name) and name not in names:
            problems.append(f"{folder / name}: a {kind} shard no run recorded; move it away")
    return problems


def check_shards(dataset: Path, kind: str, workers: int | None = None,
                 damaged: list[Path] | None = None, sample: int = 20) -> list[str]:
    """Problems with DATASET's Parquet (`kind` "parquet") or MDS ("mds") shards."""
    record = layout.PARQUET_RECORD if kind == "parquet" else layout.MDS_RECORD
    state = stage_state.load(dataset, record)
    root = dataset / (layout.PARQUET_DIR if kind == "parquet" else layout.MDS_DIR)
    if state is None:
        return [f"{root}: no {record} record: the {kind} stage never finished a shard"]
    problems: list[str] = []
    tasks: list[_Shard] = []
    for split, info in state["splits"].items():
        entries = sorted((n, e) for n, e in state["shards"].items() if e["split"] == split)
        names = _expected_names(kind, split, info.get("shards", len(entries)))
        got = {n for n, _ in entries}
        if missing := [n for n in names if n not in got]:  # never finished
            problems.append(f"{root}: {len(missing)} {split} shards never written, first "
                            f"{missing[0]}")
        step = max(1, len(names) // sample)
        tasks += [_Shard(kind, _shard_path(root, kind, n), split, state["shards"].get(n),
                         state.get("options", {}), j % step == 0)
                  for j, n in enumerate(names)]
        skipped = sum(len(e["skipped"]) for _, e in entries)
        if sum(e["samples"] for _, e in entries) != info["images"] - skipped:
            problems.append(f"{root}: {split}: the shards hold "
                            f"{sum(e['samples'] for _, e in entries)} samples, the split "
                            f"{info['images'] - skipped}")
        if kind == "mds":
            problems += _index_problems(root / layout.MDS_SPLIT[split], names, state)
    for path, more in run_tasks(_check_shard, tasks, workers):
        problems += more
        if more and damaged is not None:
            damaged.append(path)
    folders = {p.parent for p in (t.path for t in tasks)}
    for folder in sorted(folders):
        recorded = [n.rsplit("/", 1)[-1] for n in state["shards"]]
        problems += _shard_set(folder, recorded, layout.PARQUET_SHARD_RE if kind == "parquet"
                               else layout.MDS_SHARD_RE, kind)
    if kind == "parquet":
        problems += card_problems(root / layout.HF_CARD,
                                  hf_card.parquet_card_text(list(state["splits"])))
    return problems


def _expected_names(kind: str, split: str, shards: int) -> list[str]:
    if kind == "parquet":
        return [layout.parquet_shard_name(split, k, shards) for k in range(shards)]
    return [f"{layout.MDS_SPLIT[split]}/{layout.mds_shard_name(k)}" for k in range(shards)]


def _shard_path(root: Path, kind: str, name: str) -> Path:
    return root / layout.PARQUET_DATA / name if kind == "parquet" else root / name


def _index_problems(folder: Path, names: list[str], state: dict) -> list[str]:
    """index.json lists exactly the split's shards, with their sizes and counts."""
    path = folder / layout.MDS_INDEX
    entries = [state["shards"].get(n) for n in names]
    if any(e is None for e in entries):
        return []  # said above: shards never written
    want = mds.index_text([mds.index_entry(Path(n).name, e["samples"], e["bytes"],
                                           state["options"]["shard_size"])
                           for n, e in zip(names, entries, strict=True)])
    try:
        text = path.read_text()
    except FileNotFoundError:
        return [f"{path}: missing"]
    except UnicodeDecodeError:
        return [f"{path}: not an MDS index (not text)"]
    if text != want:
        try:
            listed = len(json.loads(text)["shards"])
        except (ValueError, KeyError, TypeError):
            return [f"{path}: not an MDS index"]
        return [f"{path}: lists {listed} shards, not the {len(names)} written (or other sizes)"]
    return []


def card_problems(path: Path, text: str) -> list[str]:
    """A card must hold exactly the text its writer makes."""
    try:
        got = path.read_text()
    except FileNotFoundError:
        return [f"{path}: missing (the Hugging Face dataset card)"]
    except UnicodeDecodeError:
        got = ""
    return [] if got == text else [f"{path}: not the dataset card imagenet-prep writes"]


def check_wds_card(folder: Path) -> list[str]:
    """The card beside WebDataset shards, for the splits their state records."""
    state = stage_state.load(folder, layout.WDS_RECORD)
    if state is None:
        return []
    return card_problems(folder / layout.HF_CARD, hf_card.wds_card_text(list(state["splits"])))


def check_root_card(dataset: Path) -> list[str]:
    """DATASET/README.md by the SHA-256 its record holds (none: it was left to its owner)."""
    rec = stage_state.load(dataset, layout.CARD_RECORD)
    path = dataset / layout.HF_CARD
    if rec is None:
        return [f"{path}: the dataset card was asked for and never written"]
    if "sha256" not in rec:
        return []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [f"{path}: missing (the Hugging Face dataset card)"]
    if hashlib.sha256(data).hexdigest() != rec["sha256"]:
        return [f"{path}: changed since imagenet-prep wrote it"]
    return []
