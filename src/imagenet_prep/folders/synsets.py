"""`synsets`: DATASET/synsets.txt, `WNID description` per class present, sorted."""

from __future__ import annotations

from pathlib import Path

from imagenet_prep.errors import PrepError
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.files import write_atomic
from imagenet_prep.sources import metadata
from imagenet_prep.sources.archives import DEVKIT
from imagenet_prep.sources.catalog import class_dirs
from imagenet_prep.sources.labels import read_devkit


def classes_present(dataset: Path) -> list[str]:
    """WNIDs with a train folder, else those the extraction record lists."""
    train = dataset / "train"
    if train.is_dir():
        found = class_dirs(train)
        if found:
            return found
    rec = stage_state.load(dataset, "extract-train")
    if rec:
        return sorted(rec["classes"])
    raise PrepError(f"{train}: no class folders; run `imagenet-prep extract` first")


def descriptions(archives: Path | None) -> tuple[dict[str, str], str]:
    """WNID -> description from the devkit's meta.mat when present, else the bundled list."""
    if archives is not None and (archives / DEVKIT).is_file():
        classes, _ = read_devkit(archives / DEVKIT)
        return {w: words for w, words in classes.values()}, "devkit"
    return metadata.descriptions(), "bundled"


def write_synsets(dataset: Path, archives: Path | None = None) -> dict:
    wnids = classes_present(dataset)
    words, source = descriptions(archives)
    missing = [w for w in wnids if w not in words]
    if missing:
        raise PrepError(f"{source} descriptions lack {missing[0]} ({len(missing)} classes)")
    text = "".join(f"{w} {words[w]}\n" for w in wnids)
    write_atomic(dataset / "synsets.txt", text)
    return {"classes": len(wnids), "source": source}
