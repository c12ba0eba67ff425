"""WebDataset shards: the webdataset library reads every sample and it matches the replica's
truth; wids loads the index; bytes independent of workers and route and equal to what tarfile
writes; size and count cuts; resume after SIGKILL; refusal of other options; check.

The truth comes from tarfile, the devkit and replica.json (tests/expected.py and the
helpers of test_tfrecord.py), never from the code under test.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset
from expected import seed_extraction
from helpers import (
    CLASSES,
    SORTED_WNIDS,
    boxes_of,
    build_inputs,
    folders_from,
    replica_box_lines,
    replica_truth,
    run_cli,
    sample_image,
)
from PIL import Image
from tarutil import tar_bytes, write_tar

from imagenet_prep.check import check_dataset
from imagenet_prep.check.wds import check_wds
from imagenet_prep.cli import main
from imagenet_prep.errors import PrepError
from imagenet_prep.folders.bbox_csv import ensure_csv
from imagenet_prep.formats.webdataset import tar_header
from imagenet_prep.runtime import stage_state
from imagenet_prep.shards import wds as wds_shards
from imagenet_prep.shards.order import parse_size, size_bounds

PREFIX = {"train": "train", "val": "validation", "test": "test"}


def write_wds(out: Path, *, dataset: Path | None = None, archives: Path | None = None,
              workers: int | None = None, splits: tuple[str, ...] = ("train", "val"), **kw) -> dict:
    """The library call as the CLI makes it: the box CSV first (made when missing)."""
    (dataset or out).mkdir(parents=True, exist_ok=True)
    boxes = ensure_csv(dataset or out, archives, workers) if "train" in splits else None
    return wds_shards.write_wds(out, dataset=dataset, archives=archives, workers=workers,
                                splits=splits, boxes_csv=boxes, **kw)


def shard_files(out: Path) -> dict[str, bytes]:
    """The shards and indexes of a shard folder (not its state or box CSV)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.suffix == ".tar" or p.name in ("train.json", "validation.json", "test.json")}


def shard_paths(out: Path, split: str) -> list[Path]:
    return sorted(out.glob(f"{PREFIX[split]}-*.tar"))


def read_samples(out: Path, split: str) -> list[dict]:
    """Every sample of a split, in shard order, as the webdataset library groups them."""
    urls = [str(p) for p in shard_paths(out, split)]
    return list(webdataset.WebDataset(urls, shardshuffle=False, empty_check=False))


def hash_order(names, seed: int = 0) -> list[str]:
    """The documented order: by keyed 64-bit BLAKE2b of the file name."""
    return sorted(names, key=lambda n: hashlib.blake2b(
        n.encode(), digest_size=8, key=str(seed).encode()).digest())


def files_of_test_split(arch: Path) -> dict[str, bytes]:
    return {rel.split("/", 1)[1]: data for rel, data in seed_extraction(arch).items()
            if rel.startswith("test/")}


@pytest.fixture(scope="module")
def replica_wds(replicas, tmp_path_factory):
    """The small replica, all three splits, 10 samples per shard, 2 workers."""
    arch = replicas["small"]
    out = tmp_path_factory.mktemp("replica-wds") / "wds"
    report = write_wds(out, archives=arch, shard_samples=10, workers=2,
                       splits=("train", "val", "test"))
    return arch, out, report


# --- what the samples hold --------------------------------------------------------------

