"""Small files derived from the state (indexes, cards, TFDS metadata, timm's table, DALI
indexes): a copy damaged into bytes that are not even text is reported by `check` in one
line, not a traceback, and the next run of the command that writes it mends it, leaving
the shards alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import run_cli, tree_digest

from imagenet_prep.runtime.files import write_if_changed

NOT_TEXT = b"\xff\xfe\x00damaged"


def test_write_if_changed_rewrites_only_what_differs(tmp_path):
    path = tmp_path / "index.json"
    assert write_if_changed(path, "{}\n") is True
    inode = path.stat().st_ino
    assert write_if_changed(path, "{}\n") is False and path.stat().st_ino == inode
    path.write_bytes(NOT_TEXT)
    assert write_if_changed(path, "{}\n") is True and path.read_text() == "{}\n"


# (command and its options, the derived file under DATASET)
CASES = {
    "mds": (("mds",), "mds/train/index.json"),
    "tfds": (("tfds",), "tfds/imagenet2012/5.1.0/dataset_info.json"),
    "parquet": (("parquet",), "parquet/README.md"),
    "wds-info": (("wds",), "wds/_info.json"),
    # 128 val shards of a small replica: some are empty (an empty index, not a crash)
    "dali": (("tfrecord", "--dali-index"), "tfrecord_val_idx/validation-00000-of-00128.idx"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_derived_file_is_reported_and_mended(case, small_replica, tmp_path):
    command, rel = CASES[case]
    ds = tmp_path / "ds"
    opts = ("--archives", small_replica, "--workers", "2")
    if command[0] == "tfrecord":
        opts += ("--train-shards", "2", "--val-shards", "128")
    run_cli(command[0], ds, *opts, *command[1:])
    if case == "dali":  # the case an empty shard's index once crashed the run
        assert any(f.stat().st_size == 0 for f in (ds / "tfrecord_val_idx").iterdir())
    before = tree_digest(ds)
    target = ds / rel
    assert target.is_file(), sorted(os.listdir(target.parent))
    target.write_bytes(NOT_TEXT)
    proc = run_cli("check", ds, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(Path(rel).name) in proc.stdout + proc.stderr
    run_cli(command[0], ds, *opts, *command[1:])
    after = tree_digest(ds)
    assert {k: v for k, v in after.items() if ".imagenet-prep" not in k} == \
        {k: v for k, v in before.items() if ".imagenet-prep" not in k}
    assert run_cli("check", ds).stdout.strip().endswith(": OK")
