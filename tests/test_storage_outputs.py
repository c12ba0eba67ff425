"""Outputs beyond TFRecord written into a bucket (issue 17): WebDataset shards and what goes
beside them, and `prepare --only tensorflow --wds`, against a real S3 protocol server
(moto's server mode on loopback): the objects a run on local disk writes, resumed after a
kill, proved by `check`, and mended after damage."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections import Counter

import pytest
from helpers import one_line, run_cli, tree_digest
from s3_server import moto_s3, s3_filesystem

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

BUCKET = "outputs"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(s3fs filesystem, environment for the CLI) of a moto S3 server with the bucket."""
    with moto_s3(IMAGENET_PREP_CACHE=str(tmp_path_factory.mktemp("index-cache"))) as \
            (endpoint, env):
        fs = s3_filesystem(endpoint)
        fs.mkdir(BUCKET)
        yield fs, env


@pytest.fixture(scope="module")
def archives(s3, replicas):
    """The small replica uploaded to s3://outputs/archives."""
    fs, _ = s3
    fs.put(f"{replicas['small']}/", f"{BUCKET}/archives/", recursive=True)
    return f"s3://{BUCKET}/archives"


def bucket_tree(fs, prefix: str, dst, skip_state: bool = True) -> dict[str, str]:
    """The objects under s3://outputs/PREFIX, fetched into `dst`, as tree_digest gives."""
    fs.invalidate_cache()
    fs.get(f"{BUCKET}/{prefix}/", f"{dst}/", recursive=True)
    return tree_digest(dst, skip_state)


def flip_byte(fs, key: str) -> None:
    """Corrupt an object: one byte in its middle inverted, the size unchanged."""
    data = bytearray(fs.cat_file(key))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(key, bytes(data))


BOX_CSV = "imagenet_2012_bounding_boxes.csv"
WDS = ["--shard-samples", "5"]
PREPARE = ["--only", "tensorflow", "--wds", "--no-report", "--train-shards", "12",
           "--val-shards", "2", "--dali-index", "--wds-shard-samples", WDS[1]]


@pytest.fixture(scope="module")
def local_prepared(replicas, tmp_path_factory):
    """tree_digest of `prepare --only tensorflow --wds` of the small replica on local disk."""
    local = tmp_path_factory.mktemp("prepared") / "local"
    run_cli("prepare", "--archives", replicas["small"], "--out", local, *PREPARE)
    want = tree_digest(local)
    assert {"imagenet_2012_bounding_boxes.csv", "labels.json", "labels.csv",
            "tfrecord_train_idx/train-00000-of-00012.idx", "wds/train-000000.tar",
            "wds/train-000008.tar", "wds/_info.json", "wds/README.md"} <= set(want)
    return want


def test_wds_into_bucket_identical_checked_and_mended(s3, archives, local_prepared, tmp_path):
    """`wds --out s3://...` writes the shards, indexes, _info.json, the card and the box CSV
    the local run writes; check proves them; a run after damage to what lies beside the
    shards (a deleted timm _info.json, a corrupted card) writes those again and no shard."""
    fs, env = s3
    url = f"s3://{BUCKET}/wds-only"
    run_cli("wds", "--out", url, "--archives", archives, *WDS, env=env)
    # the local prepare's wds/ folder, and the box CSV (made in OUT when no DATASET is given)
    want = {k.removeprefix("wds/"): v for k, v in local_prepared.items()
            if k.startswith("wds/") or k == BOX_CSV}
    assert bucket_tree(fs, "wds-only", tmp_path / "got1") == want
    assert run_cli("check", url, env=env).stdout.strip().endswith(f"{url}: OK")
    fs.rm_file(f"{BUCKET}/wds-only/_info.json")
    flip_byte(fs, f"{BUCKET}/wds-only/README.md")
    rerun = run_cli("wds", "--out", url, "--archives", archives, *WDS, env=env).stdout
    assert "all shards were already complete" in rerun
    assert bucket_tree(fs, "wds-only", tmp_path / "got2") == want