def test_every_sample_matches_the_replica(replica_wds):
    arch, out, report = replica_wds
    truth = replica_truth(arch)
    boxes = boxes_of(replica_box_lines(arch))
    tests = files_of_test_split(arch)
    seen = {}
    for split in ("train", "val", "test"):
        samples = read_samples(out, split)
        names = [json.loads(s["json"])["filename"] for s in samples]
        want = tests if split == "test" else {
            n for n in truth if n.startswith("ILSVRC") == (split == "val")}
        assert sorted(names) == sorted(want)
        assert names == hash_order(want)  # the TFRecords' seeded order
        for s in samples:
            meta = json.loads(s["json"])
            name = meta["filename"]
            assert s["__key__"] == name[:-len(".JPEG")] and "." not in s["__key__"]
            original, kind = (tests[name], "rgb") if split == "test" else truth[name][1:]
            im = Image.open(io.BytesIO(s["jpg"]))
            im.load()
            assert im.format == "JPEG" and im.mode in ("RGB", "L")
            assert (meta["width"], meta["height"]) == im.size == Image.open(
                io.BytesIO(original)).size
            if kind in ("rgb", "gray"):
                assert s["jpg"] == original
            else:  # CMYK, YCCK, PNG: converted, as the TFRecord sink does
                assert s["jpg"] != original and im.mode == "RGB"
            if split == "test":
                assert "cls" not in s and meta["label"] is None and meta["wnid"] is None
                assert meta["boxes"] == []
            else:
                wnid = truth[name][0]
                assert meta["wnid"] == wnid
                assert meta["label"] == int(s["cls"]) == SORTED_WNIDS.index(wnid)
                assert s["cls"] == str(meta["label"]).encode()
                want_boxes = boxes.get(name, []) if split == "train" else []
                assert meta["boxes"] == [list(b) for b in want_boxes]
            assert s["json"] == json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
            seen[name] = kind
    kinds = {k for k in seen.values()}
    assert {"cmyk", "ycck", "png", "gray"} <= kinds
    assert {(c["name"], c["reason"]) for c in report["converted"]} == {
        (n, k) for n, k in seen.items() if k in ("cmyk", "ycck", "png")}
    assert sum(len(s) for s in (truth, tests)) == len(seen)


def test_quirk_images_arrive_as_rgb_jpeg(tmp_path):
    """CMYK, YCCK, PNG, RGBA PNG and gzip-wrapped files become RGB JPEGs; gray stays gray."""
    truth = build_inputs(tmp_path / "arch", per_class=6, val_images=5)
    out = tmp_path / "wds"
    report = write_wds(out, archives=tmp_path / "arch", shard_samples=7, workers=2)
    for split in ("train", "val"):
        for s in read_samples(out, split):
            name = json.loads(s["json"])["filename"]
            _, original, kind = truth[name]
            im = Image.open(io.BytesIO(s["jpg"]))
            assert im.format == "JPEG"
            assert im.mode == ("L" if kind == "gray" else "RGB")
            assert (s["jpg"] == original) == (kind in ("rgb", "gray"))
    assert {c["reason"] for c in report["converted"]} == {"cmyk", "ycck", "png", "gzip"}


def test_tar_bytes_are_what_tarfile_writes(replica_wds):
    """Each shard equals tarfile's own GNU tar of the same members with fixed headers."""
    _, out, _ = replica_wds
    for path in [*shard_paths(out, "train")[:2], *shard_paths(out, "test")]:
        buf = io.BytesIO()
        with tarfile.open(path) as src, tarfile.open(fileobj=buf, mode="w",
                                                     format=tarfile.GNU_FORMAT) as dst:
            for m in src:
                assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "",
                                                                             0o644)
                info = tarfile.TarInfo(m.name)
                info.size, info.mtime, info.mode = m.size, 0, 0o644
                dst.addfile(info, src.extractfile(m))
        assert buf.getvalue() == path.read_bytes()
    names = [m.name for m in tarfile.open(shard_paths(out, "train")[0])]
    key = names[0].split(".")[0]
    assert names[:3] == [f"{key}.cls", f"{key}.jpg", f"{key}.json"]


@pytest.mark.parametrize("name", ["a.jpg", "n01440764_10026.jpg", "é" * 50, "x" * 100,
                                  "y" * 101, "k" * 300 + ".json", "\udcff.cls"])
def test_tar_header_equals_tarfile(name):
    for size in (0, 1, 511, 512, 123_456, 8**11 - 1, 8**11):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 0, 0o644
        assert tar_header(name, size) == info.tobuf(tarfile.GNU_FORMAT, "utf-8",
                                                    "surrogateescape")


# --- determinism --------------------------------------------------------------------------

def test_identical_for_workers_and_routes(replica_wds, tmp_path):
    arch, out, _ = replica_wds
    reference = shard_files(out)
    one = tmp_path / "one"
    write_wds(one, archives=arch, shard_samples=10, workers=1, splits=("train", "val", "test"))
    assert shard_files(one) == reference
    ds = folders_from(replica_truth(arch), tmp_path / "folders", arch)
    (ds / "test").mkdir()
    for name, data in files_of_test_split(arch).items():
        (ds / "test" / name).write_bytes(data)
    rep = write_wds(ds / "wds", dataset=ds, from_folders=True, shard_samples=10, workers=2,
                    splits=("train", "val", "test"))
    assert rep["source"] == "folders"
    assert shard_files(ds / "wds") == reference
    assert (ds / "imagenet_2012_bounding_boxes.csv").read_bytes() == \
        (out / "imagenet_2012_bounding_boxes.csv").read_bytes()


