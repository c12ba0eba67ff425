"""`download --to s3://…` (issue 17, point 5): the archives streamed from a real HTTP mirror
(tests/mirror_server.py) into multipart uploads on a real S3 protocol server (moto's
server mode on loopback).  Every case ends with objects byte-identical to the mirror's
files, or with a one-line error and nothing under a final name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import one_line, run_cli
from mirror_server import MirrorServer
from s3_server import SECRET, moto_s3, s3_filesystem

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from imagenet_prep.sources.archives import MD5SUMS, SIZES, TRAIN  # noqa: E402

BUCKET = "downloads"
ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_img_test.tar",
            "ILSVRC2012_bbox_train_v2.tar.gz", "ILSVRC2012_bbox_val_v3.tgz",
            "ILSVRC2012_devkit_t12.tar.gz")
PART = 5 << 20  # S3's smallest part, so a 23 MiB archive makes five parts
BIG = (23 << 20) + 12_345
SMALL_PARTS = ["--part-size", "5MiB", "--connections", "1"]


@pytest.fixture(scope="module")
def s3():
    """(s3fs filesystem, environment for the CLI) of a moto S3 server with an empty bucket."""
    with moto_s3() as (endpoint, env):
        fs = s3_filesystem(endpoint)
        fs.mkdir(BUCKET)
        yield fs, env


@pytest.fixture(autouse=True)
def _forget_filesystems():
    """fsspec keeps one S3FileSystem per set of options; one made in this process while
    a test pointed AWS_ENDPOINT_URL at this module's server must not serve later tests
    (their servers listen elsewhere)."""
    yield
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def mirror_files(replicas, tmp_path_factory):
    """The small replica with a 23 MiB training archive (seeded bytes: only its size and
    MD5 matter to a download), listed in the folder's MD5SUMS and SIZES."""
    root = tmp_path_factory.mktemp("big-mirror")
    for name in ARCHIVES:
        shutil.copy(replicas["small"] / name, root / name)
    data = np.random.default_rng(17).integers(0, 256, BIG, dtype=np.uint8).tobytes()
    (root / TRAIN).write_bytes(data)
    (root / MD5SUMS).write_text("".join(
        f"{hashlib.md5((root / n).read_bytes()).hexdigest()}  {n}\n" for n in ARCHIVES))
    (root / SIZES).write_text("".join(f"{(root / n).stat().st_size}  {n}\n" for n in ARCHIVES))
    return root


@pytest.fixture
def mirror(mirror_files):
    with MirrorServer(mirror_files) as srv:
        yield srv


def uploads(fs, prefix: str) -> list[dict]:
    """The unfinished multipart uploads under s3://downloads/PREFIX."""
    r = fs.call_s3("list_multipart_uploads", Bucket=BUCKET, Prefix=prefix)
    return r.get("Uploads", [])


