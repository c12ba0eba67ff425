"""Image reads from an archive in a bucket (sources/remote_reads.py, remote_tar.ImageFetcher):
signed-URL ranged GETs against a real S3 server (moto's, on loopback) give the SDK's
bytes and errors, a URL that fails falls back to the SDK without showing itself, and the
reader keeps at most its concurrency of requests in flight and a bounded number of
images in memory."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
from s3_server import moto_s3, s3_filesystem

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from imagenet_prep.errors import CorruptArchiveError, PrepError  # noqa: E402
from imagenet_prep.runtime.storage import RemotePath  # noqa: E402
from imagenet_prep.sources import remote_reads, remote_tar  # noqa: E402

BUCKET = "reads"
KEY = "testing-key-id"
SECRET = "testing-secret-value"


@pytest.fixture(scope="module")
def s3():
    """The endpoint of a moto S3 server on loopback, with one 6 MiB object."""
    with moto_s3() as (endpoint, _):
        fs = s3_filesystem(endpoint)
        fs.mkdir(BUCKET)
        data = np.random.default_rng(0).bytes(6 << 20)
        fs.pipe_file(f"{BUCKET}/dir with space+plus/archive.tar", data)
        yield endpoint, data


@pytest.fixture
def env(s3, monkeypatch):
    endpoint, _ = s3
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return endpoint


def _pieces(size: int, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`n` non-overlapping (offset, size) pieces of an object of `size` bytes, in a
    shuffled order as a shard reads them; about half sit right after another (tar
    neighbours: coalesced), the others far apart."""
    rng = np.random.default_rng(seed)
    offsets, sizes, at = [], [], 0
    for _ in range(n):
        at += int(rng.choice([512, 100_000]))
        length = int(rng.integers(1_000, 40_000))
        offsets.append(at)
        sizes.append(length)
        at += length
    assert at < size
    order = rng.permutation(n)
    return np.array(offsets, np.int64)[order], np.array(sizes, np.int64)[order]


def _read_all(loc: RemotePath, offsets: np.ndarray, sizes: np.ndarray
              ) -> tuple[list[bytes], remote_tar.ImageFetcher]:
    fetcher = remote_tar.ImageFetcher(loc, offsets, sizes)
    try:
        return [fetcher.read(i) for i in range(len(sizes))], fetcher
    finally:
        fetcher.close()


def _url(endpoint: str) -> RemotePath:
    return RemotePath(f"s3://{BUCKET}/dir with space+plus/archive.tar",
                      {"client_kwargs": {"endpoint_url": endpoint}})


@pytest.mark.parametrize("signed", ["1", "0"])
def test_signed_and_sdk_reads_give_the_bytes(s3, env, monkeypatch, signed):
    _, data = s3
    monkeypatch.setenv(remote_reads.SIGNED_ENV, signed)
    offsets, sizes = _pieces(len(data), 40)
    got, fetcher = _read_all(_url(env), offsets, sizes)
    assert got == [data[o:o + s] for o, s in zip(offsets.tolist(), sizes.tolist(), strict=True)]
    assert fetcher._reader.signed is (signed == "1")  # s3fs signs; the switch turns it off
    assert 0 < fetcher.requests < len(sizes)  # neighbours shared a request
    assert fetcher.bytes >= int(sizes.sum())


def test_a_failing_signed_url_falls_back_to_the_sdk(s3, env):
    """A URL the server refuses (here: one to a closed port) costs one failed try; that
    range and every later one are read through the SDK, with the right bytes."""
    _, data = s3
    reader = remote_reads.RangeReader(_url(env))
    assert reader.signed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    reader._url = f"http://127.0.0.1:{closed}/{BUCKET}/x?X-Amz-Signature=0"
    try:
        assert reader.submit(100, 5000).result(30) == data[100:5000]
        assert not reader.signed
        assert reader.submit(7, 9).result(30) == data[7:9]
    finally:
        reader.close()


