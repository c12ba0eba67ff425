"""Issue 18's findings 1-5, each reproduced: `check` never says OK on an incomplete or damaged
dataset, outputs are made only from complete inputs, and archives are what they should be."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import one_line, reseal, run_cli, tree_digest

from imagenet_prep.layout import STATE_DIR
from imagenet_prep.replica.build import make_replica
from imagenet_prep.sources.archives import TRAIN

SHARDS = ("--train-shards", "3", "--val-shards", "2")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, replicas) -> tuple[Path, Path]:
    """A dataset with every output, made once; tests copy it before damaging it."""
    ds = tmp_path_factory.mktemp("trust") / "ds"
    run_cli("prepare", "--archives", replicas["small"], "--out", ds, "--only", "all", *SHARDS,
            "--no-report")
    return replicas["small"], ds


def _copy(ds: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    subprocess.run(["cp", "-a", str(ds), str(out)], check=True)
    return out


# --- 1. check on things that are not (complete) datasets ----------------------------------

def test_check_on_an_empty_folder_or_the_archives_is_nothing_to_check(tmp_path, small_replica):
    for folder in (tmp_path, small_replica):
        before = sorted(os.listdir(folder))
        proc = run_cli("check", folder, check=False)
        assert proc.returncode == 8
        assert "nothing here to check" in proc.stderr
        assert sorted(os.listdir(folder)) == before  # nothing written where we only read


def _killed_extract(archives: Path, ds: Path) -> None:
    """Start `extract` and SIGKILL it once some images are there but not all."""
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_prep", "extract", "--archives",
                             str(archives), "--out", str(ds), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        train = ds / "train"
        if train.is_dir() and sum(len(f) for _, _, f in os.walk(train)) > 200:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "extract finished before the kill"


@pytest.fixture(scope="module")
def big_replica(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("big-replica")
    make_replica(out, classes=30, train_per_class=120, val_per_class=4, test=4, size=(24, 18),
                 seed=2, workers=2)
    return out


def test_killed_extract_is_not_ok_and_not_a_source(tmp_path, big_replica):
    ds = tmp_path / "ds"
    _killed_extract(big_replica, ds)
    proc = run_cli("check", ds, check=False)
    assert proc.returncode == 1
    assert "extraction did not finish" in proc.stdout
    one_line(run_cli("tfrecord", ds, "--from-folders", check=False), None,
             "extraction did not finish")
    assert not (ds / "tfrecord_train").exists()
    run_cli("extract", "--archives", big_replica, "--out", ds)  # the rerun completes it
    assert run_cli("check", ds).stdout.strip().endswith(": OK")


def test_killed_prepare_is_judged_by_what_was_asked(tmp_path, big_replica):
    """The expectation is written before any work: outputs not yet begun are missing."""
    ds = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_prep", "prepare", "--archives",
                             str(big_replica), "--out", str(ds), "--only", "all", "--workers",
                             "1", "--no-report", *SHARDS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (ds / "train").is_dir():
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "prepare finished before the kill"
    out = run_cli("check", ds, check=False).stdout
    for gone in ("train_flatten", "tfrecord_train", "imagenet_2012_bounding_boxes.csv"):
        assert f"{ds / gone}" in out, out


def test_check_says_a_run_is_in_progress(tmp_path, prepared):
    from imagenet_prep.runtime.files import dataset_lock

    ds = _copy(prepared[1], tmp_path)
    (ds / "train" / ".x.JPEG.ipart").write_bytes(b"in flight")  # a run's temporary file
    with dataset_lock(ds):
        proc = run_cli("check", ds, check=False)
    one_line(proc, None, "another imagenet-prep run")


def test_check_knows_what_was_asked(tmp_path, prepared):
    """An output that was asked for and is gone entirely is a problem, not a smaller dataset."""
    ds = _copy(prepared[1], tmp_path)
    for gone in ("val_flatten", "tfrecord_val"):
        shutil.rmtree(ds / gone)
    out = run_cli("check", ds, check=False).stdout
    assert f"{ds / 'val_flatten'}: missing" in out
    assert f"{ds / 'tfrecord_val'}: missing" in out


# --- 2. deleted images are restored, and never silently left out ----------------------------

def test_deleted_class_folder_is_restored_by_prepare(tmp_path, prepared):
    archives, clean = prepared
    ds = _copy(clean, tmp_path)
    wnid = sorted(os.listdir(ds / "train"))[0]
    shutil.rmtree(ds / "train" / wnid)
    assert f"train/{wnid}: 0 files" in run_cli("check", ds, check=False).stdout
    one_line(run_cli("wds", ds, "--from-folders", "--out", tmp_path / "w", check=False), None,
             f"{ds / 'train' / wnid}: 0 images")
    run_cli("prepare", "--archives", archives, "--out", ds, "--only", "all", *SHARDS,
            "--no-report")
    assert tree_digest(ds) == tree_digest(clean)
    assert run_cli("check", ds).returncode == 0


# --- 3. content damage -------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "zero", "swap", "synsets", "csv", "labels"])
def test_content_damage_is_found_and_mended(tmp_path, prepared, damage):
    archives, clean = prepared
    ds = _copy(clean, tmp_path)
    image = sorted((ds / "train").rglob("*.JPEG"))[0]
    shards = sorted((ds / "tfrecord_train").iterdir())
    if damage == "truncate":
        os.truncate(image, image.stat().st_size // 2)
    elif damage == "zero":
        image.write_bytes(bytes(image.stat().st_size))
    elif damage == "swap":  # a shard copied over another with the same record count
        shutil.copyfile(shards[0], shards[1])
    else:
        (ds / {"synsets": "synsets.txt", "csv": "imagenet_2012_bounding_boxes.csv",
               "labels": "labels.json"}[damage]).unlink()
    proc = run_cli("check", ds, check=False)
    assert proc.returncode == 1, proc.stdout
    run_cli("prepare", "--archives", archives, "--out", ds, "--only", "all", *SHARDS,
            "--no-report")
    assert tree_digest(ds) == tree_digest(clean)
    assert run_cli("check", ds).returncode == 0


@pytest.mark.parametrize("name", ["imagenet_2012_bounding_boxes.csv", "synsets.txt"])
def test_a_link_to_equal_bytes_in_place_of_a_written_file_is_named_and_replaced(
        tmp_path, prepared, name):
    """A symlink where a stage wrote a file, pointing at the very same bytes: `check` read
    through it and said OK, and the rerun left it (the output then changes with whatever
    it points at). Now `check` names it and the rerun writes a file of its own in its
    place; the rename replaces the link, never the file it pointed at."""
    archives, clean = prepared
    ds = _copy(clean, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.copyfile(ds / name, elsewhere)
    (ds / name).unlink()
    (ds / name).symlink_to(elsewhere)
    proc = run_cli("check", ds, check=False)
    assert proc.returncode == 1, proc.stdout
    assert f"problem: {ds / name}: not a regular file (a link or special file where " \
        in proc.stdout
    run_cli("prepare", "--archives", archives, "--out", ds, "--only", "all", *SHARDS,
            "--no-report")
    assert not (ds / name).is_symlink() and elsewhere.read_bytes() == (clean / name).read_bytes()
    assert tree_digest(ds) == tree_digest(clean)
    assert run_cli("check", ds).returncode == 0


def test_a_stray_box_xml_never_enters_the_csv(tmp_path, prepared):
    """An XML that extraction did not write, in bbox_train/, when the CSV is made again:
    its boxes went into the CSV; once it was moved away, `check` said OK over that CSV
    while the next run refused the shards ("written from other train images or boxes").
    Now the CSV stage refuses it by name and writes nothing."""
    archives, clean = prepared
    ds = _copy(clean, tmp_path)
    xml = sorted((ds / "bbox_train").rglob("*.xml"))[0]
    stray = xml.with_name(xml.stem + "0.xml")
    shutil.copyfile(xml, stray)
    (ds / "imagenet_2012_bounding_boxes.csv").unlink()
    proc = run_cli("prepare", "--archives", archives, "--out", ds, "--only", "all", *SHARDS,
                   "--no-report", check=False)
    one_line(proc, 1, f"{stray}: not a file of the archive (extraction did not write it); "
             f"move it out of {ds / 'bbox_train'} and rerun")
    assert not (ds / "imagenet_2012_bounding_boxes.csv").exists()
    stray.rename(tmp_path / stray.name)
    run_cli("prepare", "--archives", archives, "--out", ds, "--only", "all", *SHARDS,
            "--no-report")
    assert tree_digest(ds) == tree_digest(clean)
    assert run_cli("check", ds).returncode == 0


def test_a_lost_box_piece_does_not_make_its_xmls_strays(tmp_path, prepared):
    """With a class's manifest piece lost, nothing says which of its XMLs extraction
    wrote: `bbox` alone makes the same CSV rather than refuse a real XML as a stray."""
    _, clean = prepared
    ds = _copy(clean, tmp_path)
    piece = sorted((ds / STATE_DIR / "files" / "bbox_train").iterdir())[0]
    piece.unlink()
    (ds / "imagenet_2012_bounding_boxes.csv").unlink()
    run_cli("bbox", ds)
    assert (ds / "imagenet_2012_bounding_boxes.csv").read_bytes() == \
        (clean / "imagenet_2012_bounding_boxes.csv").read_bytes()


def test_shards_made_with_other_boxes_than_the_csv_are_a_problem(tmp_path, prepared):
    """A box CSV (and its record) other than the one the shards were written with: each
    CSV is whole, the shards too, but the next run refuses the shards; `check` said OK.
    Now it names them with the run's remedy, and following it ends clean."""
    archives, clean = prepared
    ds = _copy(clean, tmp_path)
    csv = ds / "imagenet_2012_bounding_boxes.csv"
    text = csv.read_bytes()
    other = text[:text.rindex(b"\n", 0, len(text) - 1) + 1]  # one box line fewer
    csv.write_bytes(other)
    record = ds / STATE_DIR / "bbox.json"
    rec = json.loads(record.read_text())
    rec.update(bytes=len(other), sha256=hashlib.sha256(other).hexdigest())
    record.write_text(json.dumps(rec))
    reseal(record)  # both whole: a CSV and its record as another bbox run wrote them
    proc = run_cli("check", ds, check=False)
    assert proc.returncode == 1, proc.stdout
    line = next(ln for ln in proc.stdout.splitlines() if "tfrecord.json: train shards" in ln)
    assert f"written with the boxes of another imagenet_2012_bounding_boxes.csv than {csv}; " \
        "the next run refuses them: to start over, delete " in line
    one_line(run_cli("prepare", "--archives", archives, "--out", ds, "--only", "all", *SHARDS,
                     "--no-report", check=False), 1, "written from other train images or boxes")
    for target in line.split("to start over, delete ", 1)[1].replace(" and ", ", ").split(", "):
        shutil.rmtree(target) if Path(target).is_dir() else Path(target).unlink(missing_ok=True)
    run_cli("prepare", "--archives", archives, "--out", ds, "--only", "all", *SHARDS,
            "--no-report")
    assert run_cli("check", ds).returncode == 0


