"""`valtree`: move val/*.JPEG into val/WNID/ by the validation labels.

No journal is needed: every move is a rename inside one folder, and the set of
images is the union of what is still flat and what is already grouped, so a
rerun after any interruption pairs the same names with the same labels, and
moves an image found in another class folder back to its own.  The class of
every image is kept for `check` (runtime/val_classes.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from imagenet_prep.errors import PrepError
from imagenet_prep.layout import VALTREE_RECORD
from imagenet_prep.runtime import expectation, stage_state, subset_record, val_classes
from imagenet_prep.runtime.file_manifest import extracted_names
from imagenet_prep.runtime.files import ensure_dir, is_tmp_name, os_error
from imagenet_prep.sources.archives import find_archive
from imagenet_prep.sources.catalog import flat_members
from imagenet_prep.sources.labels import val_labels
from imagenet_prep.sources.metadata import wnid_to_index
from imagenet_prep.sources.subset import Subset


def _is_image(name: str) -> bool:
    return name.endswith(".JPEG") and not is_tmp_name(name)


def scan_val(val: Path) -> tuple[set[str], dict[str, str], dict[str, list[str]]]:
    """(names still flat in val/, name -> WNID folder for names already grouped, name ->
    the other folders of a name found in more than one), class folders in sorted order."""
    flat: set[str] = set()
    grouped: dict[str, str] = {}
    again: dict[str, list[str]] = {}
    known = wnid_to_index()
    with os.scandir(val) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.is_file(follow_symlinks=False) and _is_image(e.name):
            flat.add(e.name)
        elif e.is_dir(follow_symlinks=False) and e.name in known:
            with os.scandir(e.path) as inner:
                for f in inner:
                    if f.is_file(follow_symlinks=False) and _is_image(f.name):
                        if f.name in grouped:
                            again.setdefault(f.name, []).append(e.name)
                        else:
                            grouped[f.name] = e.name
    return flat, grouped, again


def _refuse_copies(val: Path, again: dict[str, list[str]], grouped: dict[str, str],
                   label: dict[str, str]) -> None:
    """One image in two class folders: the copy outside its labelled folder is named."""
    for name, folders in sorted(again.items()):
        every = [grouped[name], *folders]
        stray = next((f for f in every if f != label[name]), every[0])
        other = label[name] if label[name] in every else next(f for f in every if f != stray)
        raise PrepError(f"{val / stray / name}: also in {val / other}/ (one image in two "
                        "class folders); move this copy away and rerun")


def _labels_of(names: list[str], archives: Path | None, dataset: Path, source: str
               ) -> list[str]:
    """The labels of `names`; a subset's validation images (fewer than the archive holds)
    take theirs from the labels of the whole archive, as the devkit numbers them all."""
    archive = find_archive(archives, "val") if archives is not None else None
    if archive is None or subset_record.chosen(dataset, None).full:
        return val_labels(names, archives=archives, dataset=dataset, source=source)
    every = sorted(m.name for m in flat_members(archive))
    by_name = dict(zip(every, val_labels(every, archives=archives, dataset=dataset,
                                         source=source), strict=True))
    missing = [n for n in names if n not in by_name]
    if missing:
        raise PrepError(f"{dataset / 'val'}: {missing[0]} is not in {archive}")
    return [by_name[n] for n in names]


def valtree(dataset: Path, archives: Path | None = None, source: str = "auto",
            subset: Subset | None = None) -> dict:
    """Group the validation images into class folders; returns a summary."""
    val = dataset / "val"
    if not val.is_dir():
        raise PrepError(f"{val}: folder not found; run `imagenet-prep extract` first")
    subset_record.claim(dataset, subset)
    expectation.expect(dataset, {"valtree": {"labels": source}}, {})
    flat, grouped, again = scan_val(val)
    both = flat & set(grouped)
    if both:
        name = sorted(both)[0]
        raise PrepError(f"{val / name}: also in {val / grouped[name]}/ (one image in val/ and "
                        "in a class folder); move the one in val/ away and rerun")
    names = sorted(flat | set(grouped))
    if not names:
        raise PrepError(f"{val}: no validation images (*.JPEG)")
    _refuse_extra(dataset, names, grouped)
    labels = _labels_of(names, archives, dataset, source)
    _refuse_copies(val, again, grouped, dict(zip(names, labels, strict=True)))
    moved = 0
    made: set[str] = set()
    for name, wnid in zip(names, labels, strict=True):
        src = val / name if name in flat else val / grouped[name] / name
        if name not in flat and grouped[name] == wnid:
            continue
        if wnid not in made:
            ensure_dir(val / wnid)
            made.add(wnid)
        dst = val / wnid / name
        if os.path.lexists(dst):  # not an image scan_val saw: a link, a folder, a device
            raise PrepError(f"{dst}: exists and is not a regular file; move it away and rerun")
        try:
            os.rename(src, dst)
        except OSError as e:
            raise os_error(dst, e) from None
        moved += 1
    counts: dict[str, int] = {}
    for w in labels:
        counts[w] = counts.get(w, 0) + 1
    val_classes.save(dataset, names, labels)  # what `check` proves the folders against
    rec = {"files": len(names), "moved": moved, "classes": counts, "source": source}
    stage_state.save(dataset, VALTREE_RECORD, rec)
    return rec


def _refuse_extra(dataset: Path, names: list[str], grouped: dict[str, str]) -> None:
    """An image in val/ that extraction did not write (its manifests do not list it) has
    no label to be grouped by: named, rather than blamed on the label source."""
    extracted = extracted_names(dataset, "val")
    if not extracted:  # a damaged piece cannot say; none: a val/ made by other means
        return
    for name in names:
        if name not in extracted:
            where = dataset / "val" / grouped.get(name, "") / name
            raise PrepError(f"{where}: not an image of the validation archive (extraction "
                            "did not write it); move it out of val/ and rerun")
