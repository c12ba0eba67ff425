"""SIGKILL at seeded random moments, rerun, and the result equals an uninterrupted run."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, tree_digest

from imagenet_prep.check import check_dataset
from imagenet_prep.sinks.tree import extract

KILLS = 5


def kill_after(args: list[str | Path], delay: float) -> int:
    """Start imagenet-prep, SIGKILL it after `delay` seconds; returns its exit code."""
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_prep", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


def tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.ipart")]


@pytest.fixture(scope="module")
def clean_runs(replicas, tmp_path_factory):
    """Uninterrupted reference results, one per stage."""
    base = tmp_path_factory.mktemp("clean")
    arch = replicas["medium"]
    ex = base / "extract"
    run_cli("extract", "--archives", arch, "--out", ex)
    vt = base / "valtree"
    run_cli("extract", "--archives", arch, "--out", vt)
    run_cli("valtree", vt, "--archives", arch)
    return {"extract": tree_digest(ex), "valtree": tree_digest(vt)}


@pytest.mark.slow
@pytest.mark.parametrize("point", range(KILLS))
def test_extract_killed_and_rerun(replicas, clean_runs, tmp_path, point):
    arch = replicas["medium"]
    ds = tmp_path / "ds"
    delay = random.Random(f"extract-{point}").uniform(0.3, 1.5)
    kill_after(["extract", "--archives", arch, "--out", ds], delay)
    run_cli("extract", "--archives", arch, "--out", ds)
    assert tree_digest(ds) == clean_runs["extract"]
    assert tmp_files(ds) == []
    assert check_dataset(ds)[0] == []


@pytest.mark.slow
@pytest.mark.parametrize("point", range(KILLS))
def test_valtree_killed_and_rerun(replicas, clean_runs, tmp_path, point):
    arch = replicas["medium"]
    ds = tmp_path / "ds"
    extract(arch, ds, workers=1)
    delay = random.Random(f"valtree-{point}").uniform(0.2, 0.9)
    kill_after(["valtree", ds, "--archives", arch], delay)
    run_cli("valtree", ds, "--archives", arch)
    assert tree_digest(ds) == clean_runs["valtree"]
    assert check_dataset(ds)[0] == []


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
