"""TFDS data directory: tensorflow-datasets itself reads every split (tfds.load, tfds.builder,
builder_from_directory) and every sample matches the replica's truth; TFDS's record order,
shard count and cut; bytes independent of workers and Dask; resume after SIGKILL; check.

The truth comes from tarfile, the devkit and replica.json (helpers.replica_truth), and the
order from hashlib as TFDS documents it, never from the code under test.
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import SORTED_WNIDS, replica_truth, run_cli, tree_digest
from PIL import Image

from imagenet_prep.check import check_dataset
from imagenet_prep.formats import tfds as tfds_format
from imagenet_prep.formats.tfrecord import decode_example, iter_records
from imagenet_prep.replica.build import make_replica
from imagenet_prep.report.gather import summary_rows

tfds = pytest.importorskip("tensorflow_datasets")

SPLIT = {"train": "train", "val": "validation", "test": "test"}
DATA = Path("tfds/imagenet2012/5.1.0")


@pytest.fixture(scope="session")
def written(replicas, tmp_path_factory) -> tuple[Path, Path]:
    """(archives, DATASET) of the small replica, all three splits, two workers."""
    arch, ds = replicas["small"], tmp_path_factory.mktemp("tfds") / "ds"
    run_cli("tfds", ds, "--archives", arch, "--splits", "train,val,test", "--workers", "2")
    return arch, ds


def truth_of(arch: Path) -> dict[str, dict[str, tuple[int, tuple[int, int]]]]:
    """split -> file name -> (label 0..999 or -1, (height, width) decoded), from tarfile."""
    out: dict[str, dict] = {"train": {}, "val": {}, "test": {}}
    for name, (wnid, data, _) in replica_truth(arch).items():
        w, h = Image.open(io.BytesIO(data)).size
        split = "val" if name.startswith("ILSVRC2012_val_") else "train"
        out[split][name] = (SORTED_WNIDS.index(wnid), (h, w))
    with tarfile.open(arch / "ILSVRC2012_img_test.tar") as tf:
        for m in tf:
            w, h = Image.open(io.BytesIO(tf.extractfile(m).read())).size
            out["test"][m.name] = (-1, (h, w))
    return out


def tfds_order(split: str, names) -> list[str]:
    """TFDS's shuffler: ascending MD5 of the split name followed by the key (the file name)."""
    return sorted(names, key=lambda n: hashlib.md5((SPLIT[split] + n).encode()).digest())


def test_tfds_load_reads_every_sample(written):
    arch, ds = written
    truth = truth_of(arch)
    for split, want in truth.items():
        got = [(ex["file_name"].decode(), int(ex["label"]), ex["image"].shape)
               for ex in tfds.as_numpy(tfds.load("imagenet2012", split=SPLIT[split],
                                                 data_dir=ds / "tfds", download=False))]
        assert [n for n, _, _ in got] == tfds_order(split, want)  # every sample, TFDS's order
        for name, label, shape in got:
            assert (label, shape) == (want[name][0], (*want[name][1], 3)), name


def test_builder_and_builder_from_directory(written):
    arch, ds = written
    truth = truth_of(arch)
    counts = {SPLIT[s]: len(v) for s, v in truth.items()}
    builder = tfds.builder("imagenet2012", data_dir=ds / "tfds")
    assert str(builder.version) == "5.1.0" and builder.is_prepared()
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == counts
    assert builder.info.supervised_keys == ("image", "label")
    direct = tfds.builder_from_directory(str(ds / DATA))
    features = direct.info.features
    assert sorted(features) == ["file_name", "image", "label"]
    assert features["label"].names == SORTED_WNIDS
    assert features["image"].shape == (None, None, 3)
    assert features["image"].encoding_format == "jpeg"
    val = list(tfds.as_numpy(direct.as_dataset(split="validation", as_supervised=True)))
    labels = sorted(int(label) for _, label in val)
    assert labels == sorted(label for label, _ in truth["val"].values())


def test_files_and_metadata_as_tfds_names_them(written):
    _, ds = written
    files = sorted(os.listdir(ds / DATA))
    assert files == ["dataset_info.json", "features.json",
                     "imagenet2012-test.tfrecord-00000-of-00001",
                     "imagenet2012-train.tfrecord-00000-of-00001",
                     "imagenet2012-validation.tfrecord-00000-of-00001", "label.labels.txt"]
    info = json.loads((ds / DATA / "dataset_info.json").read_text())
    assert info["name"] == "imagenet2012" and info["version"] == "5.1.0"
    for split in info["splits"]:
        shard = ds / DATA / f"imagenet2012-{split['name']}.tfrecord-00000-of-00001"
        records = [data for _, data in iter_records(shard)]
        assert split["shardLengths"] == [str(len(records))]
        assert split["numBytes"] == str(sum(map(len, records)))  # serialized Examples
    assert (ds / DATA / "label.labels.txt").read_text().split() == SORTED_WNIDS


