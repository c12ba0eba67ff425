"""Seeded random damage to a dataset's outputs, for the damage property test."""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

from imagenet_prep.layout import STATE_DIR

DAMAGES = ("delete_file", "delete_folder", "delete_shard", "truncate", "zero", "flip",
           "swap_shards")
_SHARD = re.compile(r"(train|validation)-\d{5}-of-\d{5}$|(train|validation|test)-\d{6}\.tar$")


def output_files(root: Path) -> list[Path]:
    """Every output file under root (state folders left out), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != STATE_DIR)
        out += [Path(dirpath) / n for n in sorted(filenames)]
    return out


def _shards(files: list[Path]) -> list[Path]:
    return [f for f in files if _SHARD.search(f.name)]


def damage(root: Path, kind: str, rng: random.Random, files: list[Path]) -> str:
    """Apply one damage of `kind`; returns what was done, for messages."""
    if kind == "delete_folder":
        folders = sorted({f.parent for f in files} - {root})
        target = rng.choice(folders)
        shutil.rmtree(target)
        return f"rm -r {target.relative_to(root)}"
    if kind in ("delete_shard", "swap_shards"):
        shards = _shards(files)
        a = rng.choice(shards)
        if kind == "delete_shard":
            a.unlink()
            return f"rm {a.relative_to(root)}"
        same = [s for s in shards if s != a and s.parent == a.parent
                and s.name.split("-")[0] == a.name.split("-")[0]]
        b = rng.choice(same)
        tmp = a.with_name("swap")
        a.rename(tmp)
        b.rename(a)
        tmp.rename(b)
        return f"swap {a.relative_to(root)} and {b.name}"
    target = rng.choice([f for f in files if f.stat().st_size > 0])
    rel = target.relative_to(root)
    size = target.stat().st_size
    if kind == "delete_file":
        target.unlink()
        return f"rm {rel}"
    with open(target, "r+b") as f:  # in place: a hard-linked image is damaged on both names
        if kind == "truncate":
            n = rng.randrange(size)
            f.truncate(n)
            return f"truncate {rel} to {n} of {size} bytes"
        if kind == "zero":
            f.write(bytes(size))
            return f"zero {rel}"
        at = rng.randrange(size)
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ (1 << rng.randrange(8))]))
        return f"flip a bit of byte {at} of {rel}"
