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
from helpers import run_cli, tree_digest

from imagenet_prep.check import check_dataset
from imagenet_prep.folders.extract import extract
from imagenet_prep.folders.valtree import valtree

KILLS = 5
TF_SHARDS = ("--train-shards", "40", "--val-shards", "8")


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
    bb = base / "bbox"
    t0 = time.monotonic()
    run_cli("bbox", bb, "--archives", arch)
    bbox_seconds = time.monotonic() - t0
    tf = base / "tfrecord"
    run_cli("tfrecord", tf, "--archives", arch, *TF_SHARDS)
    al = base / "all"
    run_cli("prepare", "--archives", arch, "--out", al, "--only", "all", *TF_SHARDS)
    return {"extract": tree_digest(ex), "valtree": tree_digest(vt), "flatten": tree_digest(fl),
            "train_files": count_files(ex / "train"), "bbox": tree_digest(bb),
            "bbox_seconds": bbox_seconds, "tfrecord": tree_digest(tf),
            "all": {k: v for k, v in tree_digest(al).items() if k != "report.html"},
            "all_files": len(tree_digest(al))}


def _threshold(stage: str, point: int, total: int) -> int:
    """A seeded amount of progress to kill at, short of the last tenth so the kill lands."""
    return random.Random(f"{stage}-{point}").randint(1, max(1, total * 9 // 10))


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


@pytest.mark.slow
@pytest.mark.parametrize("point", range(KILLS))
def test_bbox_killed_and_rerun(replicas, clean_runs, tmp_path, point):
    """One CSV written at the end: the kill lands at a seeded moment of a clean run's length."""
    arch, ds = replicas["medium"], tmp_path / "ds"
    delay = random.Random(f"bbox-{point}").uniform(0.0, clean_runs["bbox_seconds"])
    start = time.monotonic()
    kill_when(["bbox", ds, "--archives", arch], lambda: time.monotonic() - start >= delay)
    run_cli("bbox", ds, "--archives", arch)
    assert tree_digest(ds) == clean_runs["bbox"]
    assert no_tmp_files(ds)


@pytest.mark.slow
@pytest.mark.parametrize("point", range(KILLS))
def test_tfrecord_killed_and_rerun(replicas, clean_runs, tmp_path, point):
    arch, ds = replicas["medium"], tmp_path / "ds"
    k = _threshold("tfrecord", point, 40)
    killed = kill_when(["tfrecord", ds, "--archives", arch, *TF_SHARDS, "--workers", "2"],
                       lambda: count_files(ds / "tfrecord_train") >= k)
    run_cli("tfrecord", ds, "--archives", arch, *TF_SHARDS)
    assert tree_digest(ds) == clean_runs["tfrecord"]
    assert no_tmp_files(ds) and check_dataset(ds)[0] == []
    assert killed


@pytest.mark.slow
@pytest.mark.parametrize("point", range(KILLS))
def test_prepare_all_killed_and_rerun(replicas, clean_runs, tmp_path, point):
    arch, ds = replicas["medium"], tmp_path / "ds"
    k = _threshold("all", point, clean_runs["all_files"])
    args = ["prepare", "--archives", arch, "--out", ds, "--only", "all", *TF_SHARDS]
    killed = kill_when(args, lambda: count_files(ds) >= k)
    run_cli(*args)
    digest = tree_digest(ds)
    assert digest.pop("report.html") and digest == clean_runs["all"]  # the page shows timings
    assert no_tmp_files(ds) and check_dataset(ds)[0] == []
    assert killed


def test_second_run_refused_while_one_is_active(small_replica, tmp_path):
    from imagenet_prep.runtime.files import dataset_lock

    ds = tmp_path / "ds"
    ds.mkdir()
    with dataset_lock(ds):
        proc = run_cli("extract", "--archives", small_replica, "--out", ds, check=False)
    assert proc.returncode == 1
    assert "another imagenet-prep run" in proc.stderr
    # the lock dies with its holder: a later run goes ahead
    run_cli("extract", "--archives", small_replica, "--out", ds)
