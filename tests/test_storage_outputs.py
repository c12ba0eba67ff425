"""Outputs beyond TFRecord written into a bucket (issue 17): WebDataset shards and what goes
beside them, and `prepare --only tensorflow --wds`, against a real S3 protocol server
(moto's server mode on loopback): the objects a run on local disk writes, resumed after a
kill, proved by `check`, and mended after damage."""

from __future__ import annotations

import os

import pytest
from helpers import run_cli, tree_digest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "outputs"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(s3fs filesystem, environment for the CLI) of a moto S3 server on loopback holding
    the small replica under s3://outputs/archives; credentials are dummies and the EC2
    metadata lookup is off (no traffic off this machine)."""
    import fsspec

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
               AWS_ENDPOINT_URL=endpoint,
               IMAGENET_PREP_CACHE=str(tmp_path_factory.mktemp("index-cache")))
    fs = fsspec.filesystem("s3", key="testing", secret="testing",
                           client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    fs.mkdir(BUCKET)
    yield fs, env
    server.stop()


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


WDS = ["--shard-samples", "10"]


def test_wds_into_bucket_identical_rerun_and_check(s3, archives, replicas, tmp_path):
    """`wds s3://...` writes the shards, indexes, _info.json, the card and the box CSV the
    local run writes; a rerun writes nothing; check proves the bucket, finds a corrupted
    shard and a deleted index, and the next run writes them again."""
    fs, env = s3
    local = tmp_path / "local"
    run_cli("wds", local, "--archives", replicas["small"], *WDS)
    url = f"s3://{BUCKET}/wds-ds"
    run_cli("wds", url, "--archives", archives, *WDS, env=env)
    want = tree_digest(local)
    assert {"wds/_info.json", "wds/README.md", "wds/train.json", "wds/validation.json",
            "wds/train-000000.tar", "imagenet_2012_bounding_boxes.csv"} <= set(want)
    assert bucket_tree(fs, "wds-ds", tmp_path / "got1") == want
    assert "all shards were already complete" in run_cli("wds", url, "--archives", archives,
                                                         *WDS, env=env).stdout
    assert run_cli("check", url, env=env).stdout.strip().endswith(f"{url}: OK")
    flip_byte(fs, f"{BUCKET}/wds-ds/wds/train-000001.tar")
    fs.rm_file(f"{BUCKET}/wds-ds/wds/validation.json")
    proc = run_cli("check", url, check=False, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"problem: {url}/wds/train-000001.tar: " in proc.stdout
    assert f"{url}/wds/validation.json: missing" in proc.stdout
    assert "wrote 1 shards" in run_cli("wds", url, "--archives", archives, *WDS,
                                       env=env).stdout
    assert bucket_tree(fs, "wds-ds", tmp_path / "got2") == want
    assert run_cli("check", url, env=env).returncode == 0