def test_example_sizes_are_the_encoded_sizes():
    names = np.array([len("n01440764_10026.JPEG"), len("ILSVRC2012_test_00000001.JPEG"), 3] * 2)
    labels = np.array([0, -1, 999, 127, 128, 5])
    sizes = np.array([100, 20000, 3_000_000, 127, 128, 2**21])
    got = tfds_format.example_sizes(names, labels, sizes)
    for i in range(len(got)):
        pieces = tfds_format.example_parts(b"x" * int(sizes[i]), "n" * int(names[i]),
                                           int(labels[i]))
        data = b"".join(pieces)
        assert got[i] == len(data)
        ex = decode_example(data)
        assert ex["label"] == [labels[i]] and ex["file_name"] == [b"n" * int(names[i])]
        assert ex["image"] == [b"x" * int(sizes[i])]


@pytest.mark.parametrize("split, images, mean_bytes, shards", [
    ("train", 1_281_167, 110_000, 1024),  # ImageNet's real counts and mean image sizes
    ("val", 50_000, 128_000, 64),
    ("test", 100_000, 130_000, 128),
    ("train", 100, 1000, 1),
    ("train", 2000, 100_000, 2),  # 200 MB: 2 shards of 100 MB
])
def test_shard_count_is_tfds_rule(split, images, mean_bytes, shards):
    from tensorflow_datasets.core.utils.shard_utils import ShardConfig

    total = images * mean_bytes
    assert tfds_format.shard_count(total, images) == shards
    assert ShardConfig.calculate_number_shards(total, images) == shards
    ends = tfds_format.shard_ends(images, shards)
    from tensorflow_datasets.core.utils.shard_utils import get_shard_boundaries

    assert ends == list(get_shard_boundaries(images, shards))


def test_identical_for_workers_and_dask(written, tmp_path):
    arch, ds = written
    want = tree_digest(ds / "tfds")
    for extra in (["--workers", "1"], ["--dask-local", "2"]):
        out = tmp_path / extra[0].strip("-")
        run_cli("tfds", out, "--archives", arch, "--splits", "train,val,test", *extra)
        assert tree_digest(out / "tfds") == want, extra


def test_from_folders_equals_from_archives(written, tmp_path):
    arch, ds = written
    out = tmp_path / "ds"
    run_cli("prepare", "--archives", arch, "--out", out, "--only", "pytorch", "--no-report")
    run_cli("tfds", out, "--from-folders", "--splits", "train,val,test")
    assert tree_digest(out / "tfds") == tree_digest(ds / "tfds")


def kill_when(args: list, ready: Callable[[], bool], timeout: float = 60) -> bool:
    """Run imagenet-prep until `ready()`, then SIGKILL it; True if it died by the signal."""
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_prep", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    return proc.wait() == -signal.SIGKILL


@pytest.fixture(scope="module")
def larger(tmp_path_factory) -> Path:
    """3,000 small training images: a train shard takes long enough for a kill to land."""
    arch = tmp_path_factory.mktemp("tfds-larger")
    make_replica(arch, seed=3, workers=2, classes=5, train_per_class=600, val_per_class=4,
                 test=5, size=(32, 24))
    return arch


def test_killed_run_then_rerun_is_identical(larger, tmp_path):
    clean, ds = tmp_path / "clean", tmp_path / "killed"
    run_cli("tfds", clean, "--archives", larger, "--workers", "1")
    folder = ds / DATA
    killed = kill_when(["tfds", ds, "--archives", larger, "--workers", "1"],
                       lambda: folder.is_dir() and any(n.startswith(".imagenet2012-train")
                                                         for n in os.listdir(folder)))
    assert killed and not (folder / "dataset_info.json").exists()
    assert any("imagenet2012-train.tfrecord-00000-of-00001: missing" in p
               for p in check_dataset(ds)[0])  # a killed run is never taken for a whole one
    run_cli("tfds", ds, "--archives", larger, "--workers", "1")
    assert tree_digest(ds / "tfds") == tree_digest(clean / "tfds")
    assert not list(ds.rglob("*.ipart")) and check_dataset(ds)[0] == []


def test_check_proves_and_finds_damage(written, tmp_path):
    _, src = written
    assert check_dataset(src)[0] == []
    ds = tmp_path / "ds"
    shutil.copytree(src, ds)
    shard = ds / DATA / "imagenet2012-train.tfrecord-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    (ds / DATA / "imagenet2012-validation.tfrecord-00000-of-00001").unlink()
    info = ds / DATA / "dataset_info.json"
    info.write_text(info.read_text().replace('"version": "5.1.0"', '"version": "5.0.0"'))
    problems, checked = check_dataset(ds)
    text = "\n".join(problems)
    assert "imagenet2012-train.tfrecord-00000-of-00001: CRC32C mismatch" in text
    assert "imagenet2012-validation.tfrecord-00000-of-00001: missing" in text
    assert "dataset_info.json: does not describe the shards" in text
    assert str(DATA / "imagenet2012-train.tfrecord-00000-of-00001") in checked["damaged"]
    assert run_cli("check", ds, check=False).returncode == 1  # records what to write again
    run_cli("tfds", ds, "--archives", written[0], "--splits", "train,val,test")
    assert tree_digest(ds / "tfds") == tree_digest(src / "tfds")
    assert check_dataset(ds)[0] == []