def objects(fs, prefix: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{BUCKET}/{prefix}"))


def one_line_error(proc: subprocess.CompletedProcess, code: int, *parts: str) -> str:
    return one_line(proc, code, *parts, secret=SECRET)  # no credential in any message


def test_full_download_into_bucket_then_skipped(s3, mirror, mirror_files):
    """Every archive streamed into the bucket is the mirror's file byte for byte, records
    its MD5 as metadata, leaves no upload or record behind; a rerun moves nothing."""
    fs, env = s3
    url = f"s3://{BUCKET}/full"
    proc = run_cli("download", "--to", url, "--base-url", mirror.url, "--part-size", "5MiB",
                   "--json", env=env)
    report = json.loads(proc.stdout)
    for name in (*ARCHIVES, MD5SUMS, SIZES):
        assert fs.cat_file(f"{BUCKET}/full/{name}") == (mirror_files / name).read_bytes(), name
    assert objects(fs, "full") == sorted((*ARCHIVES, MD5SUMS, SIZES))
    assert uploads(fs, "full") == []
    train = next(f for f in report["files"] if f["name"] == TRAIN)
    assert train["parts"] == 5 and train["parts_uploaded"] == 5 and train["part_size"] == PART
    assert train["md5_check"] == "OK" and report["downloaded_files"] == 6
    assert report["bytes"] == sum((mirror_files / n).stat().st_size for n in ARCHIVES)
    head = fs.call_s3("head_object", Bucket=BUCKET, Key=f"full/{TRAIN}")
    assert head["Metadata"] == {"md5": hashlib.md5((mirror_files / TRAIN).read_bytes()
                                                   ).hexdigest()}
    # the archives in the bucket pass verify, MD5s included
    run_cli("verify", "--archives", url, env=env)
    # already complete: skipped with no archive byte read from the mirror
    mirror.requests.clear()
    mirror.served.clear()
    again = run_cli("download", "--to", url, "--base-url", mirror.url, env=env)
    assert again.stdout.count("already here") >= 6, again.stdout
    assert {r["path"] for r in mirror.requests} == {MD5SUMS, SIZES}
    assert not any(mirror.served.get(n) for n in ARCHIVES)


def test_interrupted_and_killed_upload_resumes_at_the_next_part(s3, mirror, mirror_files):
    """Ctrl-C, then SIGKILL, midway: each leaves the unfinished upload and its record; the
    next run checks the recorded parts in the bucket, restores the MD5 state and fetches
    only the parts after them from the mirror; the object ends byte-identical."""
    fs, env = s3
    url = f"s3://{BUCKET}/resume"
    size = (mirror_files / TRAIN).stat().st_size
    record = f"{BUCKET}/resume/{TRAIN}.part.json"
    cmd = [sys.executable, "-m", "imagenet_prep", "download", "--to", url, "--base-url",
           mirror.url, "--only", "train", *SMALL_PARTS]

    def recorded() -> int:
        fs.invalidate_cache()
        return len(json.loads(fs.cat_file(record))["parts"]) if fs.exists(record) else 0

    def stop_after(parts: int, sig: int) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=_as_from_a_shell)
        deadline = time.monotonic() + 60
        while recorded() < parts and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.communicate(timeout=30)
        return proc

    mirror.rate = 10e6  # bytes/s: a part takes ~0.5 s, so a stop lands between parts
    first = stop_after(1, signal.SIGINT)
    assert first.returncode == 130
    kept1 = recorded()
    assert kept1 >= 1
    second = stop_after(kept1 + 1, signal.SIGKILL)
    assert second.returncode == -signal.SIGKILL
    kept = recorded()
    assert kept1 < kept < 5, "the run ended before it could be killed"
    assert not fs.exists(f"{BUCKET}/resume/{TRAIN}")  # never a partial object
    assert len(uploads(fs, "resume")) == 1
    mirror.rate = None
    mirror.served.clear()
    rerun = run_cli(*cmd[3:], env=env)
    assert f"{TRAIN}: resuming at" in rerun.stdout and f"{kept} parts" in rerun.stdout
    assert f"{5 - kept} of 5 parts of 5.2 MB uploaded this run" in rerun.stdout
    # only the parts after the record (and the probe's first byte) came from the mirror
    assert mirror.served[TRAIN] == size - kept * PART + 1
    assert fs.cat_file(f"{BUCKET}/resume/{TRAIN}") == (mirror_files / TRAIN).read_bytes()
    assert uploads(fs, "resume") == [] and not fs.exists(record)


def test_a_second_download_of_one_object_is_refused(s3, mirror):
    """A download into a bucket holds NAME.part.lock, as one to a folder flocks NAME.part:
    while a live run elsewhere holds it, another is refused in one line and starts no
    upload; a dead holder's lock is taken over, and the run leaves none behind."""
    fs, env = s3
    lock = f"{BUCKET}/locked/{TRAIN}.part.lock"
    fs.pipe_file(lock, json.dumps({"host": "dl-node", "pid": 99, "run": "x",
                                   "renewed": time.time()}).encode())
    args = ("download", "--to", f"s3://{BUCKET}/locked", "--base-url", mirror.url,
            "--only", "train", *SMALL_PARTS)
    one_line_error(run_cli(*args, check=False, env=env), 1,
                   f"s3://{BUCKET}/locked/{TRAIN}: another imagenet-prep download "
                   "(pid 99 on dl-node) is writing this object", f"delete s3://{lock}")
    assert uploads(fs, "locked") == []
    fs.pipe_file(lock, json.dumps({"host": "dl-node", "pid": 99, "run": "x",
                                   "renewed": time.time() - 3600}).encode())
    run_cli(*args, env=env)
    assert objects(fs, "locked") == sorted((MD5SUMS, SIZES, TRAIN))


