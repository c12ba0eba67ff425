"""Shared fixtures: synthetic ILSVRC2012 replicas of two sizes, built once per session.

Helpers that tests import (run_cli, tree_digest, ...) live in helpers.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imagenet_prep.replica.build import make_replica

SIZES = {
    "small": dict(classes=4, train_per_class=12, val_per_class=3, test=5, size=(64, 48)),
    "medium": dict(classes=20, train_per_class=50, val_per_class=10, test=20, size=(96, 72)),
}


@pytest.fixture(scope="session")
def replicas(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, opts in SIZES.items():
        path = tmp_path_factory.mktemp(f"replica-{name}")
        make_replica(path, seed=7, workers=2, **opts)
        out[name] = path
    return out


@pytest.fixture(params=sorted(SIZES))
def replica(request, replicas) -> Path:
    """Each test using this runs on both replica sizes."""
    return replicas[request.param]


@pytest.fixture
def small_replica(replicas) -> Path:
    return replicas["small"]


@pytest.fixture
def archives_copy(tmp_path, small_replica) -> Path:
    """A private copy of the small replica that a test may damage."""
    dst = tmp_path / "archives"
    shutil.copytree(small_replica, dst)
    return dst


@pytest.fixture(scope="session")
def hf_dataset(replicas, tmp_path_factory) -> tuple[Path, Path]:
    """(archives, DATASET): the small replica through `prepare --only all --wds --parquet --mds`
    (2 workers, small shards), shared by the Hugging Face and MosaicML tests."""
    from imagenet_prep.cli import main

    arch = replicas["small"]
    ds = tmp_path_factory.mktemp("hf") / "dataset"
    assert main(["prepare", "--archives", str(arch), "--out", str(ds), "--only", "all", "--wds",
                 "--parquet", "--mds", "--train-shards", "2", "--val-shards", "1",
                 "--wds-shard-samples", "10", "--no-report", "--workers", "2"]) == 0
    return arch, ds
