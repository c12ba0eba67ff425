"""Parquet in the Hub's imagenet-1k schema: Hugging Face `datasets` reads every split of it
(from the card, from data_files, streaming) and every row matches the replica's truth; bytes
independent of workers and Dask; a killed run resumes to the same bytes; check finds a
deleted or flipped file; another pyarrow is refused.

The truth comes from tarfile, the devkit and replica.json (helpers_hf.py), never from the
code under test.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import build_inputs, run_cli
from helpers_hf import HUB_SPLIT, image_size, offline_hf, split_truth

offline_hf()  # before datasets is imported

import datasets  # noqa: E402

from imagenet_prep.check import check_dataset  # noqa: E402
from imagenet_prep.cli import main  # noqa: E402
from imagenet_prep.runtime import stage_state  # noqa: E402
from imagenet_prep.sources import metadata  # noqa: E402

FEATURES = datasets.Features({
    "image": datasets.Image(), "label": datasets.ClassLabel(names=list(metadata.hub_class_names())),
})


def parquet_files(ds: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((ds / "parquet" / "data").iterdir())}


def assert_rows_match(rows_of: dict[str, list[dict]], truth: dict) -> None:
    """Every split: the same file names as the archives, each with its label and decoded size;
    unconverted images byte for byte."""
    for split, want in truth.items():
        rows = rows_of[HUB_SPLIT[split]]
        assert sorted(r["image"]["path"] for r in rows) == sorted(want), split
        for r in rows:
            t = want[r["image"]["path"]]
            assert r["label"] == t.label
            assert image_size(r["image"]["bytes"]) == t.size
            if t.kind in ("rgb", "gray"):
                assert r["image"]["bytes"] == t.data


def test_load_dataset_reads_every_row_as_the_hub_schema(hf_dataset):
    arch, ds = hf_dataset
    loaded = datasets.load_dataset(str(ds / "parquet"))
    assert set(loaded) == {"train", "validation", "test"}
    for split in loaded.values():
        assert split.features == FEATURES
    assert loaded["train"].features["label"].int2str(517) == "crane2"
    rows = {s: list(d.cast_column("image", datasets.Image(decode=False))) for s, d in
            loaded.items()}
    truth = split_truth(arch)
    assert_rows_match(rows, truth)
    first = loaded["validation"][0]["image"]  # decoded by datasets, as a user reads it
    assert first.size == truth["val"][rows["validation"][0]["image"]["path"]].size


def test_data_files_and_streaming_read_the_same(hf_dataset):
    arch, ds = hf_dataset
    data = ds / "parquet" / "data"
    files = {s: str(data / f"{s}-*.parquet") for s in ("train", "validation", "test")}
    by_files = datasets.load_dataset("parquet", data_files=files)
    for split in by_files.values():
        assert split.features == FEATURES  # from the schema's `huggingface` metadata
    truth = split_truth(arch)
    streamed = datasets.load_dataset(str(ds / "parquet"), streaming=True)
    rows = {s: list(d.cast_column("image", datasets.Image(decode=False)))
            for s, d in streamed.items()}
    assert_rows_match(rows, truth)
    assert {s: len(d) for s, d in by_files.items()} == {
        HUB_SPLIT[s]: len(t) for s, t in truth.items()}


def test_schema_files_and_row_groups(tmp_path, small_replica):
    ds = tmp_path / "ds"
    run_cli("parquet", ds, "--archives", small_replica, "--shard-size", "20KB",
            "--row-group-size", "4KB", "--workers", "2")
    names = sorted(os.listdir(ds / "parquet" / "data"))
    n_train = sum(n.startswith("train-") for n in names)
    assert n_train > 1 and f"train-00000-of-{n_train:05d}.parquet" in names
    f = pq.ParquetFile(ds / "parquet" / "data" / names[-1])
    assert str(f.schema_arrow.field("image").type) == "struct<bytes: binary, path: string>"
    assert str(f.schema_arrow.field("label").type) == "int64"
    hf = json.loads(f.schema_arrow.metadata[b"huggingface"])
    assert datasets.Features.from_dict(hf["info"]["features"]) == FEATURES
    assert f.metadata.num_row_groups > 1  # cut by --row-group-size
    card = (ds / "parquet" / "README.md").read_text()
    assert "data/train-*.parquet" in card and "data/test-*.parquet" in card


def test_bytes_independent_of_workers_and_dask(tmp_path, small_replica, hf_dataset):
    from imagenet_prep.runtime.dask_cluster import DaskExecutor
    from imagenet_prep.shards.mds import write_mds
    from imagenet_prep.shards.parquet import write_parquet

    opts = {"archives": small_replica}
    one = tmp_path / "one"
    write_parquet(one, shard_size=20_000, row_group_size=5_000, workers=1, **opts)
    write_mds(one, shard_size=20_000, workers=1, **opts)
    two = tmp_path / "two"
    write_parquet(two, shard_size=20_000, row_group_size=5_000, workers=2, **opts)
    write_mds(two, shard_size=20_000, workers=2, **opts)
    dask = (tmp_path / "dask").resolve()
    dask.mkdir()
    with DaskExecutor(dataset=dask, archives=small_replica.resolve(), scheduler=None,
                      local_workers=2) as ex:
        write_parquet(dask, shard_size=20_000, row_group_size=5_000, workers=ex, **opts)
        write_mds(dask, shard_size=20_000, workers=ex, **opts)
    for out in (two, dask):
        assert parquet_files(out) == parquet_files(one)
        for split in ("train", "val", "test"):
            folder = Path("mds") / split
            assert {p.name: p.read_bytes() for p in (out / folder).iterdir()} == \
                {p.name: p.read_bytes() for p in (one / folder).iterdir()}


def _kill_when(folder: Path, args: list, done_at: int) -> int:
    """Start the CLI, SIGKILL it once `done_at` train shards are in `folder`."""
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_prep", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, done = time.monotonic() + 60, 0
    while proc.poll() is None and time.monotonic() < deadline:
        done = sum(n.startswith(("train-", "shard.")) for n in os.listdir(folder)) \
            if folder.is_dir() else 0
        if done >= done_at:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    return done


@pytest.mark.parametrize("kind", ["parquet", "mds"])
def test_killed_run_then_rerun_is_identical(tmp_path, kind):
    arch = tmp_path / "arch"
    build_inputs(arch, per_class=60, val_images=12)
    args = ["--archives", arch, "--shard-size", "8KB", "--workers", "2", "--splits", "train,val"]
    clean = tmp_path / "clean"
    assert main([kind, str(clean), *map(str, args)]) == 0
    ds = tmp_path / "killed"
    folder = ds / "parquet" / "data" if kind == "parquet" else ds / "mds" / "train"
    killed = _kill_when(folder, [kind, ds, *args], 3)
    total = len(os.listdir(clean / ("parquet/data" if kind == "parquet" else "mds/train")))
    assert 3 <= killed < total
    assert main([kind, str(ds), *map(str, args)]) == 0
    sub = "parquet" if kind == "parquet" else "mds"
    want = {str(p.relative_to(clean)): p.read_bytes() for p in (clean / sub).rglob("*")
            if p.is_file()}
    got = {str(p.relative_to(ds)): p.read_bytes() for p in (ds / sub).rglob("*") if p.is_file()}
    assert got == want
    assert check_dataset(ds)[0] == []


@pytest.mark.parametrize("damage", ["delete", "flip"])
def test_check_finds_a_damaged_file_and_a_rerun_mends_it(tmp_path, small_replica, damage):
    ds = tmp_path / "ds"
    args = ["--archives", str(small_replica), "--shard-size", "20KB", "--workers", "2"]
    assert main(["parquet", str(ds), *args]) == 0
    assert check_dataset(ds)[0] == []
    before = parquet_files(ds)
    victim = ds / "parquet" / "data" / sorted(before)[1]
    if damage == "delete":
        victim.unlink()
    else:
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x10
        victim.write_bytes(bytes(data))
    problems, _ = check_dataset(ds)
    assert problems and all(victim.name in p for p in problems), problems
    assert main(["check", str(ds)]) == 1  # records what it found damaged
    assert main(["parquet", str(ds), *args]) == 0
    assert parquet_files(ds) == before and check_dataset(ds)[0] == []
    (ds / "parquet" / "README.md").unlink()
    assert any("README.md" in p for p in check_dataset(ds)[0])


def test_another_pyarrow_version_is_refused(tmp_path, small_replica):
    ds = tmp_path / "ds"
    args = ["parquet", ds, "--archives", small_replica, "--splits", "val"]
    run_cli(*args)
    state = stage_state.load(ds, "parquet")
    state["options"]["pyarrow"] = "1.0.0"
    stage_state.save(ds, "parquet", state)
    proc = run_cli(*args, check=False)
    assert proc.returncode == 1
    assert "written with pyarrow 1.0.0" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_paths_are_the_original_file_names(hf_dataset):
    """Paths are the original file names, unique within a split (the Hub's `path` field)."""
    _, ds = hf_dataset
    for f in sorted((ds / "parquet" / "data").iterdir()):
        paths = pq.read_table(f, columns=["image"]).column("image").to_pylist()
        names = [p["path"] for p in paths]
        assert len(set(names)) == len(names) and all(n.endswith(".JPEG") for n in names)
        assert all(io.BytesIO(p["bytes"]).read(2) == b"\xff\xd8" for p in paths)


def test_check_proves_and_report_counts_the_new_outputs(hf_dataset):
    """The prepared dataset (prepare --parquet --mds --wds): check proves it all, the report's
    summary has a row per split of each format with the truth's counts."""
    from imagenet_prep.report.gather import summary_rows

    arch, ds = hf_dataset
    problems, checked = check_dataset(ds)
    assert problems == [] and {"parquet", "mds", "card", "wds"} <= set(checked["outputs"])
    rows = {r.key: r for r in summary_rows(ds, {})}
    for split, want in split_truth(arch).items():
        for kind in ("parquet", "mds"):
            assert rows[f"{kind}_{split}"].count == len(want)


def test_from_folders_gives_the_same_bytes_as_from_the_archives(tmp_path, hf_dataset):
    """The class folders `prepare` extracted, read instead of the archives: the same files."""
    _, ds = hf_dataset
    other = tmp_path / "ds"
    other.mkdir()
    for split in ("train", "val", "test"):
        (other / split).symlink_to(ds / split)
    for kind in ("parquet", "mds"):
        assert main([kind, str(other), "--from-folders", "--workers", "2"]) == 0
    assert parquet_files(other) == parquet_files(ds)
    for split in ("train", "val", "test"):
        folder = Path("mds") / split
        assert {p.name: p.read_bytes() for p in (other / folder).iterdir()} == \
            {p.name: p.read_bytes() for p in (ds / folder).iterdir()}
