"""`synsets`: DATASET/synsets.txt, `WNID description` per class present, sorted."""

from __future__ import annotations

import hashlib
from pathlib import Path

from imagenet_prep.errors import PrepError
from imagenet_prep.layout import SYNSETS_RECORD, SYNSETS_TXT, extract_record
from imagenet_prep.runtime import expectation, stage_state, subset_record
from imagenet_prep.runtime.files import write_atomic
from imagenet_prep.sources import metadata
from imagenet_prep.sources.archives import DEVKIT, find_archive
from imagenet_prep.sources.catalog import class_dirs
from imagenet_prep.sources.labels import read_devkit
from imagenet_prep.sources.subset import Subset
from imagenet_prep.sources.tarindex import iter_nested


def classes_present(dataset: Path, archives: Path | None = None,
                    subset: Subset | None = None) -> list[str]:
    """The WNIDs the training archive held (its extraction record), else the train folders,
    else (a dataset of shards only, in a bucket too) the class tars of the train archive
    that `subset` keeps: their names only, read from the outer headers or the cached index.

    The record first: a class folder deleted by accident must not drop out of synsets.txt.
    """
    rec = stage_state.load(dataset, extract_record("train"))
    if rec and rec.get("classes"):
        return sorted(rec["classes"])
    train = dataset / "train"
    if train.is_dir():
        found = class_dirs(train)
        if found:
            return found
    archive = find_archive(archives, "train") if archives is not None else None
    if archive is not None:
        names = (inner.name for inner, _ in iter_nested(archive))
        return sorted(n[:-4] for n in names if n.endswith(".tar")
                      and (subset is None or subset.keeps_class(n[:-4])))
    raise PrepError(f"{train}: no class folders; run `imagenet-prep extract` first, or give "
                    "--archives with the training archive")


def descriptions(archives: Path | None) -> tuple[dict[str, str], str]:
    """WNID -> description from the devkit's meta.mat when present, else the bundled list."""
    if archives is not None and (archives / DEVKIT).is_file():  # a bucket's too
        classes, _ = read_devkit(archives / DEVKIT)
        return {w: words for w, words in classes.values()}, "devkit"
    return metadata.descriptions(), "bundled"


def write_synsets(dataset: Path, archives: Path | None = None, subset: Subset | None = None
                  ) -> dict:
    """synsets.txt of the classes present (a subset's: `subset` is held to the recorded one)."""
    subset = subset_record.claim(dataset, subset)
    expectation.expect(dataset, {"synsets": {}}, {})
    wnids = classes_present(dataset, archives, subset)
    words, source = descriptions(archives)
    missing = [w for w in wnids if w not in words]
    if missing:
        raise PrepError(f"{source} descriptions lack {missing[0]} ({len(missing)} classes)")
    text = "".join(f"{w} {words[w]}\n" for w in wnids).encode()
    write_atomic(dataset / SYNSETS_TXT, text)
    rec = {"classes": len(wnids), "source": source, "bytes": len(text),
           "sha256": hashlib.sha256(text).hexdigest()}
    stage_state.save(dataset, SYNSETS_RECORD, rec)  # what `check` proves the file against
    return rec