def test_errors_name_the_bucket_url_never_the_signed_one(s3, env):
    import fsspec

    endpoint, data = s3
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.pipe_file(f"{BUCKET}/gone.tar", data[:100_000])
    loc = RemotePath(f"s3://{BUCKET}/gone.tar", {"client_kwargs": {"endpoint_url": endpoint}})
    fetcher = remote_tar.ImageFetcher(loc, np.array([0, 50_000]), np.array([10, 10]))
    assert fetcher._reader.signed
    fs.rm_file(f"{BUCKET}/gone.tar")
    try:
        with pytest.raises(PrepError) as e:
            fetcher.read(0)
    finally:
        fetcher.close()
    text = str(e.value)
    assert text == f"s3://{BUCKET}/gone.tar: not found"
    assert "Signature" not in text and KEY not in text and SECRET not in text


class _Counting(remote_reads.RangeReader):
    """The real reader, recording how many of its requests are in flight at once."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        import threading

        self.lock = threading.Lock()
        self.now = self.peak = self.sent = 0

    def submit(self, start, end):
        with self.lock:
            self.now += 1
            self.sent += 1
            self.peak = max(self.peak, self.now)
        fut = super().submit(start, end)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, _) -> None:
        with self.lock:
            self.now -= 1


@pytest.mark.parametrize("window", [1, 3, 16])
def test_requests_in_flight_and_images_held_are_bounded(monkeypatch, window):
    """memory:// (a filesystem without an event loop: threads) with the same reader code:
    never more than `window` requests in flight, never more than a window of images and
    a batch held, and every image's bytes in catalog order."""
    import fsspec

    data = np.random.default_rng(2).bytes(40 << 20)
    fsspec.filesystem("memory").pipe_file("/bounded/archive.tar", data)
    monkeypatch.setenv(remote_tar.CONCURRENCY_ENV, str(window))
    monkeypatch.setattr(remote_reads, "RangeReader", _Counting)
    offsets, sizes = _pieces(len(data), 300, seed=window)
    fetcher = remote_tar.ImageFetcher(RemotePath("memory://bounded/archive.tar"), offsets, sizes)
    try:
        for i in range(len(sizes)):
            assert fetcher.read(i) == data[int(offsets[i]):int(offsets[i] + sizes[i])]
            assert len(fetcher._sent) <= fetcher.window + fetcher.batch
    finally:
        fetcher.close()
    reader = fetcher._reader
    assert reader.peak <= window and reader.sent == fetcher.requests < len(sizes)
    if window > 1:
        assert reader.peak > 1  # reads really overlap


def test_a_short_object_is_truncated_not_misread():
    import fsspec

    fsspec.filesystem("memory").pipe_file("/short/archive.tar", b"x" * 1000)
    loc = RemotePath("memory://short/archive.tar")
    fetcher = remote_tar.ImageFetcher(loc, np.array([0, 100_000]), np.array([10, 500]))
    try:
        assert fetcher.read(0) == b"x" * 10
        with pytest.raises(CorruptArchiveError, match="truncated"):
            fetcher.read(1)
    finally:
        fetcher.close()


def test_debug_logs_never_show_the_signature(s3, env, caplog):
    """fsspec's HTTP filesystem logs every URL it reads at DEBUG; a signed URL's query
    (key ID, signature) is a credential and is cut from those lines."""
    import logging

    _, data = s3
    with caplog.at_level(logging.DEBUG):
        reader = remote_reads.RangeReader(_url(env))
        try:
            assert reader.signed and reader.submit(10, 2000).result(30) == data[10:2000]
        finally:
            reader.close()
    http = [r.getMessage() for r in caplog.records if r.name == "fsspec.http"]
    assert any("archive.tar?(query not logged)" in m for m in http), http
    # the client's every log line (moto's server, in this process, logs what it is sent)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug")
    assert "Signature=" not in text and KEY not in text and SECRET not in text
