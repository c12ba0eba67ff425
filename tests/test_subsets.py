"""Subsets (issue 19): ImageNet-100 and the 1% training split from replicas that hold more.

Each replica holds the subset's classes and a few others, so every output must leave
something out.  What each output must hold is read from the archives with tarfile and
from the replica's own labels (replica.json, ReplicaInfo), never from the code under
test; labels are checked against torchvision's ImageFolder on the subset tree,
TensorFlow reading the TFRecords, webdataset reading the shards, and labels.json.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import webdataset
from helpers import one_line, run_cli

from imagenet_prep.cli import main
from imagenet_prep.layout import STATE_DIR, SUBSET_CLASSES, SUBSET_TRAIN
from imagenet_prep.replica.build import make_replica
from imagenet_prep.sources import metadata
from imagenet_prep.sources.subset import read_classes, read_train, resolve

TRAIN_TAR = "ILSVRC2012_img_train.tar"
SHAPE = dict(train_per_class=2, val_per_class=1, test=2, size=(16, 12))
PREPARE = ("--only", "all", "--wds", "--train-shards", "3", "--val-shards", "2",
           "--wds-shard-samples", "64", "--no-report", "--workers", "2", "--verify", "none")
IMAGENET100 = read_classes("imagenet100")[1]
IMAGENETTE = read_classes("imagenette")[1]
OTHERS = tuple(w for w in metadata.wnids() if w not in IMAGENET100 + IMAGENETTE)[:6]  # left out


def _archive_truth(archives: Path, info, classes: tuple[str, ...],
                   train_files: frozenset[str] | None = None) -> dict[str, set[tuple[str, str]]]:
    """split -> {(WNID, file name)} the subset must hold, from the archives themselves."""
    train = set()
    with tarfile.open(archives / TRAIN_TAR) as outer:
        for m in outer.getmembers():
            wnid = m.name[:-4]
            if wnid not in classes:
                continue
            with tarfile.open(fileobj=outer.extractfile(m)) as inner:
                train |= {(wnid, n) for n in inner.getnames()
                          if train_files is None or n in train_files}
    val = {(w, metadata.val_name(i + 1)) for i, w in enumerate(info.val_labels) if w in classes}
    return {"train": train, "val": val}


def _tree(root: Path) -> set[tuple[str, str]]:
    return {(d.name, f.name) for d in root.iterdir() if d.is_dir() for f in d.iterdir()}


def _prepared(root: Path, classes: tuple[str, ...], *args: str, **replica) -> dict:
    archives, ds = root / "archives", root / "dataset"
    info = make_replica(archives, seed=5, workers=2, **SHAPE, **replica)
    assert main(["prepare", "--archives", str(archives), "--out", str(ds), *PREPARE, *args]) == 0
    return {"archives": archives, "ds": ds, "info": info, "classes": classes}


@pytest.fixture(scope="module")
def in100(tmp_path_factory) -> dict:
    """ImageNet-100 prepared from a replica of its 100 classes and 6 others."""
    p = _prepared(tmp_path_factory.mktemp("in100"), IMAGENET100, "--classes", "imagenet100",
                  wnids=IMAGENET100 + OTHERS)
    p["truth"] = _archive_truth(p["archives"], p["info"], IMAGENET100)
    return p


@pytest.fixture(scope="module")
def pct1(tmp_path_factory) -> dict:
    """Imagenette's classes with the 1% training split, from a replica holding the 1% files
    of its classes among others, and 3 classes more."""
    names = read_train("1pct")[1]
    p = _prepared(tmp_path_factory.mktemp("pct1"), IMAGENETTE, "--classes", "imagenette",
                  "--train-subset", "1pct", wnids=IMAGENETTE + OTHERS[:3], train_files=names)
    p["train_files"] = frozenset(n for n in names if n.split("_")[0] in IMAGENETTE)
    p["truth"] = _archive_truth(p["archives"], p["info"], IMAGENETTE, p["train_files"])
    return p


def _tfrecords(ds: Path) -> dict[str, list[tuple[str, int, str]]]:
    """split -> (file name, label, synset) of every record, as TensorFlow parses them."""
    tf = pytest.importorskip("tensorflow")
    spec = {"image/filename": tf.io.FixedLenFeature([], tf.string),
            "image/class/synset": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64),
            "image/encoded": tf.io.FixedLenFeature([], tf.string)}
    out = {}
    for split in ("train", "val"):
        paths = sorted(str(p) for p in (ds / f"tfrecord_{split}").iterdir())
        out[split] = []
        for raw in tf.data.TFRecordDataset(paths):
            ex = tf.io.parse_single_example(raw, spec)
            assert tf.io.decode_jpeg(ex["image/encoded"], channels=3).shape[2] == 3
            out[split].append((ex["image/filename"].numpy().decode(),
                               int(ex["image/class/label"]),
                               ex["image/class/synset"].numpy().decode()))
    return out


def _wds(ds: Path) -> dict[str, list[dict]]:
    out = {}
    for split, prefix in (("train", "train"), ("val", "validation")):
        urls = [str(p) for p in sorted((ds / "wds").glob(f"{prefix}-*.tar"))]
        out[split] = list(webdataset.WebDataset(urls, shardshuffle=False, empty_check=False))
    return out


def _labels_csv(ds: Path) -> dict[str, dict[str, str]]:
    with open(ds / "labels.csv", newline="") as f:
        return {row["wnid"]: row for row in csv.DictReader(f)}


# --- ImageNet-100 ----------------------------------------------------------------------

def test_imagenet100_trees_hold_exactly_the_subset(in100):
    ds, truth = in100["ds"], in100["truth"]
    assert _tree(ds / "train") == truth["train"]
    assert _tree(ds / "val") == truth["val"]
    assert {d.name for d in (ds / "train").iterdir()} == set(IMAGENET100)
    assert set(os.listdir(ds / "train_flatten")) == {n for _, n in truth["train"]}
    assert set(os.listdir(ds / "val_flatten")) == {f"{w}_{n}" for w, n in truth["val"]}
    assert [line.split()[0] for line in (ds / "synsets.txt").read_text().splitlines()] == \
        sorted(IMAGENET100)
    assert not (ds / "test").exists()  # no classes: not part of a class subset


def test_imagefolder_gives_the_documented_indices(in100):
    datasets = pytest.importorskip("torchvision.datasets")
    ds = in100["ds"]
    rows = _labels_csv(ds)
    for split in ("train", "val"):
        folder = datasets.ImageFolder(str(ds / split))
        assert folder.classes == sorted(IMAGENET100)
        assert folder.class_to_idx == {w: int(rows[w]["label"]) for w in IMAGENET100}
        assert {(folder.classes[t], Path(p).name) for p, t in folder.samples} == \
            in100["truth"][split]
    assert {w: int(r["imagenet_label"]) for w, r in rows.items()} == \
        {w: metadata.wnid_to_index()[w] for w in IMAGENET100}


def test_tensorflow_reads_the_subset_records_with_subset_labels(in100):
    rows = _labels_csv(in100["ds"])
    for split, records in _tfrecords(in100["ds"]).items():
        want = {(n, int(rows[w]["tfrecord_label"]), w) for w, n in in100["truth"][split]}
        assert set(records) == want and len(records) == len(want)
        assert {label for _, label, _ in records} <= set(range(1, 101))


def test_webdataset_labels_match_the_folders(in100):
    rows = _labels_csv(in100["ds"])
    for split, samples in _wds(in100["ds"]).items():
        got = set()
        for s in samples:
            meta = json.loads(s["json"])
            assert int(s["cls"]) == meta["label"] == int(rows[meta["wnid"]]["label"])
            assert meta["imagenet_label"] == metadata.wnid_to_index()[meta["wnid"]]
            got.add((meta["wnid"], meta["filename"]))
        assert got == in100["truth"][split] and len(samples) == len(got)


def test_label_files_map_every_convention(in100):
    ds = in100["ds"]
    doc = json.loads((ds / "labels.json").read_text())
    words = metadata.descriptions()
    assert [r["wnid"] for r in doc["classes"]] == sorted(IMAGENET100)
    for k, r in enumerate(doc["classes"]):
        i = metadata.wnid_to_index()[r["wnid"]]
        assert (r["label"], r["imagenet_label"], r["tfrecord_label"], r["reference_label"]) \
            == (k, i, k + 1, i + 1)
        assert r["description"] == words[r["wnid"]]
        assert r["hf_name"] == metadata.hub_class_names()[i]
    assert doc["subset"]["classes"] == "imagenet100" and doc["subset"]["num_classes"] == 100
    assert {w: int(r["label"]) for w, r in _labels_csv(ds).items()} == \
        {r["wnid"]: r["label"] for r in doc["classes"]}


def test_check_and_report_know_the_subset(in100):
    proc = run_cli("check", in100["ds"])
    assert proc.stdout.strip().endswith("OK") and "subset: imagenet100 (100 classes)" in proc.stdout


def test_another_subset_is_refused_and_none_resumes(in100):
    a, ds = in100["archives"], in100["ds"]
    before = (ds / "labels.json").read_bytes()
    proc = run_cli("prepare", "--archives", a, "--out", ds, *PREPARE, "--classes", "imagenette",
                   check=False)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "holds the subset imagenet100" in err[0] and "imagenette" in err[0]
    proc = run_cli("tfrecord", ds, "--archives", a, "--train-shards", "3", "--val-shards", "2",
                   "--subset-labels", "imagenet", "--classes", "imagenet100", check=False)
    assert proc.returncode == 1 and "labels subset" in proc.stderr
    run_cli("tfrecord", ds, "--archives", a, "--train-shards", "3", "--val-shards", "2")
    same = ds.parent / "same-classes.txt"  # the same classes under another name: accepted
    same.write_text("# ImageNet-100, reversed\n" + "\n".join(reversed(IMAGENET100)) + "\n")
    run_cli("synsets", ds, "--classes", same)
    assert (ds / "labels.json").read_bytes() == before
    assert run_cli("check", ds).stdout.strip().endswith("OK")


# --- the 1% split ------------------------------------------------------------------------

def test_1pct_every_output_holds_exactly_the_listed_files(pct1):
    ds, truth, files = pct1["ds"], pct1["truth"], pct1["train_files"]
    assert {n for _, n in truth["train"]} == files  # the replica holds every listed file
    assert _tree(ds / "train") == truth["train"]
    assert _tree(ds / "val") == truth["val"]  # validation: every image of the classes
    assert set(os.listdir(ds / "train_flatten")) == files
    tf_records = _tfrecords(ds)
    samples = _wds(ds)
    for split in ("train", "val"):
        assert {(w, n) for n, _, w in tf_records[split]} == truth[split]
        assert len(tf_records[split]) == len(truth[split])
        assert {(json.loads(s["json"])["wnid"], json.loads(s["json"])["filename"])
                for s in samples[split]} == truth[split]
    proc = run_cli("check", ds)
    assert proc.stdout.strip().endswith("OK"), proc.stdout


def test_1pct_summary_shows_the_bytes_read(pct1, tmp_path):
    proc = run_cli("prepare", "--archives", pct1["archives"], "--out", tmp_path / "ds",
                   "--only", "tensorflow", "--train-shards", "2", "--val-shards", "1",
                   "--no-report", "--verify", "none", "--classes", "imagenette",
                   "--train-subset", "1pct", "--subset-labels", "imagenet")
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("subset"))
    assert "imagenette (10 classes), train 1pct" in line and "MB of the" in line
    records = _tfrecords(tmp_path / "ds")
    assert {label - 1 for _, label, w in records["train"]} == \
        {metadata.wnid_to_index()[w] for w in IMAGENETTE}  # --subset-labels imagenet
    assert len(records["train"]) == len(pct1["train_files"])
    assert run_cli("check", tmp_path / "ds").stdout.strip().endswith("OK")


def test_check_finds_a_damaged_subset(pct1, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(pct1["ds"], ds, symlinks=True)
    victim = sorted((ds / "train" / IMAGENETTE[0]).iterdir())[0]
    victim.unlink()
    (ds / "train_flatten" / victim.name).unlink()
    stranger = ds / "train" / OTHERS[0]
    stranger.mkdir()
    (stranger / f"{OTHERS[0]}_1.JPEG").write_bytes(b"x")
    (ds / "labels.csv").write_text("wnid\n")
    proc = run_cli("check", ds, check=False)
    assert proc.returncode == 1
    out = proc.stdout
    assert f"training files: 1 missing, first: {victim.name}" in out
    assert f"class folders: 1 not in the subset, first: {OTHERS[0]}" in out
    assert "labels.csv: differs" in out


# --- bad lists ----------------------------------------------------------------------------

@pytest.mark.parametrize("content, option, message", [
    ("n01440764\nn99999999\nfoo\n", "--classes",
     "2 entries are not ILSVRC2012 class WNIDs, first: n99999999, foo"),
    ("# nothing\n\n", "--classes", "no WNIDs: the subset would be empty"),
    ("n01440764_99999998.JPEG\nn01440764_99999999.JPEG\n", "--train-subset",
     "2 training file names are not in"),
    ("cat.jpg\n", "--train-subset", "1 entries are not ILSVRC2012 training file names"),
])
def test_bad_lists_are_one_line_errors_and_write_nothing(pct1, tmp_path, content, option,
                                                          message):
    lst = tmp_path / "list.txt"
    lst.write_text(content)
    ds = tmp_path / "ds"
    proc = run_cli("prepare", "--archives", pct1["archives"], "--out", ds, *PREPARE, option,
                   lst, check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(err) == 1 and message in err[0], proc.stderr
    assert not (ds / "labels.json").exists() and not (ds / "train").exists()


def test_named_lists_and_their_intersections():
    sub = resolve("imagenet100", None)
    assert sub.classes == tuple(sorted(IMAGENET100)) and len(sub.classes) == 100
    one = resolve(None, "1pct")
    assert len(one.train_files) == 12_811 and len(one.classes) == 1000
    both = resolve("imagewoof", "10pct")
    assert len(both.classes) == 10 and all(n.split("_")[0] in both.classes
                                           for n in both.train_files)
    with pytest.raises(Exception, match="not a file, nor one of the named class lists"):
        resolve("imagenet1000", None)


def test_fake_holds_the_chosen_classes_and_listed_files(tmp_path):
    run_cli("fake", "--out", tmp_path, "--wnids", "imagewoof", "--train-files", "1pct",
            "--train-per-class", "1", "--val-per-class", "1", "--test", "1", "--size", "8x8",
            "--workers", "1")
    woof = read_classes("imagewoof")[1]
    listed = {n for n in read_train("1pct")[1] if n.split("_")[0] in woof}
    held = set()
    with tarfile.open(tmp_path / TRAIN_TAR) as outer:
        assert sorted(m.name[:-4] for m in outer.getmembers()) == sorted(woof)
        for m in outer.getmembers():
            with tarfile.open(fileobj=outer.extractfile(m)) as inner:
                held |= set(inner.getnames())
    assert listed <= held and len(held - listed) <= len(woof)  # plus one generated each
    params = json.loads((tmp_path / "replica.json").read_text())["params"]
    assert params["wnids"] == sorted(woof) and params["train_files"] == len(listed)


def test_a_refused_list_leaves_the_dataset_free_for_the_right_one(pct1, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("n01440764_99999999.JPEG\n")
    ds = tmp_path / "ds"
    proc = run_cli("extract", "--archives", pct1["archives"], "--out", ds, "--train-subset",
                   bad, check=False)
    assert proc.returncode == 1 and "1 training file names are not in" in proc.stderr
    run_cli("extract", "--archives", pct1["archives"], "--out", ds, "--classes", "imagenette",
            "--train-subset", "1pct")
    assert {n for _, n in _tree(ds / "train")} == pct1["train_files"]


def test_a_claim_cut_short_before_its_record_resumes(pct1, tmp_path):
    """The first run with a subset writes its lists, then its record (subset.json), with
    the expectation already written: killed in between, the rerun with the same subset
    goes on (it was refused as "holds the whole of ILSVRC2012"); another subset, or none,
    is refused in one line, and `check` names the missing record."""
    ds = tmp_path / "ds"
    (ds / STATE_DIR).mkdir(parents=True)
    for name in ("expect.json", SUBSET_CLASSES, SUBSET_TRAIN):
        shutil.copy(pct1["ds"] / STATE_DIR / name, ds / STATE_DIR / name)
    a = pct1["archives"]
    for other in (("--classes", "imagenette"), ()):
        one_line(run_cli("extract", "--archives", a, "--out", ds, *other, check=False), 1,
                 "subset.json: missing, but", SUBSET_CLASSES, "rerun with the same")
    assert "subset.json: missing" in run_cli("check", ds, check=False).stdout
    run_cli("extract", "--archives", a, "--out", ds, "--classes", "imagenette",
            "--train-subset", "1pct")
    assert {n for _, n in _tree(ds / "train")} == pct1["train_files"]
    assert (ds / STATE_DIR / "subset.json").is_file()


def test_parquet_and_mds_hold_the_subset(pct1, tmp_path):
    """The loaders' formats go through the same filter: Parquet keeps the Hub's 0..999
    (its ClassLabel names the 1000 classes), MDS `y` is the dataset's label."""
    pq = pytest.importorskip("pyarrow.parquet")
    a, ds = pct1["archives"], tmp_path / "ds"
    run_cli("parquet", ds, "--archives", a, "--splits", "train,val", "--classes", "imagenette",
            "--train-subset", "1pct", "--workers", "1")
    run_cli("mds", ds, "--archives", a, "--splits", "train,val", "--workers", "1")  # inherits
    index = metadata.wnid_to_index()
    for split, hub in (("train", "train"), ("val", "validation")):
        rows = [r for p in sorted((ds / "parquet" / "data").glob(f"{hub}-*.parquet"))
                for r in pq.read_table(p).to_pylist()]
        want = pct1["truth"][split]
        assert sorted(r["image"]["path"] for r in rows) == sorted(n for _, n in want)
        assert sorted(r["label"] for r in rows) == sorted(index[w] for w, _ in want)
        mds_index = json.loads((ds / "mds" / split / "index.json").read_text())
        assert sum(s["samples"] for s in mds_index["shards"]) == len(want)
    assert run_cli("check", ds).stdout.strip().endswith("OK")


