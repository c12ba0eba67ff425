"""Random damage to a prepared dataset: `check` never says OK, and one rerun mends it all.

Each case copies a clean dataset (hard links kept), damages it one seeded random way
(delete a file, a folder or a shard; truncate, zero or flip a byte of an output; swap
two shards), then asserts that `check` lists a problem and that one `prepare` rerun
with the same options gives outputs identical to the clean run's, hard links included,
and a `check` that passes.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from helpers import tree_digest
from helpers_damage import DAMAGES, damage, output_files

from imagenet_prep.check import check_dataset
from imagenet_prep.cli import main
from imagenet_prep.layout import STATE_DIR
from imagenet_prep.replica.build import make_replica

CASES = 60
PREPARE = ("--only", "all", "--wds", "--dali-index", "--train-shards", "3", "--val-shards", "2",
           "--wds-shard-samples", "10", "--no-report", "--workers", "1", "--verify", "none")


def _prepare(archives: Path, dataset: Path) -> None:
    assert main(["prepare", "--archives", str(archives), "--out", str(dataset), *PREPARE]) == 0


def _check(dataset: Path) -> list[str]:
    """`check` as the command runs it: it also leaves the damaged files for the next run."""
    from imagenet_prep.cli import check as check_cli

    problems, checked = check_dataset(dataset, workers=1)
    check_cli._note_damaged(dataset, checked.get("damaged", []))
    return problems


def _links(dataset: Path) -> dict[str, bool]:
    """Flat file -> is it the same file as its class-tree image (hard links kept)."""
    out = {}
    for flat, tree in (("train_flatten", "train"), ("val_flatten", "val")):
        for name in sorted(os.listdir(dataset / flat)):
            wnid = name.split("_")[0]
            src = dataset / tree / wnid / (name if tree == "train" else name[len(wnid) + 1:])
            out[f"{flat}/{name}"] = os.path.samefile(dataset / flat / name, src)
    return out


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, Path, dict, dict]:
    root = tmp_path_factory.mktemp("damage")
    archives, dataset = root / "archives", root / "clean"
    make_replica(archives, classes=4, train_per_class=8, val_per_class=3, test=4,
                 size=(32, 24), seed=13, workers=1)
    _prepare(archives, dataset)
    assert _check(dataset) == []
    return archives, dataset, tree_digest(dataset), _links(dataset)


@pytest.mark.parametrize("case", range(CASES))
def test_random_damage_is_found_and_mended(clean, tmp_path, case):
    archives, dataset, digests, links = clean
    work = tmp_path / "ds"
    subprocess.run(["cp", "-a", str(dataset), str(work)], check=True)  # -a keeps hard links
    rng = random.Random(case)
    kind = DAMAGES[case % len(DAMAGES)]
    what = damage(work, kind, rng, output_files(work))
    problems = _check(work)
    assert problems, f"check said OK after {what}"
    _prepare(archives, work)
    assert not (work / STATE_DIR / "damaged.json").exists()  # the rerun wrote them again
    assert tree_digest(work) == digests, f"not mended after {what}"
    assert _links(work) == links, f"hard links not mended after {what}"
    assert _check(work) == [], f"check after the rerun ({what})"
