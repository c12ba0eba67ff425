"""SIGKILL at seeded random moments, rerun, and the result equals an uninterrupted run.

A kill is aimed at a random amount of progress (files or shards already written,
chosen by a seeded RNG) so it lands midway through the stage, not before or after.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_cli, tree_digest

from imagenet_prep.check import check_dataset
from imagenet_prep.sinks.tree import extract
from imagenet_prep.sinks.valtree import valtree

KILLS = 5


def count_files(folder: Path) -> int:
    n = 0
    for _, _, names in os.walk(folder):
        n += len(names)
    return n


def kill_when(args: list, ready: Callable[[], bool], timeout: float = 60) -> bool:
    """Run imagenet-prep until `ready()`, then SIGKILL it; True if it was killed midway."""
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_prep", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    return proc.wait() == -signal.SIGKILL


def no_tmp_files(root: Path) -> bool:
    return not list(root.rglob("*.ipart"))


@pytest.fixture(scope="module")
def clean_runs(replicas, tmp_path_factory):
    """Uninterrupted reference results, one per stage."""
    arch = replicas["medium"]
    base = tmp_path_factory.mktemp("clean")
    ex, vt, fl = base / "extract", base / "valtree", base / "flatten"
    run_cli("extract", "--archives", arch, "--out", ex)
    for ds in (vt, fl):
        run_cli("extract", "--archives", arch, "--out", ds)
        run_cli("valtree", ds, "--archives", arch)
    run_cli("flatten", fl)
    return {"extract": tree_digest(ex), "valtree": tree_digest(vt), "flatten": tree_digest(fl),
            "train_files": count_files(ex / "train")}


def _threshold(stage: str, point: int, total: int) -> int:
    return random.Random(f"{stage}-{point}").randint(1, max(1, total - 1))


@pytest.mark.slow
@pytest.mark.parametrize("point", range(KILLS))
def test_extract_killed_and_rerun(replicas, clean_runs, tmp_path, point):
    arch, ds = replicas["medium"], tmp_path / "ds"
    k = _threshold("extract", point, clean_runs["train_files"])
    killed = kill_when(["extract", "--archives", arch, "--out", ds, "--workers", "2"],
                       lambda: count_files(ds / "train") >= k)
    run_cli("extract", "--archives", arch, "--out", ds)
    assert tree_digest(ds) == clean_runs["extract"]
    assert no_tmp_files(ds) and check_dataset(ds)[0] == []
    assert killed, "the run finished before the kill: aim earlier"


@pytest.mark.slow
@pytest.mark.parametrize("point", range(KILLS))
def test_valtree_killed_and_rerun(replicas, clean_runs, tmp_path, point):
    arch, ds = replicas["medium"], tmp_path / "ds"
    extract(arch, ds, workers=1)
    total = count_files(ds / "val")
    k = _threshold("valtree", point, total)
    killed = kill_when(["valtree", ds, "--archives", arch],
                       lambda: total - len(list((ds / "val").glob("*.JPEG"))) >= k)
    run_cli("valtree", ds, "--archives", arch)
    assert tree_digest(ds) == clean_runs["valtree"]
    assert no_tmp_files(ds) and check_dataset(ds)[0] == []
    assert killed or k > total - 3  # tiny remaining windows may finish first


@pytest.mark.slow
@pytest.mark.parametrize("point", range(KILLS))
def test_flatten_killed_and_rerun(replicas, clean_runs, tmp_path, point):
    arch, ds = replicas["medium"], tmp_path / "ds"
    extract(arch, ds, workers=1)
    valtree(ds, arch)
    k = _threshold("flatten", point, clean_runs["train_files"])
    kill_when(["flatten", ds], lambda: count_files(ds / "train_flatten") >= k)
    run_cli("flatten", ds)
    assert tree_digest(ds) == clean_runs["flatten"]
    assert no_tmp_files(ds) and check_dataset(ds)[0] == []


def test_second_run_refused_while_one_is_active(small_replica, tmp_path):
    from imagenet_prep.fsutil import dataset_lock

    ds = tmp_path / "ds"
    ds.mkdir()
    with dataset_lock(ds):
        proc = run_cli("extract", "--archives", small_replica, "--out", ds, check=False)
    assert proc.returncode == 1
    assert "another imagenet-prep run" in proc.stderr
    # the lock dies with its holder: a later run goes ahead
    run_cli("extract", "--archives", small_replica, "--out", ds)
