"""A split read from its class folders (DATASET/train/WNID/, DATASET/val/WNID/).

Counts come from the record the stage saved when it finished (no listing of
1.28 M files); the sample lists only the class folders it draws from, one at a
time, and reads the first 64 KiB of each sampled file for its header.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from imagenet_prep.errors import BadImageError, PrepError
from imagenet_prep.layout import class_tree_record
from imagenet_prep.report.model import Sample
from imagenet_prep.report.thumbs import HEAD_BYTES, Facts, facts, facts_from_head
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.progress import bar
from imagenet_prep.sources.catalog import class_dirs
from imagenet_prep.sources.class_tree import class_files

KEEP_ODD = 100  # sampled files that are not plain JPEGs whose bytes are kept for thumbnails


def _read(path: Path, limit: int | None = None) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read() if limit is None else f.read(limit)
    except OSError as e:
        raise PrepError(f"{path}: cannot read: {e.strerror}") from None


class FolderSplit:
    """The images of DATASET/SPLIT/WNID/*."""

    source = "folders"

    def __init__(self, dataset: Path, split: str) -> None:
        self.split = split
        self.root = dataset / split
        self.dataset = dataset

    def counts(self) -> tuple[dict[str, int], str]:
        """(WNID -> images, where that comes from): the stage's record, else a listing."""
        record = class_tree_record(self.split)
        rec = stage_state.load(self.dataset, record)
        present = class_dirs(self.root)
        if rec is not None and rec.get("classes") and sorted(rec["classes"]) == present:
            return dict(sorted(rec["classes"].items())), f"record {record}.json"
        return {w: len(class_files(self.root / w)) for w in present}, f"listing {self.root}"

    def sample(self, counts: dict[str, int], n: int, seed: int
               ) -> tuple[Sample, list[tuple[str, str, str, bytes]]]:
        """Header facts of up to `n` images drawn uniformly (seeded) without replacement.

        Returns the sample and the sampled files that are not plain JPEGs, as
        (WNID, name, reason, bytes) for the converted-files section.
        """
        total = sum(counts.values())
        out = Sample(self.split, total)
        odd: list[tuple[str, str, str, bytes]] = []
        if not total or n <= 0:
            return out, odd
        rng = np.random.default_rng([seed, 1 if self.split == "train" else 2])
        picks = np.sort(rng.choice(total, size=min(n, total), replace=False))
        wnids = list(counts)
        starts = np.cumsum([0] + [counts[w] for w in wnids])
        cls = np.searchsorted(starts, picks, side="right") - 1
        with bar(len(picks), f"report: sample {self.split}") as pb:
            for c in np.unique(cls):
                self._sample_class(wnids[int(c)], picks[cls == c] - starts[c], out, odd)
                pb.update(int((cls == c).sum()))
        return out, odd

    def _sample_class(self, wnid: str, indices: np.ndarray, out: Sample,
                      odd: list[tuple[str, str, str, bytes]]) -> None:
        """Header facts of the images at `indices` of one class folder's sorted listing."""
        names = class_files(self.root / wnid)
        for j in indices:
            if j >= len(names):  # the folder holds fewer files than its record says
                continue
            path = self.root / wnid / names[int(j)]
            got: Facts | None = facts_from_head(_read(path, HEAD_BYTES))
            size = os.stat(path).st_size
            if got is None:
                data = _read(path)
                try:
                    got = facts(data, str(path))
                except BadImageError as e:
                    out.unreadable.append((names[int(j)], str(e)))
                    continue
                if got.reason:  # bytes kept for a thumbnail, for the first ones only
                    odd.append((wnid, names[int(j)], got.reason,
                                data if len(odd) < KEEP_ODD else b""))
            out.widths.append(got.width)
            out.heights.append(got.height)
            out.sizes.append(size)

    def pick(self, wnid: str, k: int, seed: int) -> list[tuple[str, bytes]]:
        """(name, bytes) of up to `k` images of one class, a seeded choice shown in name order."""
        folder = self.root / wnid
        if not folder.is_dir():
            return []
        names = class_files(folder)
        chosen = sorted(random.Random(f"{seed}/{self.split}/{wnid}").sample(
            names, min(k, len(names))))
        return [(n, _read(folder / n)) for n in chosen]

    def find(self, names: Iterable[str]) -> dict[str, tuple[str, bytes]]:
        """name -> (WNID folder, bytes) for the given file names found in the tree.

        A training name carries its class; validation names are looked up in one pass
        over the class folders (50,000 entries).
        """
        wanted = set(names)
        found: dict[str, tuple[str, bytes]] = {}
        if self.split == "train":
            for name in wanted:
                path = self.root / name.split("_", 1)[0] / name
                if path.is_file():
                    found[name] = (path.parent.name, _read(path))
            return found
        for wnid in class_dirs(self.root) if wanted else ():
            with os.scandir(self.root / wnid) as it:
                for e in it:
                    if e.name in wanted and e.is_file(follow_symlinks=False):
                        found[e.name] = (wnid, _read(Path(e.path)))
        return found