def test_wrong_md5_aborts_the_upload(s3, mirror):
    fs, env = s3
    mirror.corrupt = {TRAIN: 7 << 20}  # one byte flipped in the second part
    proc = run_cli("download", "--to", f"s3://{BUCKET}/bad", "--base-url", mirror.url,
                   "--only", "train", *SMALL_PARTS, check=False, env=env)
    one_line_error(proc, 1, f"s3://{BUCKET}/bad/{TRAIN}: downloaded, but MD5 ",
                   "the upload was aborted")
    assert objects(fs, "bad") == sorted((MD5SUMS, SIZES))  # no archive, no record
    assert uploads(fs, "bad") == []


def test_bucket_refusals_are_one_line(s3, mirror):
    _, env = s3
    proc = run_cli("download", "--to", "s3://no-such-bucket/x", "--base-url", mirror.url,
                   check=False, env=env)
    one_line_error(proc, 1, "s3://no-such-bucket/x", "bucket does not exist")
    proc = run_cli("download", "--to", "gs://bucket/x", "--base-url", mirror.url,
                   check=False, env=env)
    one_line_error(proc, 2, "gs://bucket/x", "s3:// only")
    proc = run_cli("download", "--to", f"s3://{BUCKET}/x", "--part-size", "1MiB",
                   check=False, env=env)
    assert proc.returncode == 2 and "5MiB to 5GiB" in proc.stderr
    bare = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID",
                                                      "AWS_SECRET_ACCESS_KEY")}
    bare.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent")
    proc = run_cli("download", "--to", f"s3://{BUCKET}/x", "--base-url", mirror.url,
                   check=False, env=bare)
    one_line_error(proc, 3, f"s3://{BUCKET}/x", "no credentials")


def test_verify_replaces_an_object_with_a_wrong_md5(s3, mirror, mirror_files, monkeypatch):
    """An object of the right size without our MD5 metadata is taken as it is, as a local
    file would be; --verify reads it through, finds the MD5 wrong and downloads the
    archive again over it."""
    from imagenet_prep.download import TransferOptions, download_archives
    from imagenet_prep.sources.archives import VAL

    fs, env = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    good = (mirror_files / VAL).read_bytes()
    fs.pipe_file(f"{BUCKET}/verify/{VAL}", bytes(len(good)))  # the right size, other bytes
    lines: list[str] = []
    kw = dict(base_url=mirror.url, roles=["val"], progress=False, log=lines.append,
              options=TransferOptions(part_size=PART))
    report = download_archives(_remote("verify"), **kw)
    assert report["files"][0]["status"] == "already here"
    assert report["files"][0]["md5_check"] == "not checked"
    report = download_archives(_remote("verify"), verify_existing=True, **kw)
    assert any(ln.startswith(f"{VAL}: MD5 ") and "downloading it again" in ln for ln in lines)
    assert report["files"][0]["status"] == "downloaded"
    assert fs.cat_file(f"{BUCKET}/verify/{VAL}") == good


def test_prepare_downloads_into_the_bucket_then_reads_it(s3, replicas, tmp_path):
    """`prepare --download` with a bucket --archives streams what the outputs need into
    the bucket, then makes them from there: the TFRecords of a run on the local replica."""
    from helpers import tree_digest

    fs, env = s3
    small = replicas["small"]
    args = ["--only", "tensorflow", "--train-shards", "2", "--val-shards", "1", "--no-report"]
    with MirrorServer(small) as srv:
        proc = run_cli("prepare", "--archives", f"s3://{BUCKET}/prep", "--out", tmp_path / "ds",
                       "--download", "--base-url", srv.url, *args, "--json", env=env)
    stage = json.loads(proc.stdout)["stages"]["download"]["result"]
    assert stage["downloaded_files"] == 5 and stage["parts_uploaded"] == 5
    assert "ILSVRC2012_img_test.tar" not in objects(fs, "prep")  # not needed by TensorFlow
    for name in ARCHIVES[:2]:
        assert fs.cat_file(f"{BUCKET}/prep/{name}") == (small / name).read_bytes()
    run_cli("prepare", "--archives", small, "--out", tmp_path / "local", *args)
    assert tree_digest(tmp_path / "ds") == tree_digest(tmp_path / "local")


class _Stop(Exception):
    """Raised by the progress callback to stop a download midway, in this process."""


