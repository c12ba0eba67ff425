"""A rerun repairs what is missing or damaged, from the data, and refuses other archives."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest
from helpers import one_line, run_cli, tree_digest

from imagenet_prep.errors import PrepError
from imagenet_prep.folders.extract import extract
from imagenet_prep.layout import FILES_DIR, STATE_DIR
from imagenet_prep.replica.build import make_replica
from imagenet_prep.sources.archives import TRAIN, VAL, require_archives


def _extract(archives: Path, dataset: Path) -> None:
    extract(archives, dataset, workers=2)


@pytest.fixture
def extracted(tmp_path, small_replica) -> tuple[Path, Path, dict[str, str]]:
    ds = tmp_path / "ds"
    _extract(small_replica, ds)
    return small_replica, ds, tree_digest(ds)


def _first_class(ds: Path) -> Path:
    return sorted(p for p in (ds / "train").iterdir() if p.is_dir())[0]


def test_deleted_class_folder_is_extracted_again(extracted):
    archives, ds, clean = extracted
    shutil.rmtree(_first_class(ds))
    _extract(archives, ds)
    assert tree_digest(ds) == clean


def test_deleted_split_is_extracted_again(extracted):
    archives, ds, clean = extracted
    shutil.rmtree(ds / "train")
    shutil.rmtree(ds / "bbox_val")
    _extract(archives, ds)
    assert tree_digest(ds) == clean


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_truncated_image_is_copied_again(extracted, damage):
    archives, ds, clean = extracted
    image = sorted(_first_class(ds).iterdir())[0]
    size = image.stat().st_size
    with open(image, "r+b") as f:
        f.truncate(size // 2 if damage == "truncate" else 0)
    _extract(archives, ds)
    assert tree_digest(ds) == clean


def test_unrelated_file_of_another_size_is_refused_not_replaced(extracted):
    archives, ds, _ = extracted
    # a file at one of our names that no manifest lists: someone else's, never overwritten
    piece_dir = ds / ".imagenet-prep" / "files" / "train"
    victim = sorted(_first_class(ds).iterdir())[0]
    shutil.rmtree(piece_dir)
    victim.write_bytes(b"not ours")
    with pytest.raises(PrepError, match="exists with other content"):
        _extract(archives, ds)
    assert victim.read_bytes() == b"not ours"


def test_replaced_archive_of_the_same_size_is_refused(tmp_path, extracted):
    archives, ds, _ = extracted
    other = tmp_path / "other"
    shutil.copytree(archives, other)
    data = bytearray((other / VAL).read_bytes())
    data[600] ^= 0xFF  # inside the first member's bytes: same size, other content
    (other / VAL).write_bytes(bytes(data))
    proc = run_cli("extract", "--archives", other, "--out", ds, check=False)
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"{other / VAL}: not the archive this dataset was made from" in proc.stderr


def test_require_archives_names_a_near_miss(tmp_path, small_replica):
    folder = tmp_path / "a"
    shutil.copytree(small_replica, folder)
    (folder / TRAIN).rename(folder / TRAIN.upper().replace(".TAR", ".tar"))
    with pytest.raises(PrepError, match="differs only in case"):
        require_archives(folder, ("val", "train"), "--only tensorflow")
    (folder / TRAIN.upper().replace(".TAR", ".tar")).rename(folder / "ILSVRC2012_img_trian.tar")
    with pytest.raises(PrepError, match="misnamed copy"):
        require_archives(folder, ("train",), "--only tensorflow")
    (folder / "ILSVRC2012_img_trian.tar").unlink()
    with pytest.raises(PrepError, match=rf"{TRAIN}: missing, and --only tensorflow needs it$"):
        require_archives(folder, ("train",), "--only tensorflow")


def test_extract_of_a_fresh_replica_equals_the_repaired_one(tmp_path):
    """Damage everywhere at once (a class, a val file, the box folder): one rerun mends all."""
    archives = tmp_path / "a"
    make_replica(archives, classes=3, train_per_class=6, val_per_class=2, test=3,
                 size=(32, 24), seed=5, workers=1)
    ds = tmp_path / "ds"
    _extract(archives, ds)
    clean = tree_digest(ds)
    shutil.rmtree(_first_class(ds))
    sorted((ds / "val").iterdir())[0].write_bytes(b"")
    shutil.rmtree(ds / "bbox_train")
    _extract(archives, ds)
    assert tree_digest(ds) == clean


def test_damaged_box_xmls_are_mended_not_read_for_labels(tmp_path, small_replica):
    """The validation labels come from the box archive, not from DATASET/bbox_val: a
    truncated, a deleted and a relabelled extracted XML are outputs to mend, and the
    rerun of a subset (whose extract picks validation images by label) used to stop on
    them ('unreadable XML', 'missing: no box XML', 'sources disagree')."""
    ds, classes = tmp_path / "ds", tmp_path / "classes.txt"
    with tarfile.open(small_replica / TRAIN) as t:  # a subset: extract reads the labels
        classes.write_text("\n".join(sorted(m.name[:-4] for m in t)[:2]) + "\n")
    args = ("prepare", "--archives", small_replica, "--out", ds, "--only", "all",
            "--classes", classes, "--no-report", "--train-shards", "2", "--val-shards", "2")
    run_cli(*args)
    clean = tree_digest(ds)
    xmls = sorted((ds / "bbox_val" / "val").iterdir())
    xmls[0].write_bytes(xmls[0].read_bytes()[:100])
    xmls[1].unlink()
    text = xmls[2].read_text()
    wnid = text.split("<name>")[1].split("</name>")[0]
    other = "n00000000" if wnid != "n00000000" else "n99999999"
    xmls[2].write_text(text.replace(wnid, other))
    problems = run_cli("check", ds, check=False).stdout
    assert all(x.name in problems for x in xmls[:3])
    run_cli(*args)
    assert tree_digest(ds) == clean
    assert run_cli("check", ds).stdout.strip().endswith(": OK")


@pytest.mark.parametrize("damage", ["cut mid-line", "not text"])
def test_a_damaged_manifest_piece_is_listed_and_its_part_extracted_again(extracted, damage):
    """A manifest piece (STATE_DIR/files/SPLIT/*.tsv) vouches for its files' sizes and
    CRC32Cs: damaged, `check` lists it (it stopped with 'delete the file and rerun') and
    the next extract treats it as absent, copying that part again and writing it anew."""
    archives, ds, clean = extracted
    piece = sorted((ds / STATE_DIR / FILES_DIR / "train").iterdir())[0]
    good = piece.read_bytes()
    piece.write_bytes(good[:len(good) // 2 + 3] if damage == "cut mid-line" else b"\x00\xff\n")
    proc = run_cli("check", ds, check=False)
    assert proc.returncode == 1 and f"{piece}: line " in proc.stdout
    assert "is damaged (a manifest of extracted files)" in proc.stdout
    _extract(archives, ds)
    assert tree_digest(ds) == clean and piece.read_bytes() == good
    assert run_cli("check", ds).stdout.strip().endswith(": OK")


def test_a_damaged_list_of_damaged_files_is_written_again_by_check(extracted):
    """check's note to the next run (STATE_DIR/damaged.json), itself damaged: the run
    stops with one line that says to run check again (not "delete it to run that stage
    again": it is no stage), check writes it anew, and the run then mends the file."""
    archives, ds, clean = extracted
    image = sorted(_first_class(ds).iterdir())[0]
    image.write_bytes(b"")
    assert run_cli("check", ds, check=False).returncode == 1
    note = ds / STATE_DIR / "damaged.json"
    assert image.name in note.read_text()
    note.write_text(note.read_text()[:9])
    proc = run_cli("extract", "--archives", archives, "--out", ds, check=False)
    one_line(proc, 5, f"{note}: damaged state record (not valid JSON",
             f"run `imagenet-prep check {ds}` to write it again")
    assert run_cli("check", ds, check=False).returncode == 1
    _extract(archives, ds)
    assert tree_digest(ds) == clean
    assert run_cli("check", ds).stdout.strip().endswith(": OK")
