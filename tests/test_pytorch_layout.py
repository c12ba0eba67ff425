"""The seed's PyTorch layout from the archives: extract, valtree, flatten, synsets, check."""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import threading
from collections import Counter
from pathlib import Path

import pytest
from expected import bbox_val_truth, devkit_truth, devkit_words, seed_extraction
from helpers import run_cli, tree_digest
from tarutil import tar_bytes

from imagenet_prep.check import check_dataset
from imagenet_prep.cli import main
from imagenet_prep.errors import LabelError
from imagenet_prep.folders.extract import extract
from imagenet_prep.folders.flatten import flatten
from imagenet_prep.folders.synsets import write_synsets
from imagenet_prep.folders.valtree import valtree
from imagenet_prep.sources.archives import BBOX_VAL


def _files(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".imagenet-prep"]
        for n in filenames:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def test_extract_equals_seed_tar_commands(replica, tmp_path):
    ds = tmp_path / "ds"
    assert main(["extract", "--archives", str(replica), "--out", str(ds), "--workers", "2"]) == 0
    assert _files(ds) == seed_extraction(replica)
    assert check_dataset(ds)[0] == []


def test_prepare_pytorch_full_layout(replica, tmp_path, capsys):
    ds = tmp_path / "ds"
    rc = main(["prepare", "--archives", str(replica), "--out", str(ds), "--only", "pytorch"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "disk plan" in out and "extract" in out
    seed = seed_extraction(replica)
    truth = devkit_truth(replica)
    # train and test exactly as extracted; val grouped by the devkit truth
    got = _files(ds)
    for rel, data in seed.items():
        if rel.startswith("val/"):
            name = rel[4:]
            assert got[f"val/{truth[name]}/{name}"] == data
            assert got[f"val_flatten/{truth[name]}_{name}"] == data
        else:
            assert got[rel] == data
        if rel.startswith("train/"):
            assert got[f"train_flatten/{rel.split('/')[-1]}"] == data
    # hard links: same inode, two links
    for rel in (r for r in seed if r.startswith("train/")):
        a, b = ds / rel, ds / "train_flatten" / rel.split("/")[-1]
        assert os.stat(a).st_ino == os.stat(b).st_ino and os.stat(a).st_nlink == 2
    # synsets.txt: classes present, devkit words
    words = devkit_words(replica)
    classes = sorted({r.split("/")[1] for r in seed if r.startswith("train/")})
    assert (ds / "synsets.txt").read_text() == "".join(f"{w} {words[w]}\n" for w in classes)
    assert run_cli("check", ds).returncode == 0


@pytest.mark.parametrize("source", ["devkit", "bbox", "auto"])
def test_valtree_each_label_source(small_replica, tmp_path, source):
    ds = tmp_path / "ds"
    extract(small_replica, ds, splits=("val", "bbox_val"), workers=1)
    rec = valtree(ds, small_replica, source)
    truth = devkit_truth(small_replica)
    assert truth == bbox_val_truth(small_replica)
    assert rec["files"] == len(truth)
    for name, wnid in truth.items():
        assert (ds / "val" / wnid / name).is_file()
    assert not [p for p in (ds / "val").iterdir() if p.is_file()]


def test_valtree_bbox_source_from_archive_only(small_replica, tmp_path):
    ds = tmp_path / "ds"
    extract(small_replica, ds, splits=("val",), workers=1)
    valtree(ds, small_replica, "bbox")
    for name, wnid in bbox_val_truth(small_replica).items():
        assert (ds / "val" / wnid / name).is_file()


def test_valtree_refuses_disagreeing_sources(archives_copy, tmp_path):
    """The devkit and the box archive (the labels' inputs) disagree on one image."""
    ds = tmp_path / "ds"
    extract(archives_copy, ds, splits=("val", "bbox_val"), workers=1)
    truth = devkit_truth(archives_copy)
    first = sorted(truth)[1]
    other = next(w for w in set(truth.values()) if w != truth[first])
    box_archive = archives_copy / BBOX_VAL
    with tarfile.open(box_archive) as t:
        members = {m.name: t.extractfile(m).read() for m in t if m.isfile()}
    name = next(n for n in members if n.endswith(first[:-5] + ".xml"))
    members[name] = members[name].replace(f"<name>{truth[first]}</name>".encode(),
                                          f"<name>{other}</name>".encode(), 1)
    box_archive.write_bytes(gzip.compress(tar_bytes(members), mtime=0))
    with pytest.raises(LabelError, match=first):
        valtree(ds, archives_copy, "auto")
    assert main(["valtree", str(ds), "--archives", str(archives_copy)]) == 1
    # nothing moved
    assert len([p for p in (ds / "val").iterdir() if p.is_file()]) == len(truth)


def test_bundled_labels_refused_for_other_image_sets(small_replica, tmp_path, capsys):
    ds = tmp_path / "ds"
    extract(small_replica, ds, splits=("val",), workers=1)
    assert main(["valtree", str(ds), "--labels", "bundled"]) == 1
    assert "real 50,000" in capsys.readouterr().err


def test_valtree_resumes_after_partial_moves(small_replica, tmp_path):
    ds = tmp_path / "ds"
    extract(small_replica, ds, splits=("val",), workers=1)
    truth = devkit_truth(small_replica)
    # a run that stopped after moving a third of the files
    for name in sorted(truth)[: len(truth) // 3]:
        (ds / "val" / truth[name]).mkdir(exist_ok=True)
        os.rename(ds / "val" / name, ds / "val" / truth[name] / name)
    valtree(ds, small_replica, "devkit")
    assert Counter(p.parent.name for p in (ds / "val").glob("*/*.JPEG")) == Counter(truth.values())
    for name, wnid in truth.items():
        assert (ds / "val" / wnid / name).is_file()


def test_flatten_modes(small_replica, tmp_path):
    ds = tmp_path / "ds"
    extract(small_replica, ds, splits=("train",), workers=1)
    flatten(ds, ("train",), "symlink")
    link = next((ds / "train_flatten").iterdir())
    assert link.is_symlink() and link.resolve().parent.parent == (ds / "train").resolve()
    shutil.rmtree(ds / "train_flatten")
    flatten(ds, ("train",), "copy")
    f = next((ds / "train_flatten").iterdir())
    assert not f.is_symlink() and os.stat(f).st_nlink == 1
    assert check_dataset(ds)[0] == []


def test_flatten_falls_back_to_copies_when_links_refused(small_replica, tmp_path, monkeypatch,
                                                         capsys):
    ds = tmp_path / "ds"
    extract(small_replica, ds, splits=("train",), workers=1)

    def refuse(*a, **k):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    summary = flatten(ds, ("train",), "hardlink")
    assert summary["train"]["mode"] == "copy"
    assert "copying instead" in capsys.readouterr().err
    assert check_dataset(ds)[0] == []


def test_synsets_bundled_without_devkit(small_replica, tmp_path):
    ds = tmp_path / "ds"
    extract(small_replica, ds, splits=("train",), workers=1)
    assert write_synsets(ds, None)["source"] == "bundled"
    lines = (ds / "synsets.txt").read_text().splitlines()
    assert lines[0] == "n01440764 tench, Tinca tinca"


def test_check_finds_problems(small_replica, tmp_path, capsys):
    ds = tmp_path / "ds"
    main(["prepare", "--archives", str(small_replica), "--out", str(ds), "--only", "pytorch"])
    victim = next((ds / "train").glob("*/*.JPEG"))
    victim.unlink()
    (ds / "test" / ".x.JPEG.ipart").write_bytes(b"half")
    capsys.readouterr()
    assert main(["check", str(ds)]) == 1
    out = capsys.readouterr().out
    # the missing file, the temporary file, and the flat link left without its source
    assert victim.parent.name in out and "temporary" in out and "train_flatten" in out


def test_no_inner_tar_ever_written(replicas, tmp_path):
    """Peak disk is the final tree: watch DATASET for any .tar while extraction runs."""
    ds = tmp_path / "ds"
    seen: list[str] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            for _dir, _, names in os.walk(ds):
                seen.extend(n for n in names if ".tar" in n)

    t = threading.Thread(target=watch)
    t.start()
    try:
        run_cli("extract", "--archives", replicas["medium"], "--out", ds)
    finally:
        done.set()
        t.join()
    assert seen == []
    assert len(list((ds / "train").glob("*/*.JPEG"))) > 0


def test_rerun_is_a_no_op(small_replica, tmp_path):
    ds = tmp_path / "ds"
    run_cli("prepare", "--archives", small_replica, "--out", ds, "--only", "pytorch")
    before = {p: p.stat().st_mtime_ns for p in ds.rglob("*") if p.is_file()}
    run_cli("prepare", "--archives", small_replica, "--out", ds, "--only", "pytorch")
    after = {p: p.stat().st_mtime_ns for p in ds.rglob("*") if p.is_file()}
    # synsets.txt is rewritten; report.html too (it shows each run's timings)
    changed = [p for p in before if before[p] != after.get(p) and ".imagenet-prep" not in str(p)
               and p.name not in ("synsets.txt", "report.html")]
    assert changed == []
    assert tree_digest(ds).keys() == {str(p.relative_to(ds)) for p in before
                                      if ".imagenet-prep" not in str(p)}