def test_a_variant_made_later_takes_the_original_subset(pct1, tmp_path):
    """`tfrecord --resize` on a subset dataset, without --classes/--train-subset, resizes
    exactly the original's images (its own subset record says so); `check` proves it."""
    ds = tmp_path / "ds"
    subprocess.run(["cp", "-a", pct1["ds"], ds], check=True)  # the flat folders' links kept
    run_cli("tfrecord", ds, "--archives", pct1["archives"], "--resize", "box=16",
            "--workers", "1")
    variant = ds / "variants" / "box16"
    got = _tfrecords(variant)
    for split in ("train", "val"):
        assert sorted(n for n, _, _ in got[split]) == sorted(n for _, n in pct1["truth"][split])
    assert json.loads((variant / ".imagenet-prep" / "subset.json").read_text()) == \
        json.loads((ds / ".imagenet-prep" / "subset.json").read_text())
    assert run_cli("check", ds).stdout.strip().endswith("OK")


@pytest.mark.parametrize("list_name, damage", [(SUBSET_TRAIN, "flip"), (SUBSET_CLASSES, "delete"),
                                               (SUBSET_TRAIN, "edit")])
def test_a_damaged_subset_list_is_named_and_the_same_run_writes_it_back(pct1, tmp_path,
                                                                       list_name, damage):
    """A subset list damaged (a flipped bit made it no longer UTF-8: a traceback before),
    deleted or edited is one problem line of `check`; the same run writes it back, since
    the record's SHA-256 proves the asked lists are the recorded ones, and another subset
    is still refused."""
    ds = tmp_path / "ds"
    shutil.copytree(pct1["ds"], ds, symlinks=True)
    path = ds / STATE_DIR / list_name
    good = path.read_bytes()
    if damage == "delete":
        path.unlink()
    else:
        data = bytearray(good)
        data[len(data) // 2] ^= 0x80 if damage == "flip" else 0x01
        path.write_bytes(bytes(data))
    proc = run_cli("check", ds, check=False)
    assert proc.returncode == 1
    assert f"problem: {path}: " in proc.stdout and "to write it again" in proc.stdout
    a = pct1["archives"]
    one_line(run_cli("extract", "--archives", a, "--out", ds, "--classes", "imagenette",
                     check=False), 1, str(path))
    run_cli("prepare", "--archives", a, "--out", ds, *PREPARE, "--classes", "imagenette",
            "--train-subset", "1pct")
    assert path.read_bytes() == good
    assert run_cli("check", ds).stdout.strip().endswith(": OK")