def test_prepare_tfds_option(written, tmp_path):
    arch, ds = written
    out = tmp_path / "ds"
    run_cli("prepare", "--archives", arch, "--out", out, "--only", "tensorflow", "--tfds",
            "--train-shards", "2", "--val-shards", "1", "--no-report")
    want = {k: v for k, v in tree_digest(ds / "tfds").items() if "test" not in k
            and "dataset_info" not in k}
    got = tree_digest(out / "tfds")
    assert {k: v for k, v in got.items() if "dataset_info" not in k} == want
    info = json.loads((out / DATA / "dataset_info.json").read_text())
    assert [s["name"] for s in info["splits"]] == ["train", "validation"]
    assert check_dataset(out)[0] == []
    rows = {r.key: r.count for r in summary_rows(out, {})}  # what the report counts
    truth = truth_of(arch)
    assert (rows["tfds_train"], rows["tfds_val"]) == (len(truth["train"]), len(truth["val"]))


def test_tfds_metadata_reads_the_reference_tfrecords_in_place(written, tmp_path):
    arch, _ = written
    ds = tmp_path / "ds"
    run_cli("prepare", "--archives", arch, "--out", ds, "--only", "tensorflow",
            "--train-shards", "3", "--val-shards", "2", "--no-report")
    before = tree_digest(ds)
    run_cli("tfds", ds, "--describe-tfrecords")
    folder = ds / "tfds" / "imagenet2012_reference" / "1.0.0"
    assert sorted(os.listdir(folder)) == ["dataset_info.json", "features.json"]
    assert {k: v for k, v in tree_digest(ds).items() if not k.startswith("tfds/")} == before
    builder = tfds.builder_from_directory(str(folder))
    truth = truth_of(arch)
    for split, name in (("train", "train"), ("val", "validation")):
        got = {}
        for ex in tfds.as_numpy(builder.as_dataset(split=name)):
            image = ex["image"]
            got[image["filename"].decode()] = (int(image["class"]["label"]) - 1,
                                               image["encoded"].shape[:2])
            assert len(image["object"]["bbox"]["xmin"]) == len(image["object"]["bbox"]["label"])
        assert got == truth[split]  # every record: label (stored 1..1000), decoded size
        assert builder.info.splits[name].num_shards == (3 if split == "train" else 2)
    assert check_dataset(ds)[0] == []
    info = folder / "dataset_info.json"
    info.write_text(info.read_text().replace('"numBytes": "', '"numBytes": "1'))
    assert any("does not describe the TFRecord shards" in p for p in check_dataset(ds)[0])


def test_resized_variant_loads_in_tfds(written, tmp_path):
    """`tfds --resize box=24` writes the variant's TFDS folder: tfds.load gives every
    train and validation sample, 24x24, with its label; check proves it; WebP (not the
    feature's encoding) and --describe-tfrecords with --resize are refused in one line."""
    arch, _ = written
    ds = tmp_path / "ds"
    run_cli("tfds", ds, "--archives", arch, "--resize", "box=24", "--workers", "2")
    root = ds / "variants" / "box24"
    truth = truth_of(arch)
    for split in ("train", "val"):
        got = {ex["file_name"].decode(): (int(ex["label"]), ex["image"].shape)
               for ex in tfds.as_numpy(tfds.load("imagenet2012", split=SPLIT[split],
                                                 data_dir=root / "tfds", download=False))}
        assert got == {n: (label, (24, 24, 3)) for n, (label, _) in truth[split].items()}
    assert not (ds / "tfds").exists()  # the original's folder is untouched
    assert run_cli("check", ds).stdout.strip().endswith(": OK")
    for extra in (("--archives", arch, "--image-format", "webp"), ("--describe-tfrecords",)):
        proc = run_cli("tfds", ds, "--resize", "box=24", *extra, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1, proc.stderr


def test_a_variant_counts_its_resized_sizes_for_the_shard_count(replicas, tmp_path,
                                                                  monkeypatch):
    """TFDS's count follows the split's bytes: a box=16 variant, some 5x smaller than its
    originals, gets fewer shards than they do (TFDS's bounds scaled down so that a
    replica's megabytes span several shards)."""
    from imagenet_prep.shards import engine
    from imagenet_prep.shards.tfds import TfdsFormat

    monkeypatch.setattr(tfds_format, "MIN_SHARD_BYTES", 16 << 10)
    monkeypatch.setattr(tfds_format, "MAX_SHARD_BYTES", 256 << 10)
    cat = engine.split_catalog("train", tmp_path, replicas["medium"], False, "auto")
    counts = {}
    for resize in (None, "box=16 q90 jpeg"):
        fmt = TfdsFormat(tmp_path, {"version": tfds_format.VERSION,
                                    **({"resize": resize} if resize else {})})
        counts[resize] = len(fmt.bounds("train", cat, fmt.order("train", cat)))
    assert counts[None] >= 16 and counts["box=16 q90 jpeg"] <= counts[None] // 4, counts
