"""Validation labels from every source we know, cross-checked.

Labels are defined in ascending file-name order (docs/labels.md).  Sources:
the devkit (ground-truth IDs mapped through `meta.mat`), the validation box XMLs
(first `<object><name>` of `val/NAME.xml`), and the bundled TensorFlow list,
which only describes the real 50,000 images.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from imagenet_prep.errors import CorruptArchiveError, LabelError
from imagenet_prep.sources import metadata
from imagenet_prep.sources.archives import BBOX_VAL, DEVKIT
from imagenet_prep.sources.tarindex import iter_gz_members

SOURCES = ("auto", "devkit", "bbox", "bundled")


def read_devkit(archive: Path) -> tuple[dict[int, tuple[str, str]], list[int]]:
    """(ILSVRC2012_ID -> (WNID, words) of the leaf classes, ground-truth IDs by file name)."""
    from scipy.io import loadmat  # imported here: only the devkit route needs scipy

    meta = truth = None
    for name, data in iter_gz_members(archive):
        if name.endswith("data/meta.mat"):
            meta = data
        elif name.endswith("data/ILSVRC2012_validation_ground_truth.txt"):
            truth = data
    if meta is None or truth is None:
        raise CorruptArchiveError(
            f"{archive}: no data/meta.mat or data/ILSVRC2012_validation_ground_truth.txt"
        )
    try:
        synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
        classes = {
            int(s["ILSVRC2012_ID"]): (str(s["WNID"]), str(s["words"]))
            for s in synsets if int(s["num_children"]) == 0
        }
        ids = [int(x) for x in truth.split()]
    except (KeyError, ValueError, TypeError) as e:
        raise CorruptArchiveError(f"{archive}: unreadable devkit metadata ({e})") from None
    return classes, ids


def devkit_labels(archive: Path) -> list[str]:
    classes, ids = read_devkit(archive)
    try:
        return [classes[i][0] for i in ids]
    except KeyError as e:
        raise LabelError(
            f"{archive}: ground truth uses ID {e} that meta.mat does not define"
        ) from None


def _first_name(xml: bytes, where: str) -> str:
    try:
        node = ET.fromstring(xml).find("object/name")
    except ET.ParseError as e:
        raise LabelError(f"{where}: unreadable XML ({e})") from None
    if node is None or not (node.text or "").strip():
        raise LabelError(f"{where}: no <object><name>")
    return node.text.strip()  # type: ignore[union-attr]


def bbox_labels(names: Sequence[str], *, folder: Path | None, archive: Path | None) -> list[str]:
    """The first object name of `val/STEM.xml` for each image name."""
    stems = {n.rsplit(".", 1)[0]: i for i, n in enumerate(names)}
    found: list[str | None] = [None] * len(names)
    if folder is not None:
        for stem, i in stems.items():
            path = folder / f"{stem}.xml"
            try:
                found[i] = _first_name(path.read_bytes(), str(path))
            except FileNotFoundError:
                raise LabelError(f"{path}: missing: no box XML for {names[i]}") from None
    else:
        assert archive is not None
        for member, data in iter_gz_members(archive):
            stem = member.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            if member.endswith(".xml") and stem in stems:
                found[stems[stem]] = _first_name(data, f"{archive}:{member}")
        missing = [names[i] for i, f in enumerate(found) if f is None]
        if missing:
            raise LabelError(f"{archive}: no box XML for {missing[0]} ({len(missing)} missing)")
    return [f for f in found if f is not None]


def bundled_labels(names: Sequence[str]) -> list[str]:
    expected = [metadata.val_name(i) for i in range(1, metadata.NUM_VAL_IMAGES + 1)]
    if list(names) != expected:
        raise LabelError(
            f"the bundled labels describe the real 50,000 validation images; these "
            f"{len(names)} images are another set: use the devkit or the box XMLs"
        )
    return list(metadata.val_labels())


def available_sources(archives: Path | None, dataset: Path | None) -> list[str]:
    out = []
    if archives is not None and (archives / DEVKIT).is_file():
        out.append("devkit")
    if (dataset is not None and (dataset / "bbox_val" / "val").is_dir()) or (
        archives is not None and (archives / BBOX_VAL).is_file()
    ):
        out.append("bbox")
    return out


def val_labels(
    names: Sequence[str], *, archives: Path | None = None, dataset: Path | None = None,
    source: str = "auto",
) -> list[str]:
    """WNID for each validation image name (names sorted), from `source`.

    `auto` reads the devkit and the box XMLs when present and refuses any
    disagreement; the bundled list is used when neither is present.
    """
    names = sorted(names)
    present = available_sources(archives, dataset)
    if source == "auto":
        chosen = present or ["bundled"]
    elif source in ("devkit", "bbox"):
        if source not in present:
            where = f"{archives}/{DEVKIT}" if source == "devkit" else "bbox_val/ or " + BBOX_VAL
            raise LabelError(f"label source {source!r} not found: {where}")
        chosen = [source]
    elif source == "bundled":
        chosen = ["bundled"]
    else:
        raise LabelError(f"unknown label source {source!r}; choose from {', '.join(SOURCES)}")
    results = {s: _labels_from(s, names, archives, dataset) for s in chosen}
    first_source, first = next(iter(results.items()))
    for other, labels in results.items():
        if len(labels) != len(names):
            raise LabelError(
                f"{len(names)} validation images but {len(labels)} labels from the {other}; "
                "the label source does not belong to these images"
            )
        diffs = [i for i, (a, b) in enumerate(zip(first, labels, strict=True)) if a != b]
        if diffs:
            shown = ", ".join(
                f"{names[i]} ({first_source}: {first[i]}, {other}: {labels[i]})" for i in diffs[:3]
            )
            raise LabelError(
                f"validation label sources disagree on {len(diffs)} images, first: {shown}; "
                "choose one with --labels"
            )
    return first


def _labels_from(
    source: str, names: Sequence[str], archives: Path | None, dataset: Path | None,
) -> list[str]:
    if source == "devkit":
        assert archives is not None
        return devkit_labels(archives / DEVKIT)
    if source == "bbox":
        # the archive (an input) when it is there: the extracted XMLs are an output, which
        # the run reading these labels may be about to mend (damaged, deleted)
        if archives is not None and (archives / BBOX_VAL).is_file():
            return bbox_labels(names, folder=None, archive=archives / BBOX_VAL)
        assert dataset is not None
        return bbox_labels(names, folder=dataset / "bbox_val" / "val", archive=None)
    return bundled_labels(names)