# --- 4. missing or misnamed archives -----------------------------------------------------

@pytest.mark.parametrize("command", ["tfrecord", "wds"])
def test_shards_need_every_archive_of_their_splits(tmp_path, small_replica, command):
    archives = tmp_path / "a"
    shutil.copytree(small_replica, archives)
    (archives / TRAIN).rename(archives / "ILSVRC2012_IMG_TRAIN.tar")
    ds = tmp_path / "ds"
    proc = run_cli(command, ds, "--archives", archives, check=False)
    one_line(proc, None, f"{archives / TRAIN}: missing", "differs only in case")
    assert not any(ds.rglob("*-0000*")) if ds.exists() else True


# --- 5. archives replaced between runs ------------------------------------------------------

def test_tfrecords_refuse_other_archives_of_the_same_names(tmp_path, prepared):
    archives, clean = prepared
    ds = _copy(clean, tmp_path)
    other = tmp_path / "other"
    make_replica(other, classes=4, train_per_class=12, val_per_class=3, test=5, size=(64, 48),
                 seed=8, workers=1)
    proc = run_cli("tfrecord", ds, "--archives", other, *SHARDS, check=False)
    one_line(proc, None, f"{other / TRAIN}: not the archive this dataset was made from")
    assert tree_digest(ds) == tree_digest(clean)
    assert not (ds / STATE_DIR / "damaged.json").exists()


