"""Bad inputs: a one-line error naming the file, a non-zero exit, nothing half-written."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from expected import seed_extraction
from helpers import assert_only_complete_files, run_cli, tmpfs
from tarutil import tar_bytes

from imagenet_prep.sources.tarindex import iter_members

VAL = "ILSVRC2012_img_val.tar"
TRAIN = "ILSVRC2012_img_train.tar"


def one_line_error(proc: subprocess.CompletedProcess, *needles: str, code: int = 1) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("imagenet-prep: error: ")]
    assert len(errors) == 1 and proc.stderr.strip().endswith(errors[0]), proc.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])


def test_missing_archives(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(run_cli("prepare", "--archives", tmp_path / "empty", "--out", tmp_path / "ds",
                           check=False), "none of the ILSVRC2012 archives")
    one_line_error(run_cli("extract", "--archives", tmp_path / "nope", "--out", tmp_path / "ds",
                           check=False), "nope", "not found")


@pytest.mark.parametrize("where", ["header", "image", "inner"])
def test_truncated_archive(archives_copy, small_replica, tmp_path, where):
    name = TRAIN if where == "inner" else VAL
    path = archives_copy / name
    members = list(iter_members(path))
    if where == "header":
        cut = members[1].offset - 300  # inside the second member's header
    elif where == "image":
        cut = members[1].offset + members[1].size // 2
    else:
        cut = members[0].offset + members[0].size // 2  # inside the first class tar
    with open(path, "r+b") as f:
        f.truncate(cut)
    ds = tmp_path / "ds"
    proc = run_cli("extract", "--archives", archives_copy, "--out", ds, check=False)
    one_line_error(proc, name, "truncated")
    assert_only_complete_files(ds, seed_extraction(small_replica))


@pytest.mark.parametrize("kind", ["gzip", "html"])
def test_other_kind_of_file_under_an_archive_name(archives_copy, tmp_path, kind):
    path = archives_copy / VAL
    if kind == "gzip":
        path.write_bytes(gzip.compress(path.read_bytes(), mtime=0))
    else:
        path.write_bytes(b"<!DOCTYPE html>\n<html><body>Please log in</body></html>\n")
    proc = run_cli("extract", "--archives", archives_copy, "--out", tmp_path / "ds", "--splits",
                   "val", check=False)
    one_line_error(proc, VAL, "gzip" if kind == "gzip" else "HTML")


def test_checksum_mismatch(archives_copy, tmp_path):
    path = archives_copy / VAL
    m = list(iter_members(path))[0]
    with open(path, "r+b") as f:
        f.seek(m.offset + 10)
        byte = f.read(1)
        f.seek(m.offset + 10)
        f.write(bytes([byte[0] ^ 0xFF]))
    proc = run_cli("verify", "--archives", archives_copy, check=False)
    assert proc.returncode == 1 and "MISMATCH" in proc.stdout and VAL in proc.stdout
    ds = tmp_path / "ds"
    proc = run_cli("prepare", "--archives", archives_copy, "--out", ds, "--only", "pytorch",
                   "--verify", "full", check=False)
    one_line_error(proc, VAL, "damaged")
    assert not (ds / "train").exists()


def _rewrite_train(path: Path, edit) -> None:
    """Rebuild the train archive with edit(dict of inner name -> inner bytes) applied."""
    with tarfile.open(path) as tf:
        inner = {m.name: tf.extractfile(m).read() for m in tf}
    edit(inner)
    path.write_bytes(tar_bytes(inner))


def test_empty_class_tar(archives_copy, tmp_path):
    def empty_first(inner):
        inner[sorted(inner)[0]] = tar_bytes({})

    _rewrite_train(archives_copy / TRAIN, empty_first)
    proc = run_cli("extract", "--archives", archives_copy, "--out", tmp_path / "ds", "--splits",
                   "train", check=False)
    one_line_error(proc, TRAIN, "no images")


def test_duplicate_member_names(archives_copy, tmp_path):
    path = archives_copy / VAL
    with tarfile.open(path) as tf:
        files = [(m.name, tf.extractfile(m).read()) for m in tf]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in [*files, files[0]]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    proc = run_cli("extract", "--archives", archives_copy, "--out", tmp_path / "ds", "--splits",
                   "val", check=False)
    one_line_error(proc, VAL, "duplicate", files[0][0])


def test_non_ascii_member_names_are_extracted(tmp_path):
    arch = tmp_path / "archives"
    arch.mkdir()
    files = {"ILSVRC2012_test_café_00000001.JPEG": b"\xff\xd8one", "ILSVRC2012_test_2.JPEG": b"2"}
    (arch / "ILSVRC2012_img_test.tar").write_bytes(tar_bytes(files, tarfile.PAX_FORMAT))
    run_cli("extract", "--archives", arch, "--out", tmp_path / "ds")
    for name, data in files.items():
        assert (tmp_path / "ds" / "test" / name).read_bytes() == data


def test_val_count_differs_from_labels(archives_copy, tmp_path):
    path = archives_copy / VAL
    with tarfile.open(path) as tf:
        files = {m.name: tf.extractfile(m).read() for m in tf}
    files.pop(sorted(files)[-1])
    path.write_bytes(tar_bytes(files))
    ds = tmp_path / "ds"
    run_cli("extract", "--archives", archives_copy, "--out", ds, "--splits", "val")
    proc = run_cli("valtree", ds, "--archives", archives_copy, "--labels", "devkit", check=False)
    one_line_error(proc, f"{len(files)} validation images", f"{len(files) + 1} labels")
    assert len(list((ds / "val").glob("*.JPEG"))) == len(files)  # nothing moved


@pytest.mark.parametrize(("opts", "message", "code"), [
    ("ro,size=1m", "read-only file system", 3), ("size=256k", "no space left on device", 4)])
def test_read_only_or_full_output_folder(small_replica, tmp_path, opts, message, code):
    with tmpfs(tmp_path / "ds", opts) as ds:
        proc = run_cli("extract", "--archives", small_replica, "--out", ds, check=False)
        one_line_error(proc, message, code=code)  # exit codes: imagenet_prep.errors
        assert_only_complete_files(ds, seed_extraction(small_replica))


def test_unrelated_files_in_dataset_are_kept(small_replica, tmp_path):
    ds = tmp_path / "ds"
    mine = {"notes.txt": b"my notes", "train/README": b"keep", "val/keep.txt": b"v",
            "train_flatten/old.txt": b"o", "test/list.txt": b"t"}
    for rel, data in mine.items():
        (ds / rel).parent.mkdir(parents=True, exist_ok=True)
        (ds / rel).write_bytes(data)
    run_cli("prepare", "--archives", small_replica, "--out", ds, "--only", "pytorch")
    for rel, data in mine.items():
        assert (ds / rel).read_bytes() == data
    assert run_cli("check", ds).returncode == 0


def _md5s(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_inputs_never_modified(archives_copy, tmp_path):
    for p in archives_copy.iterdir():
        p.chmod(0o444)
    before = _md5s(archives_copy)
    ds = tmp_path / "ds"
    for args in (["extract", "--archives", archives_copy, "--out", ds],
                 ["valtree", ds, "--archives", archives_copy],
                 ["flatten", ds], ["synsets", ds, "--archives", archives_copy],
                 ["bbox", tmp_path / "tf", "--archives", archives_copy],
                 ["tfrecord", tmp_path / "tf", "--archives", archives_copy, "--train-shards", "2",
                  "--val-shards", "2"],
                 ["verify", "--archives", archives_copy],
                 ["prepare", "--archives", archives_copy, "--out", tmp_path / "all",
                  "--train-shards", "2", "--val-shards", "2", "--verify", "full"]):
        run_cli(*args)
        assert _md5s(archives_copy) == before, args
    assert sorted(os.listdir(archives_copy)) == sorted(before)


def test_ctrl_c_stops_cleanly(replicas, tmp_path):
    arch = replicas["medium"]
    ds = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_prep", "extract", "--archives",
                             str(arch), "--out", str(ds)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (ds / "train").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("extraction finished before the signal arrived")
    assert proc.returncode == 130
    assert "interrupted; run the same command again to resume" in err
    assert_only_complete_files(ds, seed_extraction(arch))
    shutil.rmtree(ds)


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_corrupt_jpeg_member(archives_copy, tmp_path, policy):
    path = archives_copy / VAL
    victim = sorted(iter_members(path), key=lambda m: m.name)[2]
    with open(path, "r+b") as f:
        f.seek(victim.offset)
        f.write(b"this is not an image" + b"\0" * (victim.size - 20))
    ds = tmp_path / "ds"
    proc = run_cli("tfrecord", ds, "--archives", archives_copy, "--train-shards", "2",
                   "--val-shards", "2", "--on-bad-image", policy, check=False)
    if policy == "fail":
        one_line_error(proc, victim.name)
        assert not list(ds.rglob("*.ipart"))
        return
    assert proc.returncode == 0, proc.stderr
    check = run_cli("check", ds)
    assert f"val/{victim.name}" in check.stdout and "skipped bad image" in check.stdout