def test_prepare_bucket_to_bucket_killed_checked_mended(s3, archives, local_prepared,
                                                        tmp_path):
    """The issue's acceptance: `prepare --only tensorflow --wds` from s3:// archives to an
    s3:// DATASET, killed midway through the WebDataset shards (the tfrecord command's kill
    is test_storage's) and run again, ends with the objects of the local run;
    check passes, finds a corrupted and a deleted object (and a deleted labels.json), and
    the next run mends them."""
    import signal
    import subprocess
    import sys
    import time

    fs, env = s3
    url = f"s3://{BUCKET}/prepared"
    args = ["prepare", "--archives", archives, "--out", url, *PREPARE, "--workers", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_prep", *args],
                            env={**env, "IMAGENET_PREP_CONCURRENCY": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        fs.invalidate_cache()
        if fs.exists(f"{BUCKET}/prepared/wds") and sum(  # midway through the last stage
                k.rsplit("/", 1)[-1].startswith("train-")
                for k in fs.ls(f"{BUCKET}/prepared/wds")) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)  # a listing at most every 50 ms: the server also serves the run
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    killed = bucket_tree(fs, "prepared", tmp_path / "killed")
    assert "wds/train-000008.tar" not in killed and "wds/train.json" not in killed
    run_cli(*args, env=env)
    assert bucket_tree(fs, "prepared", tmp_path / "got1") == local_prepared
    assert run_cli("check", url, env=env).stdout.strip().endswith(f"{url}: OK")
    flip_byte(fs, f"{BUCKET}/prepared/tfrecord_train/train-00007-of-00012")
    fs.rm_file(f"{BUCKET}/prepared/wds/validation-000001.tar")
    fs.rm_file(f"{BUCKET}/prepared/labels.json")
    # every DALI index of a split gone, the shards kept: the rerun derives them from the
    # shards' record headers, read from the bucket (it called `open` on an object)
    fs.rm(f"{BUCKET}/prepared/tfrecord_val_idx", recursive=True)
    proc = run_cli("check", url, check=False, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for damage in (f"{url}/tfrecord_train/train-00007-of-00012: ",
                   f"{url}/wds: 1 validation shards missing", f"{url}/labels.json",
                   f"{url}/tfrecord_val_idx: missing (DALI indexes were asked for)"):
        assert damage in proc.stdout, proc.stdout
    run_cli(*args, env=env)
    assert bucket_tree(fs, "prepared", tmp_path / "got2") == local_prepared


def test_prepare_dask_local_into_bucket(s3, archives, local_prepared, tmp_path):
    """Dask workers read the archives from the bucket and upload their shards: no shared
    folder, the same objects."""
    pytest.importorskip("distributed")
    fs, env = s3
    run_cli("prepare", "--archives", archives, "--out", f"s3://{BUCKET}/dask", *PREPARE,
            "--dask-local", "2", env=env)
    assert bucket_tree(fs, "dask", tmp_path / "got") == local_prepared


@pytest.mark.parametrize("extra, words", [
    ([], ("extract, valtree, flatten", "local or shared folder", "--only tensorflow")),
])
def test_prepare_folder_outputs_into_bucket_refused(s3, archives, tmp_path, extra, words):
    """Class trees and flat links into a bucket: one line saying what can go
    there, before anything is written; no local folder named `s3:` appears."""
    fs, env = s3
    url = f"s3://{BUCKET}/refused"
    proc = run_cli("prepare", "--archives", archives, "--out", url, *extra, check=False,
                   env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"imagenet-prep: error: {url}: "), lines
    assert all(w in lines[0] for w in words) and "testing" not in lines[0]
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET}/refused") and not (tmp_path / "s3:").exists()


def test_parquet_mds_tfds_into_bucket(s3, archives, replicas, tmp_path):
    """Parquet, MDS and TFDS shards (with their cards, indexes and metadata) written into a
    bucket by prepare are the local run's files, and check proves them there."""
    pytest.importorskip("pyarrow")
    fs, env = s3
    args = ["--only", "tensorflow", "--parquet", "--mds", "--tfds", "--no-report",
            "--train-shards", "1", "--val-shards", "1"]
    local, url = tmp_path / "local", f"s3://{BUCKET}/loaders"
    run_cli("prepare", "--archives", replicas["small"], "--out", local, *args)
    run_cli("prepare", "--archives", archives, "--out", url, *args, env=env)
    want = tree_digest(local)
    assert {"parquet/README.md", "mds/train/index.json",
            "tfds/imagenet2012/5.1.0/dataset_info.json"} <= set(want)
    assert bucket_tree(fs, "loaders", tmp_path / "got") == want
    assert run_cli("check", url, env=env).stdout.strip().endswith(f"{url}: OK")


def test_synsets_into_bucket(s3, archives, replicas, tmp_path):
    """`synsets s3://...` (a dataset of shards, no class folders) lists the train archive's
    classes with the devkit's words, as the command writes it beside extracted folders;
    check proves it in the bucket and finds it deleted."""
    fs, env = s3
    local = tmp_path / "local"
    run_cli("extract", "--archives", replicas["small"], "--out", local, "--splits", "train")
    run_cli("synsets", local, "--archives", replicas["small"])
    url = f"s3://{BUCKET}/synsets-only"
    run_cli("synsets", url, "--archives", archives, env=env)
    fs.invalidate_cache()
    assert fs.cat_file(f"{BUCKET}/synsets-only/synsets.txt") == \
        (local / "synsets.txt").read_bytes()
    assert run_cli("check", url, env=env).stdout.strip().endswith(f"{url}: OK")
    fs.rm_file(f"{BUCKET}/synsets-only/synsets.txt")
    proc = run_cli("check", url, env=env, check=False)
    assert proc.returncode == 1 and "synsets.txt" in proc.stdout + proc.stderr


def test_report_of_a_bucket_dataset(s3, archives, replicas, tmp_path):
    """`prepare --only tensorflow` into a bucket writes the report there too; `report` on
    the bucket counts what the same command counts on the local run (every record's
    label, the sample, the thumbnails read by ranged requests)."""
    import json

    fs, env = s3
    url = f"s3://{BUCKET}/reported"
    args = ["--only", "tensorflow", "--train-shards", "3", "--val-shards", "2"]
    run_cli("prepare", "--archives", archives, "--out", url, *args, env=env)
    fs.invalidate_cache()
    assert b"imagenet-prep" in fs.cat_file(f"{BUCKET}/reported/report.html")[:2048]
    local = tmp_path / "local"
    run_cli("prepare", "--archives", replicas["small"], "--out", local, *args, "--no-report")

    def summary(where, **kw) -> dict:
        r = json.loads(run_cli("report", where, "--json", "--no-check", **kw).stdout)
        return {k: r[k] for k in ("images", "sampled", "classes_shown", "thumbnails")}

    got = summary(url, env=env)
    assert got == summary(local) and got["thumbnails"] > 0


def _full_reads(endpoint: str, run) -> Counter:
    """Requests that read an object from its first byte (a download, or the first block of
    a front-to-back read), per key, while `run()` runs: from the server's own recorder,
    which writes to the current folder of this process (the server is a thread here)."""
    def api(what: str) -> bytes:
        req = urllib.request.Request(f"{endpoint}/moto-api/recorder/{what}",
                                     method="GET" if what.startswith("download") else "POST")
        with urllib.request.urlopen(req) as r:
            return r.read()

    api("reset-recording")
    api("start-recording")
    try:
        run()
    finally:
        api("stop-recording")
    reads: Counter = Counter()
    for line in api("download-recording").decode().splitlines():
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        if entry["method"] == "GET" and headers.get("range", "bytes=0-").startswith("bytes=0-"):
            reads[urllib.parse.urlsplit(entry["url"]).path] += 1
    return reads


def test_a_bucket_report_reads_each_shard_once(s3, archives, tmp_path, monkeypatch):
    """`report` and its check share one download of each TFRecord shard in a bucket (the
    check reuses the scan's read of the records), and the check still finds damage."""
    fs, env = s3
    url = f"s3://{BUCKET}/reported-once"
    run_cli("prepare", "--archives", archives, "--out", url, "--only", "tensorflow",
            "--train-shards", "3", "--val-shards", "2", "--no-report", env=env)
    monkeypatch.chdir(tmp_path)
    got: dict = {}

    def report() -> None:
        got.update(json.loads(run_cli("report", url, "--json", env=env).stdout))

    reads = _full_reads(env["AWS_ENDPOINT_URL"], report)
    shards = {k: n for k, n in reads.items() if "/tfrecord_" in k}
    assert got["check"] is True and len(shards) == 5 and set(shards.values()) == {1}, reads
    damaged = sorted(fs.ls(f"{BUCKET}/reported-once/tfrecord_val"))[-1]
    flip_byte(fs, damaged)
    proc = run_cli("report", url, "--json", env=env, check=False)
    assert json.loads(proc.stdout)["check"] is False
    proc = run_cli("check", url, env=env, check=False)
    assert proc.returncode == 1 and damaged.rsplit("/", 1)[1] in proc.stdout
    fs.pipe_file(f"{BUCKET}/reported-once/.imagenet-prep/prepare.json", b"[1")
    one_line(run_cli("check", url, env=env, check=False), 5,  # check reads every record
             f"{url}/.imagenet-prep/prepare.json: damaged state record")
