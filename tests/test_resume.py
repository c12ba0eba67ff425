"""SIGKILL at seeded random moments, rerun, and the result equals an uninterrupted run.

A kill is aimed at a random amount of progress (files or shards already written,
chosen by a seeded RNG) so it lands midway through the stage, not before or after,
and each test asserts that it did land: the process died by the signal, with its
output still incomplete.  Stages too quick on the shared replicas get a workload
of their own, big enough for a kill to land every time.
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_cli, tree_digest

from imagenet_prep.check import check_dataset
from imagenet_prep.folders.extract import extract
from imagenet_prep.folders.valtree import valtree
from imagenet_prep.replica.build import make_replica
from imagenet_prep.sources.archives import BBOX_TRAIN

KILLS = 5
TF_SHARDS = ("--train-shards", "40", "--val-shards", "8")


def count_files(folder: Path) -> int:
    n = 0
    for _, _, names in os.walk(folder):
        n += len(names)
    return n


def kill_when(args: list, ready: Callable[[int], bool], timeout: float = 60) -> bool:
    """Run imagenet-prep until `ready(pid)`, then SIGKILL it; True if it was killed midway."""
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_prep", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    return proc.wait() == -signal.SIGKILL


def read_offset(pid: int, path: Path) -> int:
    """How far process `pid` has read into the file `path` (its offset there), 0 when the
    file is not open (yet, or any more).  Linux /proc."""
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            if os.readlink(fd) == str(path):
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                return int(info.split("pos:", 1)[1].split()[0])
    except OSError:  # the process or the descriptor went away meanwhile
        pass
    return 0


def no_tmp_files(root: Path) -> bool:
    return not list(root.rglob("*.ipart"))


@pytest.fixture(scope="module")
def clean_runs(replicas, tmp_path_factory):
    """Uninterrupted reference results of the stages that run on the medium replica."""
    arch = replicas["medium"]
    base = tmp_path_factory.mktemp("clean")
    ex, vt = base / "extract", base / "valtree"
    run_cli("extract", "--archives", arch, "--out", ex)
    run_cli("extract", "--archives", arch, "--out", vt)
    run_cli("valtree", vt, "--archives", arch)
    tf = base / "tfrecord"
    run_cli("tfrecord", tf, "--archives", arch, *TF_SHARDS)
    al = base / "all"
    run_cli("prepare", "--archives", arch, "--out", al, "--only", "all", *TF_SHARDS)
    return {"extract": tree_digest(ex), "valtree": tree_digest(vt),
            "train_files": count_files(ex / "train"), "tfrecord": tree_digest(tf),
            "all": {k: v for k, v in tree_digest(al).items() if k != "report.html"},
            "all_files": len(tree_digest(al))}


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    """A replica of ~10,600 tiny training images, and its uninterrupted `flatten` result.

    The medium replica's ~1,200 links take ~60 ms, too short a window for a kill aimed
    at a file count to land reliably; here the links still to make after the kill point
    (at least half the training files, and validation) take a quarter of a second or more.
    """
    arch = tmp_path_factory.mktemp("replica-many")
    make_replica(arch, seed=7, workers=2, classes=10, train_per_class=1000, val_per_class=20,
                 test=1, size=(32, 24))
    ds = tmp_path_factory.mktemp("clean-flatten") / "ds"
    run_cli("extract", "--archives", arch, "--out", ds)
    run_cli("valtree", ds, "--archives", arch)
    run_cli("flatten", ds)
    return arch, {"flatten": tree_digest(ds), "train_files": count_files(ds / "train")}


BOX_COPIES = 150  # the medium replica's ~400 box XMLs become ~60,000


@pytest.fixture(scope="module")
def many_boxes(replicas, tmp_path_factory):
    """An archives folder holding only a box archive of ~60,000 XMLs (the medium replica's,
    repeated under new image numbers), and the uninterrupted `bbox` result.

    On the medium replica `bbox` is over within its start-up.  Here it parses for about
    a second, and the archive is a gzip stream without compression (level 0, ~65 MB), so
    how far `bbox` has read into it (it reads 1 MiB at a time, a few batches ahead of the
    parsing) measures its progress: the CSV is only written after the last byte is read.
    """
    if not Path("/proc/self/fdinfo").is_dir():
        pytest.skip("needs Linux /proc to follow the progress of bbox")
    with tarfile.open(replicas["medium"] / BBOX_TRAIN) as tf:
        files = [(m.name, tf.extractfile(m).read()) for m in tf if m.isfile()]
    arch = tmp_path_factory.mktemp("many-boxes")
    with tarfile.open(arch / BBOX_TRAIN, "w:gz", compresslevel=0,
                      format=tarfile.GNU_FORMAT) as tf:
        for copy in range(BOX_COPIES):
            for name, data in files:
                wnid, base = name.split("/")
                number = int(base[:-4].rsplit("_", 1)[1]) + copy * 10_000_000
                info = tarfile.TarInfo(f"{wnid}/{wnid}_{number}.xml")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    ds = tmp_path_factory.mktemp("clean-bbox") / "ds"
    run_cli("bbox", ds, "--archives", arch, "--workers", "2")
    return arch.resolve(), {"bbox": tree_digest(ds)}


def _threshold(stage: str, point: int, total: int, tenths: int = 9) -> int:
    """A seeded amount of progress to kill at, within the first `tenths` tenths of the total
    so the kill lands before the stage ends."""
    return random.Random(f"{stage}-{point}").randint(1, max(1, total * tenths // 10))


@pytest.mark.slow
@pytest.mark.parametrize("point", range(KILLS))
def test_extract_killed_and_rerun(replicas, clean_runs, tmp_path, point):
    arch, ds = replicas["medium"], tmp_path / "ds"
    k = _threshold("extract", point, clean_runs["train_files"])
    killed = kill_when(["extract", "--archives", arch, "--out", ds, "--workers", "2"],
                       lambda _: count_files(ds / "train") >= k)
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
                       lambda _: total - len(list((ds / "val").glob("*.JPEG"))) >= k)
    run_cli("valtree", ds, "--archives", arch)
    assert tree_digest(ds) == clean_runs["valtree"]
    assert no_tmp_files(ds) and check_dataset(ds)[0] == []
    assert killed or k > total - 3  # tiny remaining windows may finish first


@pytest.mark.slow
@pytest.mark.parametrize("point", range(KILLS))
def test_flatten_killed_and_rerun(many_images, tmp_path, point):
    (arch, clean), ds = many_images, tmp_path / "ds"
    extract(arch, ds, workers=1)
    valtree(ds, arch)
    k = _threshold("flatten", point, clean["train_files"], tenths=5)
    killed = kill_when(["flatten", ds], lambda _: count_files(ds / "train_flatten") >= k)
    unfinished = tree_digest(ds) != clean["flatten"]
    run_cli("flatten", ds)
    assert tree_digest(ds) == clean["flatten"]
    assert no_tmp_files(ds) and check_dataset(ds)[0] == []
    assert killed and unfinished, "the run finished before the kill: aim earlier"


@pytest.mark.slow
@pytest.mark.parametrize("point", range(KILLS))
def test_bbox_killed_and_rerun(many_boxes, tmp_path, point):
    """One CSV written at the end: the kill is aimed at a seeded share of the box archive
    read, so it lands while the XMLs are being parsed."""
    (arch, clean), ds = many_boxes, tmp_path / "ds"
    archive = arch / BBOX_TRAIN
    k = _threshold("bbox", point, archive.stat().st_size, tenths=8)
    args = ["bbox", ds, "--archives", arch, "--workers", "2"]
    killed = kill_when(args, lambda pid: read_offset(pid, archive) >= k)
    unfinished = tree_digest(ds) != clean["bbox"]
    run_cli(*args)
    assert tree_digest(ds) == clean["bbox"]
    assert no_tmp_files(ds)
    assert killed and unfinished, "the run finished before the kill: aim earlier"


@pytest.mark.slow
@pytest.mark.parametrize("point", range(KILLS))
def test_tfrecord_killed_and_rerun(replicas, clean_runs, tmp_path, point):
    arch, ds = replicas["medium"], tmp_path / "ds"
    k = _threshold("tfrecord", point, 40)
    killed = kill_when(["tfrecord", ds, "--archives", arch, *TF_SHARDS, "--workers", "2"],
                       lambda _: count_files(ds / "tfrecord_train") >= k)
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
    killed = kill_when(args, lambda _: count_files(ds) >= k)
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