def _half_upload(s3, mirror, monkeypatch, prefix: str, parts: int = 2):
    """Stop an in-process upload of the train archive while its part `parts + 1` is being
    fetched: the bucket holds an unfinished upload of `parts` parts and their record.
    Returns the target RemotePath."""
    from imagenet_prep.download.sources import open_source
    from imagenet_prep.download.to_bucket import fetch_to_bucket, load_record
    from imagenet_prep.download.transfer import TransferOptions
    from imagenet_prep.runtime.storage import RemotePath

    _, env = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    source = open_source(mirror.url)
    remote = source.probe(TRAIN)
    target = RemotePath(f"s3://{BUCKET}/{prefix}/{TRAIN}")
    seen = 0

    def advance(n: int) -> None:
        nonlocal seen
        seen += n
        if seen > parts * PART:
            raise _Stop

    with pytest.raises(_Stop):
        data = (mirror.root / TRAIN).read_bytes()
        fetch_to_bucket(source, remote, target, want_size=len(data),
                        want_md5=hashlib.md5(data).hexdigest(),
                        opts=TransferOptions(connections=1, part_size=PART), log=print,
                        advance=advance)
    source.close()
    assert len(load_record(target)["parts"]) == parts
    return target


def _finish_in_process(mirror, prefix: str) -> list[str]:
    from imagenet_prep.download import TransferOptions, download_archives

    lines: list[str] = []
    download_archives(_remote(prefix), base_url=mirror.url,
                      roles=["train"], options=TransferOptions(connections=2, part_size=PART),
                      progress=False, log=lines.append)
    return lines


def _remote(prefix: str):
    from imagenet_prep.runtime.storage import RemotePath

    return RemotePath(f"s3://{BUCKET}/{prefix}")


def test_resume_without_a_saved_md5_state_reads_the_prefix_again(s3, mirror, mirror_files,
                                                                 monkeypatch):
    """Where libcrypto's MD5 state cannot be restored, the rerun hashes the uploaded range
    read again from the mirror (not uploaded again) and still ends byte-identical."""
    from imagenet_prep.download import md5state

    fs, _ = s3
    _half_upload(s3, mirror, monkeypatch, "nostate")
    monkeypatch.setattr(md5state, "available", lambda: False)
    mirror.served.clear()
    lines = _finish_in_process(mirror, "nostate")
    assert any("no saved MD5 state here; reading the first 10.5 MB again" in ln for ln in lines)
    assert "3 of 5 parts of 5.2 MB uploaded this run" in lines[-1]
    assert mirror.served[TRAIN] == (mirror_files / TRAIN).stat().st_size + 1
    assert fs.cat_file(f"{BUCKET}/nostate/{TRAIN}") == (mirror_files / TRAIN).read_bytes()


def test_a_part_that_differs_from_the_record_restarts_the_upload(s3, mirror, mirror_files,
                                                                monkeypatch):
    """A recorded part replaced in the bucket (its ETag no longer the recorded one) is not
    trusted: the upload starts anew (the old one aborted) and ends byte-identical."""
    from imagenet_prep.download.to_bucket import load_record

    fs, _ = s3
    target = _half_upload(s3, mirror, monkeypatch, "tampered")
    upload = load_record(target)["upload_id"]
    fs.call_s3("upload_part", Bucket=BUCKET, Key=f"tampered/{TRAIN}", UploadId=upload,
               PartNumber=1, Body=bytes(PART))
    lines = _finish_in_process(mirror, "tampered")
    assert f"{TRAIN}: part 1 in the bucket is not the one recorded; starting the upload " \
           "anew from byte 0" in lines
    assert "5 of 5 parts" in lines[-1]
    assert fs.cat_file(f"{BUCKET}/tampered/{TRAIN}") == (mirror_files / TRAIN).read_bytes()
    assert uploads(fs, "tampered") == []


def _as_from_a_shell() -> None:
    """In the child before exec: the signal state a shell gives a foreground command (see
    test_download.as_from_a_shell)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_md5_state_round_trip():
    """The saved state continues the hash exactly: hashlib's digest at every split point."""
    from imagenet_prep.download import md5state

    if not md5state.available():
        pytest.skip("no libcrypto MD5 here (the resume then reads the prefix again)")
    data = np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    for cut in (0, 1, 63, 64, 65, 4096, 123_457, len(data)):
        h = md5state.ResumableMD5()
        h.update(data[:cut])
        state = h.state()
        assert len(bytes.fromhex(state)) == md5state.CTX_SIZE
        rest = md5state.ResumableMD5.from_state(state)
        rest.update(bytearray(data[cut:]))
        assert rest.hexdigest() == hashlib.md5(data).hexdigest(), cut
        assert h.hexdigest() == hashlib.md5(data[:cut]).hexdigest()  # Final ran on a copy
    with pytest.raises(ValueError):
        md5state.ResumableMD5.from_state("00" * 10)