def test_full_verification_records_the_md5s(tmp_path, small_replica):
    """`--verify full` proves the MD5s; the expectation keeps them with the archives."""
    import json

    ds = tmp_path / "ds"
    run_cli("prepare", "--archives", small_replica, "--out", ds, "--only", "pytorch",
            "--verify", "full", "--no-report")
    archives = json.loads((ds / STATE_DIR / "expect.json").read_text())["archives"]
    md5sums = dict(line.split()[::-1] for line in
                   (small_replica / "MD5SUMS").read_text().splitlines() if line.strip())
    assert {a["name"]: a["md5"] for a in archives.values()} == \
        {a["name"]: md5sums[a["name"]] for a in archives.values()}
    assert {"train", "val"} <= set(archives)


def test_check_knows_which_shard_stages_read_the_box_csv():
    """`check` may not import the writers, so it names the shard stages whose samples
    carry boxes itself: the same set as the formats that read the CSV."""
    from imagenet_prep.check.state_records import BOXED_RECORDS
    from imagenet_prep.shards import mds, parquet, tfds, tfrecord, wds  # noqa: F401
    from imagenet_prep.shards.engine import ShardFormat

    formats = ShardFormat.__subclasses__()
    assert len(formats) == 5
    assert set(BOXED_RECORDS) == {f.record for f in formats if f.needs_boxes}
