"""What check proves of the outputs made for other loaders (issue 15): the TFDS data
directory, the TFDS metadata of the reference TFRecords and torchvision's meta.bin;
timm's _info.json is proved with its WebDataset shards (check/wds.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagenet_prep.formats.tfds_reference import metadata_files
from imagenet_prep.layout import (
    TFDS_DIR,
    TFDS_RECORD,
    TFDS_REFERENCE,
    TFDS_REFERENCE_VERSION,
    TFRECORD_RECORD,
    TORCHVISION_RECORD,
)
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.pool import Workers


def loaders_from_records(dataset: Path) -> dict[str, dict[str, Any]]:
    """The outputs of this kind a stage recorded making (proved even when not asked)."""
    out: dict[str, dict[str, Any]] = {}
    if stage_state.load(dataset, TFDS_RECORD) is not None:
        out["tfds"] = {}
    if stage_state.load(dataset, TORCHVISION_RECORD) is not None:
        out["torchvision"] = {}
    if (dataset / TFDS_DIR / TFDS_REFERENCE).is_dir():
        out["tfds_reference"] = {}
    return out


def check_loaders(dataset: Path, outputs: dict[str, dict[str, Any]], workers: Workers,
                  damaged: list[Path]) -> list[str]:
    """Problems with the asked-for TFDS and torchvision outputs (empty when all is well)."""
    problems: list[str] = []
    if "tfds" in outputs:
        from imagenet_prep.check.tfds import check_tfds

        problems += check_tfds(dataset, workers=workers, damaged=damaged,
                               required=tuple(outputs["tfds"].get("splits", ())))
    if "torchvision" in outputs:
        from imagenet_prep.check.torchvision import check_meta_bin

        problems += check_meta_bin(dataset)
    if "tfds_reference" in outputs:
        problems += _check_reference(dataset)
    return problems


def _check_reference(dataset: Path) -> list[str]:
    """The TFDS metadata of the TFRecord shards says what the tfrecord state records (the
    shards themselves are proved by the tfrecord check)."""
    folder = dataset / TFDS_DIR / TFDS_REFERENCE / TFDS_REFERENCE_VERSION
    files = metadata_files(stage_state.load(dataset, TFRECORD_RECORD) or {})
    if files is None:
        return [f"{folder}: describes TFRecord shards that are not all written"]
    problems = []
    for name, text in files.items():
        try:
            if (folder / name).read_text() != text:
                problems.append(f"{folder / name}: does not describe the TFRecord shards")
        except (FileNotFoundError, UnicodeDecodeError):
            problems.append(f"{folder / name}: missing or not text")
    return problems
