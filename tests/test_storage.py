"""Archives in object storage (issue 17), against a real S3 protocol server (moto's server
mode, started here on loopback): the same bytes as from a local folder, an index built
with few large reads and reused, one-line errors, and URLs refused where a local folder
is still needed."""

from __future__ import annotations

import re
import shutil
import sys

import pytest
from helpers import one_line, run_cli, tree_digest
from s3_server import SECRET, moto_s3, s3_filesystem

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

BUCKET = "imagenet"
SHARDS = ["--train-shards", "4", "--val-shards", "2"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(endpoint URL, environment for the CLI) of a moto S3 server on loopback."""
    with moto_s3(IMAGENET_PREP_CACHE=str(tmp_path_factory.mktemp("index-cache"))) as served:
        yield served


@pytest.fixture(scope="module")
def bucket_archives(s3, replicas):
    """The small replica uploaded to s3://imagenet/archives."""

    endpoint, _ = s3
    fs = s3_filesystem(endpoint)
    fs.mkdir(BUCKET)
    fs.put(f"{replicas['small']}/", f"{BUCKET}/archives/", recursive=True)
    return f"s3://{BUCKET}/archives"


def _one_line_error(proc, code: int, *parts: str) -> str:
    return one_line(proc, code, *parts, secret=SECRET)  # no credential in any message


def test_prepare_from_bucket_is_byte_identical(s3, bucket_archives, replicas, tmp_path):
    _, env = s3
    local, remote = tmp_path / "local", tmp_path / "remote"
    args = ["--only", "tensorflow", "--wds", "--no-report", *SHARDS]
    run_cli("prepare", "--archives", replicas["small"], "--out", local, *args)
    proc = run_cli("prepare", "--archives", bucket_archives, "--out", remote, *args,
                   "--workers", "2", env=env)
    want = tree_digest(local)
    assert any(k.startswith("tfrecord_train/") for k in want) and any(
        k.startswith("wds/") for k in want)
    assert tree_digest(remote) == want
    assert re.search(r"read requests, [0-9.]+ per image", proc.stdout), proc.stdout
    # check proves the dataset made from the bucket (its expectation names the objects)
    run_cli("check", remote, env=env)


def test_dask_local_reads_and_writes_the_bucket(s3, bucket_archives, replicas, tmp_path):
    """Dask workers read the archives from the bucket and write the shards into it (no
    shared folder): the objects of a local run."""
    pytest.importorskip("distributed")
    endpoint, env = s3
    local = tmp_path / "local"
    val = ["--splits", "val", "--val-shards", "2", "--dali-index"]
    run_cli("tfrecord", local, "--archives", replicas["small"], *val)
    run_cli("tfrecord", f"s3://{BUCKET}/dask", "--archives", bucket_archives, *val,
            "--dask-local", "2", env=env)
    got = _bucket_tree(endpoint, "dask", tmp_path / "got")
    assert got == tree_digest(local) and any(k.startswith("tfrecord_val_idx/") for k in got)


def test_index_requests_bounded_and_reused(s3, bucket_archives, replicas, tmp_path,
                                           monkeypatch):
    """The train archive (a tar of tars) is indexed in size/block + a few ranged reads;
    the index is then read from the cache: no request at all."""
    from imagenet_prep.runtime.storage import RemotePath
    from imagenet_prep.sources import remote_tar
    from imagenet_prep.sources.catalog import train_from_archive

    endpoint, env = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv(remote_tar.CACHE_ENV, str(tmp_path / "cache"))
    block = 8 << 10
    monkeypatch.setattr(remote_tar, "INDEX_BLOCK", block)
    loc = RemotePath(f"{bucket_archives}/ILSVRC2012_img_train.tar",
                     {"client_kwargs": {"endpoint_url": endpoint}})
    size = loc.stat().st_size
    assert size > 8 * block  # the bound means something: many blocks
    before = remote_tar.COUNTS.requests("index")
    cat = train_from_archive(loc)
    used = remote_tar.COUNTS.requests("index") - before
    assert 0 < used <= size // block + 2
    assert len(cat) == len(train_from_archive(replicas["small"] / loc.name))
    again = train_from_archive(loc)
    assert remote_tar.COUNTS.requests("index") - before == used  # zero requests on rerun
    assert (again.offsets == cat.offsets).all() and list(again.names) == list(cat.names)


def test_index_matches_local_scan(s3, bucket_archives, replicas, tmp_path, monkeypatch):
    """Small blocks make members and headers straddle block edges: the same catalog."""
    from imagenet_prep.runtime.storage import RemotePath
    from imagenet_prep.sources import remote_tar
    from imagenet_prep.sources.catalog import flat_from_archive, train_from_archive

    _, env = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv(remote_tar.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(remote_tar, "INDEX_BLOCK", 1536)
    for name, build in (("ILSVRC2012_img_train.tar", train_from_archive),
                        ("ILSVRC2012_img_val.tar", lambda a: flat_from_archive("val", a, None))):
        remote = build(RemotePath(f"{bucket_archives}/{name}"))
        local = build(replicas["small"] / name)
        assert list(remote.names) == list(local.names)
        assert (remote.offsets == local.offsets).all() and (remote.sizes == local.sizes).all()
        with remote.open() as r, local.open() as lo:
            assert all(r.read(i) == lo.read(i) for i in range(len(local)))


def test_damaged_object_in_bucket_is_one_line(s3, bucket_archives, tmp_path):

    endpoint, env = s3
    fs = s3_filesystem(endpoint)
    fs.copy(f"{BUCKET}/archives", f"{BUCKET}/cut", recursive=True)
    data = fs.cat_file(f"{BUCKET}/cut/ILSVRC2012_img_val.tar")
    fs.pipe_file(f"{BUCKET}/cut/ILSVRC2012_img_val.tar", data[: len(data) // 2])
    proc = run_cli("tfrecord", tmp_path / "ds", "--archives", f"s3://{BUCKET}/cut",
                   "--splits", "val", "--val-shards", "1", check=False, env=env)
    _one_line_error(proc, 1, f"s3://{BUCKET}/cut/ILSVRC2012_img_val.tar", "truncated")


LOCAL_ONLY = ("s3://imagenet/ds", "local or shared folder")


@pytest.mark.parametrize("command, words", [
    (["prepare", "--archives", "ARCH", "--out", "s3://imagenet/ds"], LOCAL_ONLY),
    (["extract", "--archives", "ARCH", "--out", "s3://imagenet/ds"],
     ("s3://imagenet/ds", "out must be a local or shared folder for extract")),
    (["flatten", "s3://imagenet/ds"],
     ("s3://imagenet/ds", "dataset must be a local or shared folder for flatten")),
    (["prepare", "--archives", "gs://imagenet/new", "--out", "ds", "--download"],
     ("gs://imagenet/new", "--download writes into s3:// buckets only")),
])
def test_dataset_url_refused_and_no_local_folder(s3, replicas, tmp_path, command, words):
    """Writing a dataset (or downloading) into a bucket is not done yet: refused in one
    line before anything is made, and no local folder named `s3:` appears (the old
    behaviour)."""
    _, env = s3
    args = [str(replicas["small"]) if a == "ARCH" else a for a in command]
    proc = run_cli(*args, check=False, env=env, cwd=tmp_path)
    _one_line_error(proc, 2, *words)
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "ds").exists()


def test_missing_bucket_credentials_extra(s3, bucket_archives, tmp_path):
    endpoint, env = s3
    ds = tmp_path / "ds"
    proc = run_cli("tfrecord", ds, "--archives", "s3://no-such-bucket/archives", check=False,
                   env=env)
    _one_line_error(proc, 1, "s3://no-such-bucket/archives", "bucket does not exist")
    bare = {k: v for k, v in env.items() if not k.startswith("AWS_ACCESS_KEY")
            and not k.startswith("AWS_SECRET")}
    bare.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
                AWS_CONFIG_FILE=str(tmp_path / "none"))
    proc = run_cli("tfrecord", ds, "--archives", bucket_archives, check=False, env=bare)
    _one_line_error(proc, 3, bucket_archives, "no credentials")
    # the credentials given as storage options instead (a nested key for the endpoint)
    proc = run_cli("tfrecord", ds, "--archives", bucket_archives, "--splits", "val",
                   "--val-shards", "1", "--storage-option", "key=testing",
                   "--storage-option", "secret=testing",
                   "--storage-option", f"client_kwargs.endpoint_url={endpoint}", env=bare)
    assert "1 shards" in proc.stdout
    gcsfs_missing = shutil.which("true") and "gcsfs" not in sys.modules
    if gcsfs_missing:
        try:
            import gcsfs  # noqa: F401
        except ImportError:
            proc = run_cli("tfrecord", ds, "--archives", "gs://bucket/archives", check=False,
                           env=env)
            _one_line_error(proc, 1, "gs://bucket/archives", "imagenet-prep[gcs]")


def test_storage_options_parse():
    from imagenet_prep.errors import OptionError
    from imagenet_prep.runtime.storage import parse_storage_options

    got = parse_storage_options(["anon=false", "client_kwargs.endpoint_url=http://h:1",
                                 "client_kwargs.region_name=eu", "default_block_size=1024",
                                 "profile=dev"])
    assert got == {"anon": False, "profile": "dev", "default_block_size": 1024,
                   "client_kwargs": {"endpoint_url": "http://h:1", "region_name": "eu"}}
    with pytest.raises(OptionError):
        parse_storage_options(["novalue"])


def test_pytorch_outputs_from_bucket(s3, bucket_archives, replicas, tmp_path):
    """Class trees, flat links and synsets.txt from archives in a bucket (a local DATASET),
    with a full MD5 verify of the objects: the same files as from the folder."""
    _, env = s3
    local, remote = tmp_path / "local", tmp_path / "remote"
    args = ["--only", "pytorch", "--no-report"]
    run_cli("prepare", "--archives", replicas["small"], "--out", local, *args)
    run_cli("prepare", "--archives", bucket_archives, "--out", remote, *args,
            "--verify", "full", env=env)
    assert tree_digest(remote) == tree_digest(local)


def test_dask_probe_of_a_bucket_dataset(s3, bucket_archives, monkeypatch):
    """A worker that cannot read the client's token object under DATASET (another bucket,
    no access) is a problem naming the URL."""
    from imagenet_prep.runtime.dask_cluster import SharedView, view_problems
    from imagenet_prep.runtime.files import write_atomic
    from imagenet_prep.runtime.storage import RemotePath

    _, env = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ds = RemotePath(f"s3://{BUCKET}/probe")
    write_atomic(ds / ".imagenet-prep" / "dask-probe-x", "tok")
    from imagenet_prep import __version__

    view = SharedView(host="client", version=__version__, dataset=str(ds),
                      token_name="dask-probe-x", token="tok", remote_dataset=ds)
    assert view_problems(view) == []
    gone = RemotePath("s3://no-such-bucket/ds")
    problems = view_problems(SharedView(**{**view.__dict__, "dataset": str(gone),
                                           "remote_dataset": gone}))
    assert len(problems) == 1 and problems[0].startswith(f"cannot read and write {gone} (")


def test_dask_probe_names_the_url_a_worker_cannot_read(s3, bucket_archives, monkeypatch):
    """The start-up probe's check, as a worker runs it: an archive object it cannot read,
    or sees at another size, is a problem naming its URL."""
    from imagenet_prep.runtime.dask_cluster import SharedView, remote_problems
    from imagenet_prep.runtime.storage import RemotePath

    _, env = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    arch = RemotePath(bucket_archives)
    val = arch / "ILSVRC2012_img_val.tar"
    size = val.stat().st_size
    view = SharedView(host="client", version="0", dataset="/nowhere", token_name="t",
                      token="t", remote_archives=arch,
                      remote_sizes=(("ILSVRC2012_img_val.tar", size),))
    assert remote_problems(view) == []
    other = SharedView(**{**view.__dict__, "remote_sizes": (
        ("ILSVRC2012_img_val.tar", size + 1), ("gone.tar", 10))})
    problems = remote_problems(other)
    assert len(problems) == 2
    assert f"sees another {val}" in problems[0]
    assert problems[1] == f"cannot read {bucket_archives}/gone.tar: not found"


def _bucket_tree(endpoint: str, prefix: str, dst) -> dict[str, str]:
    """The objects under s3://imagenet/PREFIX, fetched into `dst`, as tree_digest gives."""

    fs = s3_filesystem(endpoint)
    fs.get(f"{BUCKET}/{prefix}/", f"{dst}/", recursive=True)
    return tree_digest(dst)


def test_tfrecord_into_bucket_identical_resumed_and_mended(s3, bucket_archives, replicas,
                                                           tmp_path):
    """TFRecords, DALI indexes and the box CSV written into a bucket are the objects a run
    on local disk writes; a run killed midway resumes to the same objects; check proves
    the bucket and finds a corrupted and a deleted object, which the next run writes
    again."""
    import signal
    import subprocess
    import time


    endpoint, env = s3
    fs = s3_filesystem(endpoint)
    args = ["--archives", bucket_archives, "--train-shards", "24", "--val-shards", "2",
            "--dali-index", "--workers", "1"]
    local = tmp_path / "local"
    run_cli("tfrecord", local, *args, env=env)
    url = f"s3://{BUCKET}/out"
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_prep", "tfrecord", url, *args],
                            env={**env, "IMAGENET_PREP_CONCURRENCY": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if len(fs.ls(f"{BUCKET}/out/tfrecord_train", refresh=True)
               if fs.exists(f"{BUCKET}/out/tfrecord_train") else []) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    fs.invalidate_cache()
    assert not [p for p in fs.find(f"{BUCKET}/out") if ".ipart" in p or ".upload" in p]
    run_cli("tfrecord", url, *args, env=env)
    want = tree_digest(local)
    assert any(k.startswith("tfrecord_train_idx/") for k in want)
    assert "imagenet_2012_bounding_boxes.csv" in want
    assert _bucket_tree(endpoint, "out", tmp_path / "got1") == want
    # check proves the bucket, and finds a corrupted and a deleted object
    assert run_cli("check", url, env=env).stdout.strip().endswith(f"{url}: OK")
    fs.invalidate_cache()  # its listings are of the killed run
    shard = f"{BUCKET}/out/tfrecord_train/train-00007-of-00024"
    data = bytearray(fs.cat_file(shard))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(shard, bytes(data))
    fs.rm_file(f"{BUCKET}/out/tfrecord_val/validation-00001-of-00002")
    proc = run_cli("check", url, check=False, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{url}/tfrecord_train/train-00007-of-00024: " in proc.stdout
    assert "CRC mismatch" in proc.stdout
    assert f"{url}/tfrecord_val: 1 of 2 shards missing" in proc.stdout
    # the next run writes both again (check noted the damaged one)
    assert "wrote 2 shards" in run_cli("tfrecord", url, *args, env=env).stdout
    assert _bucket_tree(endpoint, "out", tmp_path / "got2") == want