def test_seed_changes_the_order_only(replica_wds, tmp_path):
    arch, out, _ = replica_wds
    other = tmp_path / "other"
    write_wds(other, archives=arch, shard_samples=10, workers=2, seed=5, splits=("val",))
    names = [json.loads(s["json"])["filename"] for s in read_samples(other, "val")]
    base = [json.loads(s["json"])["filename"] for s in read_samples(out, "val")]
    assert names != base and sorted(names) == sorted(base) and names == hash_order(names, 5)


def test_size_cut(replica_wds, tmp_path):
    arch, _, full = replica_wds
    out = tmp_path / "sized"
    limit = parse_size("100KB")
    report = write_wds(out, archives=arch, shard_size=limit, workers=2)
    state = stage_state.load(out, "wds")
    assert state["options"] == {"seed": 0, "shard_size": 100_000}
    paths = shard_paths(out, "train")
    assert len(paths) == report["splits"]["train"]["shards"] > 2
    counts = [len(tarfile.open(p).getnames()) // 3 for p in paths]
    assert sum(counts) == full["splits"]["train"]["samples"]
    for p in paths[:-1]:  # estimates from input sizes; conversions may add a little
        assert 0.5 * limit < p.stat().st_size < 1.3 * limit


def test_size_bounds_and_sizes():
    costs = np.array([40, 30, 30, 50, 200, 10, 10])
    assert size_bounds(costs, 100) == [(0, 3), (3, 4), (4, 5), (5, 7)]
    assert size_bounds(np.array([], dtype=np.int64), 100) == []
    assert parse_size("500MB") == 500_000_000 and parse_size("1GB") == 10**9
    assert parse_size("1GiB") == 2**30 and parse_size("1.5 kib") == 1536
    assert parse_size("4096") == 4096
    for bad in ("", "1XB", "-5MB", "0"):
        with pytest.raises(PrepError, match="size"):
            parse_size(bad)


# --- index -------------------------------------------------------------------------------

def test_index_files(replica_wds):
    _, out, report = replica_wds
    for split in ("train", "val", "test"):
        doc = json.loads((out / f"{PREFIX[split]}.json").read_text())
        assert doc["__kind__"] == "wids-shard-index-v1" and doc["wids_version"] == 1
        paths = shard_paths(out, split)
        assert [s["url"] for s in doc["shardlist"]] == [p.name for p in paths]
        assert [s["filesize"] for s in doc["shardlist"]] == [p.stat().st_size for p in paths]
        samples = read_samples(out, split)
        assert sum(s["nsamples"] for s in doc["shardlist"]) == len(samples) == \
            report["splits"][split]["samples"]


def test_wids_loads_the_index(replica_wds):
    _, out, _ = replica_wds
    import wids  # webdataset >= 1.0 ships it as its own package
    ds = wids.ShardListDataset(str(out / "validation.json"), localname=lambda url: url,
                               transformations=[lambda s: s])
    samples = read_samples(out, "val")
    assert len(ds) == len(samples) == 12
    for i in (0, 5, 11):
        assert ds[i]["__key__"] == samples[i]["__key__"]
        got = ds[i]  # raw members, as streams
        assert got[".jpg"].getvalue() == samples[i]["jpg"]
        assert got[".cls"].getvalue() == samples[i]["cls"]
    assert not list(out.glob("*.lock"))


# --- resume, refusal, errors ------------------------------------------------------------

def test_rerun_writes_only_missing_shards(replica_wds, tmp_path):
    arch, src, _ = replica_wds
    out = tmp_path / "wds"
    shutil.copytree(src, out)
    reference = shard_files(src)
    (out / "train-000001.tar").unlink()
    (out / ".train-000003.tar.ipart").write_bytes(b"half a shard")  # a killed run's
    state = stage_state.load(out, "wds")
    del state["shards"]["train-000004.tar"]  # renamed after the last state save
    stage_state.save(out, "wds", state)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    time.sleep(0.01)
    report = write_wds(out, archives=arch, shard_samples=10, workers=2,
                       splits=("train", "val", "test"))
    assert report["run"]["shards_written"] == 2
    changed = {n for n, t in ((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
               if before.get(n) != t and n.endswith(".tar")}
    assert changed == {"train-000001.tar", "train-000004.tar"}
    assert shard_files(out) == reference
    assert not list(out.glob(".*.ipart"))
    assert check_wds(out) == []


def test_other_options_are_refused(replica_wds, tmp_path):
    arch, src, _ = replica_wds
    out = tmp_path / "wds"
    shutil.copytree(src, out)
    with pytest.raises(PrepError, match=r"other options \(--seed 0 --shard-samples 10\).*"
                                        r"to start over, delete"):
        write_wds(out, archives=arch, shard_samples=10, seed=1, workers=1)
    with pytest.raises(PrepError, match="other options"):
        write_wds(out, archives=arch, shard_size=10**6, workers=1)
    (out / ".imagenet-prep" / "wds.json").unlink()
    with pytest.raises(PrepError, match="no wds run recorded"):
        write_wds(out, archives=arch, shard_samples=10, workers=1)
    with pytest.raises(PrepError, match="not both"):
        write_wds(out, archives=arch, shard_samples=10, shard_size=5, workers=1)


def test_bad_image_fails_or_is_skipped(tmp_path):
    arch = tmp_path / "arch"
    truth = build_inputs(arch, per_class=3, val_images=3, bad=f"{CLASSES[1]}_bad.JPEG")
    with pytest.raises(PrepError, match=f"{CLASSES[1]}.tar:{CLASSES[1]}_bad.JPEG: not a"):
        write_wds(tmp_path / "a", archives=arch, shard_samples=4, workers=1)
    assert not list((tmp_path / "a").glob(".*.ipart"))
    out = tmp_path / "b"
    report = write_wds(out, archives=arch, shard_samples=4, workers=2, on_bad_image="skip")
    assert [s["name"] for s in report["skipped"]] == [f"{CLASSES[1]}_bad.JPEG"]
    assert report["splits"]["train"]["samples"] == len(truth) - 3
    assert check_wds(out) == []
    doc = json.loads((out / "train.json").read_text())
    assert sum(s["nsamples"] for s in doc["shardlist"]) == len(truth) - 3


def test_key_with_a_dot_is_refused(tmp_path):
    wnid = SORTED_WNIDS[0]
    write_tar(tmp_path / "ILSVRC2012_img_train.tar", {f"{wnid}.tar": tar_bytes(
        {f"{wnid}_1.JPEG": sample_image("rgb", 1), f"{wnid}_2.v2.JPEG": sample_image("rgb", 2)})})
    with pytest.raises(PrepError, match=r"_2\.v2\.JPEG' cannot be a WebDataset key"):
        write_wds(tmp_path / "wds", archives=tmp_path, workers=1, splits=("train",))


def _kill_when(out: Path, args: list[str], shards_done: int) -> int:
    """Start the CLI, SIGKILL it once `shards_done` train shards exist; returns how many did."""
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_prep", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    done = 0
    while proc.poll() is None and time.monotonic() < deadline:
        done = sum(1 for n in os.listdir(out) if n.startswith("train-")) if out.is_dir() else 0
        if done >= shards_done:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    return done


@pytest.mark.parametrize("shards_done, workers", [(2, 1), (9, 2)])
def test_killed_run_then_rerun_is_identical(tmp_path, shards_done, workers):
    arch = tmp_path / "arch"
    build_inputs(arch, per_class=60, val_images=12)
    args = ["--archives", str(arch), "--shard-samples", "6"]
    clean = tmp_path / "clean"
    assert main(["wds", "--out", str(clean), *args, "--workers", "1"]) == 0
    out = tmp_path / "killed"
    killed = _kill_when(out, ["wds", "--out", str(out), *args, "--workers", str(workers)],
                        shards_done)
    assert shards_done <= killed < 30
    assert main(["wds", "--out", str(out), *args, "--workers", str(workers)]) == 0
    assert shard_files(out) == shard_files(clean)
    assert not list(out.glob(".*.ipart"))
    assert check_wds(out) == []


# --- check -------------------------------------------------------------------------------

def test_check_passes_and_finds_damage(replica_wds, tmp_path):
    _, src, _ = replica_wds
    assert check_wds(src) == []
    out = tmp_path / "wds"
    shutil.copytree(src, out)
    shard = out / "train-000002.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside an image: only the CRC can tell
    shard.write_bytes(bytes(data))
    (out / "validation-000001.tar").unlink()
    test = out / "test-000000.tar"
    test.write_bytes(test.read_bytes()[:3000])
    (out / ".train-000009.tar.ipart").write_bytes(b"")
    problems = "\n".join(check_wds(out))
    assert "train-000002.tar: CRC32C mismatch" in problems
    assert "1 validation shards missing, first validation-000001.tar" in problems
    assert "validation.json: lists 2 shards" in problems
    assert "test-000000.tar: truncated" in problems
    assert "leftover temporary file" in problems


def test_check_finds_wrong_labels(replica_wds, tmp_path):
    """A shard rewritten with a wrong .cls (and no state) fails on its content alone;
    shards without their state are a problem of their own (the next run refuses them)."""
    _, src, _ = replica_wds
    out = tmp_path / "wds"
    shutil.copytree(src, out)
    (out / ".imagenet-prep" / "wds.json").unlink()
    assert check_wds(out) == [f"{out}: holds shards that no wds run recorded "
                              f"(no {out / '.imagenet-prep' / 'wds.json'})"]
    path = out / "validation-000000.tar"
    buf = io.BytesIO()
    with tarfile.open(path) as srct, tarfile.open(fileobj=buf, mode="w",
                                                  format=tarfile.GNU_FORMAT) as dst:
        for m in srct:
            data = srct.extractfile(m).read()
            if m.name.endswith(".cls") and not buf.tell():
                data = b"999"
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    assert any(".cls b'999' but .json label" in p for p in check_wds(out))


def test_cli_from_folders_prepare_and_check(replicas, tmp_path):
    arch = replicas["small"]
    ds = tmp_path / "ds"
    proc = run_cli("prepare", "--archives", arch, "--out", ds, "--only", "tensorflow",
                   "--train-shards", "2", "--val-shards", "1", "--wds", "--wds-shard-size",
                   "200KB")
    assert "wds" in proc.stdout and "samples in" in proc.stdout
    assert (ds / "wds" / "train.json").is_file()
    assert run_cli("check", ds).stdout.strip().endswith("OK")
    problems, checked = check_dataset(ds)
    assert problems == [] and checked["wds"]
    # --from-folders DATASET writes DATASET/wds by default; the same shards from extracted folders
    folders = folders_from(replica_truth(arch), tmp_path / "folders", arch)
    proc = run_cli("wds", "--from-folders", folders, "--shard-size", "200KB", "--json")
    assert json.loads(proc.stdout)["source"] == "folders"
    assert shard_files(folders / "wds") == shard_files(ds / "wds")
    again = run_cli("wds", folders, "--from-folders", "--shard-size", "200KB")
    assert "all shards were already complete" in again.stdout
    bad = run_cli("wds", "--archives", arch, check=False)
    assert bad.returncode == 1 and "give --out DIR" in bad.stderr
    assert run_cli("check", folders / "wds").stdout.strip().endswith("OK")


@pytest.mark.parametrize("damage", ["truncated", "not an index"])
def test_a_damaged_index_of_a_split_finished_later_is_written_again(replica_wds, tmp_path, damage):
    """The train index damaged: the rerun's validation split finishes first and writes
    timm's _info.json from the indexes, which read the damaged one (a JSONDecodeError
    traceback, found by random damage to a bucket dataset); it is now left out until the
    train split writes it again, and the folder ends as it was."""
    arch, src, _ = replica_wds
    out = tmp_path / "wds"
    shutil.copytree(src, out)
    index = out / "train.json"
    index.write_text(index.read_text()[:100] if damage == "truncated" else '{"shardlist": 3}')
    assert any("train.json" in p for p in check_wds(out))
    write_wds(out, archives=arch, shard_samples=10, workers=2, splits=("train", "val", "test"))
    assert shard_files(out) == shard_files(src)
    assert (out / "_info.json").read_bytes() == (src / "_info.json").read_bytes()
    assert check_wds(out) == []


def test_check_compares_the_whole_index(replica_wds, tmp_path):
    """An index whose shard list still matches but whose other bytes changed (its name, a
    file size) is what no run writes: check named nothing, and the rerun rewrote it."""
    arch, src, _ = replica_wds
    out = tmp_path / "wds"
    shutil.copytree(src, out)
    index = out / "validation.json"
    good = index.read_text()
    index.write_text(good.replace('"imagenet-validation"', '"imagenet-valiXation"'))
    assert check_wds(out) == [f"{index}: differs from the index of the shards' recorded states"]
    write_wds(out, archives=arch, shard_samples=10, workers=2, splits=("train", "val", "test"))
    assert index.read_text() == good and check_wds(out) == []
