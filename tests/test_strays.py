"""Files imagenet-prep did not write, and images moved between class folders.

Two validation images swapped between class folders keep every count and every
CRC32C: `check` proves each image is in the folder valtree put it in, and the next
run moves them back.  A file or folder dropped into a class tree would be loaded
as an image of that class (or as one more class) by ImageFolder: `check` names
each one, and the next run refuses by name rather than flattening it or deleting
what is not its own.  So does a shard-named file beside the shards that no run
recorded, which a loader's glob would read.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import one_line, run_cli, tree_digest

from imagenet_prep.layout import STATE_DIR, VALTREE_CLASSES

PREPARE = ("--only", "pytorch", "--no-report", "--workers", "2")


@pytest.fixture(scope="module")
def prepared(replicas, tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    ds = tmp_path_factory.mktemp("strays") / "ds"
    run_cli("prepare", "--archives", replicas["small"], "--out", ds, *PREPARE)
    return replicas["small"], ds, _digest(ds)


def _copy(prepared, tmp_path: Path) -> Path:
    ds = tmp_path / "ds"
    subprocess.run(["cp", "-a", prepared[1], ds], check=True)  # hard links kept
    return ds


def _problems(ds: Path) -> list[str]:
    proc = run_cli("check", ds, check=False)
    assert proc.returncode == 1, proc.stdout
    return [ln.removeprefix("problem: ") for ln in proc.stdout.splitlines()
            if ln.startswith("problem: ")]


def _digest(ds: Path) -> dict[str, str]:
    """Every output, and the class list (the records hold counts and timings of each run)."""
    listed = ds / STATE_DIR / VALTREE_CLASSES
    return {**tree_digest(ds), VALTREE_CLASSES: listed.read_text() if listed.exists() else ""}


def test_val_images_swapped_between_classes_are_found_and_moved_back(prepared, tmp_path):
    archives, _, clean = prepared
    ds = _copy(prepared, tmp_path)
    a_dir, b_dir = sorted(p for p in (ds / "val").iterdir() if p.is_dir())[:2]
    a, b = sorted(a_dir.iterdir())[0], sorted(b_dir.iterdir())[0]
    a.rename(b_dir / a.name)
    b.rename(a_dir / b.name)
    problems = _problems(ds)
    assert (f"{b_dir / a.name}: in the folder of {b_dir.name}, but valtree grouped it under "
            f"{a_dir.name}; the next run moves it back") in problems
    assert f"{a_dir / b.name}: in the folder of {a_dir.name}, but valtree grouped it under " \
           f"{b_dir.name}; the next run moves it back" in problems
    run_cli("prepare", "--archives", archives, "--out", ds, *PREPARE)
    assert _digest(ds) == clean
    assert run_cli("check", ds).stdout.strip().endswith(": OK")


def test_a_lost_or_damaged_class_list_is_named_and_written_again(prepared, tmp_path):
    archives, _, clean = prepared
    ds = _copy(prepared, tmp_path)
    listed = ds / STATE_DIR / VALTREE_CLASSES
    listed.unlink()
    assert f"{listed}: missing (the class valtree gave each image); run the same command " \
           "again to write it" in _problems(ds)
    run_cli("prepare", "--archives", archives, "--out", ds, *PREPARE)
    assert _digest(ds) == clean
    listed.write_text(listed.read_text().replace("\t", " ", 1))
    one_line(run_cli("check", ds, check=False), 5, f"{listed}: damaged at line 1")
    run_cli("prepare", "--archives", archives, "--out", ds, *PREPARE)
    assert run_cli("check", ds).stdout.strip().endswith(": OK")


def test_files_no_stage_wrote_are_named_and_refused_never_deleted(prepared, tmp_path):
    archives, _, clean = prepared
    ds = _copy(prepared, tmp_path)
    wnid_dir = sorted(p for p in (ds / "train").iterdir() if p.is_dir())[0]
    extra = wnid_dir / "n00000000_1.JPEG"
    shutil.copyfile(sorted(wnid_dir.iterdir())[0], extra)
    (wnid_dir / "more").mkdir()
    (ds / "train" / "my_class").mkdir()
    val_dir = sorted(p for p in (ds / "val").iterdir() if p.is_dir())[0]
    val_extra = val_dir / "ILSVRC2012_val_99999999.JPEG"
    shutil.copyfile(sorted(val_dir.iterdir())[0], val_extra)
    problems = _problems(ds)
    for want in (
            f"{extra}: not an image of the archive (extraction did not write it); move it away",
            f"{wnid_dir / 'more'}: not an image of the archive (a folder, link or special file "
            f"in class {wnid_dir.name}); move it away",
            f"{ds / 'train' / 'my_class'}: not a class folder of this dataset (loaders would "
            "read it as one); move it away",
            f"{val_extra}: not an image valtree grouped; move it out of val/"):
        assert want in problems, (want, problems)
    before = _digest(ds)
    for stray, folder in ((val_extra, "val/"), (extra, ds / "train")):
        proc = run_cli("prepare", "--archives", archives, "--out", ds, *PREPARE, check=False)
        one_line(proc, 1, f"{stray}: not an image of the", f"move it out of {folder}")
        assert _digest(ds) == before
        before.pop(str(stray.relative_to(ds)))
        stray.rename(tmp_path / stray.name)  # as the line says: nothing of it was lost
    run_cli("prepare", "--archives", archives, "--out", ds, *PREPARE)
    assert sorted(_problems(ds)) == sorted(p for p in problems if "folder" in p)
    (wnid_dir / "more").rmdir()
    (ds / "train" / "my_class").rmdir()
    assert _digest(ds) == clean
    assert run_cli("check", ds).stdout.strip().endswith(": OK")


SHARDS = ("--only", "tensorflow", "--wds", "--parquet", "--mds", "--tfds", "--train-shards",
          "3", "--val-shards", "2", "--wds-shard-samples", "20", "--no-report", "--workers", "2")


def test_shards_of_another_cut_are_named_and_refused_never_deleted(replicas, tmp_path):
    """A shard-named file beside the shards that no run recorded (another cut's, or not
    ours) would be read by a loader's glob: `check` names each, the rerun refuses them by
    name (it neither deletes them nor says done over them), and once moved away it ends."""
    ds = tmp_path / "ds"
    run_cli("prepare", "--archives", replicas["small"], "--out", ds, *SHARDS)
    clean = tree_digest(ds)
    copies = {  # an existing shard under the name of another cut's
        "tfrecord_train/train-00000-of-00003": "tfrecord_train/train-00000-of-00004",
        "wds/train-000001.tar": "wds/train-000009.tar",
        "parquet/data/train-00000-of-00001.parquet": "parquet/data/train-00001-of-00002.parquet",
        "mds/train/shard.00000.mds": "mds/train/shard.00001.mds",
        "tfds/imagenet2012/5.1.0/imagenet2012-train.tfrecord-00000-of-00001":
            "tfds/imagenet2012/5.1.0/imagenet2012-train.tfrecord-00001-of-00002",
    }
    for src, dst in copies.items():
        shutil.copyfile(ds / src, ds / dst)
    problems = _problems(ds)
    for dst in copies.values():
        assert any(p.startswith(f"{ds / dst}: ") and p.endswith("; move it away")
                   for p in problems), (dst, problems)
    before = tree_digest(ds)
    proc = run_cli("prepare", "--archives", replicas["small"], "--out", ds, *SHARDS,
                   check=False)
    one_line(proc, 1, f"{ds / copies['tfrecord_train/train-00000-of-00003']}: a shard that "
             "no tfrecord run recorded", "move it away and rerun")
    assert tree_digest(ds) == before
    for dst in copies.values():
        (ds / dst).rename(tmp_path / Path(dst).name)
    run_cli("prepare", "--archives", replicas["small"], "--out", ds, *SHARDS)
    assert tree_digest(ds) == clean
    assert run_cli("check", ds).stdout.strip().endswith(": OK")


@pytest.mark.parametrize("copy_in", ["later", "earlier"])  # the copy's folder, sorted
def test_strays_beside_flat_images_boxes_and_val_copies(prepared, tmp_path, copy_in):
    """A file in a flat folder that stands for no tree image, a box XML extraction did not
    write, and a second copy of a validation image under another class: each named by
    `check`; the run refuses the copy and the flat stray by name; moved away, all ends."""
    archives, _, clean = prepared
    ds = _copy(prepared, tmp_path)
    flat = ds / "train_flatten"
    flat_stray = flat / "n01440764_99999.JPEG"
    shutil.copyfile(sorted(flat.iterdir())[0], flat_stray)
    box_dir = ds / "bbox_val" / "val"
    box_stray = box_dir / "ILSVRC2012_val_99999999.xml"
    shutil.copyfile(sorted(box_dir.iterdir())[0], box_stray)
    test_folder = ds / "test" / "n99999999"  # a folder in flat test/: it counted no file
    test_folder.mkdir()
    shutil.copyfile(sorted((ds / "test").glob("*.JPEG"))[0], test_folder / "a.JPEG")
    a_dir, b_dir = sorted(p for p in (ds / "val").iterdir() if p.is_dir())[:2]
    if copy_in == "earlier":
        a_dir, b_dir = b_dir, a_dir
    copy = b_dir / sorted(a_dir.iterdir())[0].name
    shutil.copyfile(sorted(b_dir.iterdir())[0], copy)
    problems = _problems(ds)
    for want in (f"{flat_stray}: not an image of train/ (no stage put it here); move it away",
                 f"{box_stray}: not a file of the archive (extraction did not write it); "
                 "move it away",
                 f"{copy}: a copy of an image of {a_dir.name}, which is there too; move this "
                 "copy away",
                 f"{test_folder}: a folder in test/ (no stage put it here); move it away"):
        assert want in problems, (want, problems)
    assert [p for p in problems if p.startswith(f"{ds / 'bbox_val'}: ")] == []  # named: no count
    for stray, says in ((copy, "(one image in two class folders)"),
                        (flat_stray, "not an image of")):
        proc = run_cli("prepare", "--archives", archives, "--out", ds, *PREPARE, check=False)
        assert says in one_line(proc, 1, f"{stray}: ", "and rerun")
        stray.rename(tmp_path / stray.name)
    box_stray.unlink()
    shutil.rmtree(test_folder)
    run_cli("prepare", "--archives", archives, "--out", ds, *PREPARE)
    assert _digest(ds) == clean
    assert run_cli("check", ds).stdout.strip().endswith(": OK")


def _named_refused_then_mended(prepared, ds: Path, stray: Path, problem: str, refusal: str,
                               away: Path) -> None:
    """`check` names `stray` with `problem`; the run refuses in one line, `refusal`; with the
    stray moved to `away`, the run ends with the clean bytes and `check` says OK."""
    archives, _, clean = prepared
    assert problem in _problems(ds)
    proc = run_cli("prepare", "--archives", archives, "--out", ds, *PREPARE, check=False)
    one_line(proc, 1, refusal)
    stray.rename(away)
    run_cli("prepare", "--archives", archives, "--out", ds, *PREPARE)
    assert _digest(ds) == clean
    assert run_cli("check", ds).stdout.strip().endswith(": OK")


def test_a_link_in_place_of_an_extracted_file_is_named_not_followed(prepared, tmp_path):
    """A symlink where extraction wrote a file, even to the very same bytes: `check` names
    it (it had read through it and said OK, while the run refuses to write over a link),
    the run refuses in one line, and once it is moved away the run writes the file back."""
    ds = _copy(prepared, tmp_path)
    image = sorted(sorted(p for p in (ds / "train").iterdir() if p.is_dir())[0].iterdir())[0]
    image.unlink()
    image.symlink_to(ds / "train_flatten" / image.name)  # the same inode's bytes
    _named_refused_then_mended(
        prepared, ds, image,
        f"{image}: not a regular file (a link or special file where extraction wrote one); "
        "move it away",
        f"{image}: exists and is not a regular file; move it away and rerun", tmp_path / "link")


def test_a_folder_in_a_flat_folder_is_named_and_refused(prepared, tmp_path):
    """A folder dropped into a flat folder, images inside: a loader listing the flat folder
    would take it for an image. `check` named nothing (it counts *.JPEG entries only) and
    the run went on; now both name it, and once it is moved away the run ends clean."""
    ds = _copy(prepared, tmp_path)
    folder = ds / "val_flatten" / "n99999999"
    folder.mkdir()
    shutil.copyfile(sorted((ds / "val_flatten").glob("*.JPEG"))[0], folder / "a.JPEG")
    said = f"{folder}: a folder in a flat folder (no stage put it here); move it away"
    _named_refused_then_mended(prepared, ds, folder, said, said + " and rerun",
                               tmp_path / folder.name)


def test_a_val_image_both_in_val_and_in_its_class_folder(prepared, tmp_path):
    """A grouped validation image copied back into val/: `check` names it, and the run's
    line now says which copy to move (it said only that it was in both)."""
    ds = _copy(prepared, tmp_path)
    grouped = sorted(sorted(p for p in (ds / "val").iterdir() if p.is_dir())[0].iterdir())[0]
    copy = ds / "val" / grouped.name
    shutil.copyfile(grouped, copy)
    _named_refused_then_mended(
        prepared, ds, copy, f"{ds / 'val'}: 1 images not in class folders, e.g. {grouped.name}",
        f"{copy}: also in {grouped.parent}/ (one image in val/ and in a class folder); move "
        "the one in val/ away and rerun", tmp_path / copy.name)
