"""The lock of a dataset in a bucket (runtime/bucket_lock.py), against a real S3 protocol
server (moto's, on loopback): a second run and `check` are refused while a live run holds
it, a dead holder's lock (a gone process of this host, or one silent for the lease) is
taken over, the conditional write lets one of two runs in, the lock is renewed while held
and removed at the end, and another run's lock is never renewed nor removed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from helpers import one_line, run_cli
from s3_server import KEY, SECRET, moto_s3, s3_filesystem

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from imagenet_prep.runtime import bucket_lock  # noqa: E402
from imagenet_prep.runtime.storage import RemotePath  # noqa: E402

BUCKET = "locks"


@pytest.fixture(scope="module")
def s3(replicas):
    """(s3fs filesystem, CLI environment, endpoint, archives URL) of a moto server."""
    with moto_s3() as (endpoint, env):
        fs = s3_filesystem(endpoint)
        fs.mkdir(BUCKET)
        fs.put(f"{replicas['small']}/", f"{BUCKET}/archives/", recursive=True)
        yield fs, env, endpoint, f"s3://{BUCKET}/archives"


def _lock_key(name: str) -> str:
    return f"{BUCKET}/{name}/.imagenet-prep/lock"


def _put_lock(fs, name: str, **rec) -> None:
    fs.pipe_file(_lock_key(name), json.dumps(rec).encode())


def _synsets(s3, name: str, check: bool = True) -> subprocess.CompletedProcess:
    fs, env, _, archives = s3
    fs.invalidate_cache()
    return run_cli("synsets", f"s3://{BUCKET}/{name}", "--archives", archives, env=env,
                   check=check)


def _dataset(s3, name: str) -> RemotePath:
    return RemotePath(f"s3://{BUCKET}/{name}",
                      {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": s3[2]}})


def test_a_live_holder_elsewhere_refuses_a_run_and_check(s3):
    fs, env, _, _ = s3
    _put_lock(fs, "live", host="gpu-node-7", pid=4242, run="x", started="2026-12-03T08:00:00Z",
              renewed=time.time())
    before = fs.cat_file(_lock_key("live"))
    line = one_line(_synsets(s3, "live", check=False), 1, f"s3://{BUCKET}/live: another "
                    "imagenet-prep run (pid 4242 on gpu-node-7, started 2026-12-03T08:00:00Z)",
                    f"delete s3://{_lock_key('live')} if you are sure")
    assert "10 minutes after its last renewal" in line
    one_line(run_cli("check", f"s3://{BUCKET}/live", env=env, check=False), 1,
             "pid 4242 on gpu-node-7")
    assert fs.cat_file(_lock_key("live")) == before  # nothing written
    assert not fs.exists(f"{BUCKET}/live/synsets.txt")


@pytest.mark.parametrize("holder", ["silent past the lease", "a gone process of this host"])
def test_a_dead_holders_lock_is_taken_over_and_removed(s3, holder):
    fs, env, _, _ = s3
    name = "dead-" + holder.split()[0]
    if holder == "silent past the lease":
        _put_lock(fs, name, host="gpu-node-7", pid=4242, run="x",
                  renewed=time.time() - bucket_lock.LEASE - 5)
    else:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        _put_lock(fs, name, host=socket.gethostname(), pid=gone.pid, run="x",
                  renewed=time.time())
    _synsets(s3, name)
    fs.invalidate_cache()
    assert fs.exists(f"{BUCKET}/{name}/synsets.txt")
    assert not fs.exists(_lock_key(name))  # the run removed its own lock at the end
    assert run_cli("check", f"s3://{BUCKET}/{name}", env=env).stdout.strip().endswith("OK")


def test_a_damaged_lock_is_judged_by_its_age(s3, monkeypatch):
    """A lock that is not a record: fresh, it is refused (holder unknown); older than the
    lease (by the object's own time), it is taken over."""
    fs = s3[0]
    fs.pipe_file(_lock_key("damaged"), b"\x00garbage")
    one_line(_synsets(s3, "damaged", check=False), 1, "pid ? on an unknown host")
    time.sleep(1.1)
    monkeypatch.setattr(bucket_lock, "LEASE", 1)
    with bucket_lock.bucket_lock(_dataset(s3, "damaged")):
        assert json.loads(fs.cat_file(_lock_key("damaged")))["pid"] > 0
    assert not fs.exists(_lock_key("damaged"))


def test_a_run_in_this_process_holds_it_renews_it_and_removes_it(s3, monkeypatch):
    fs = s3[0]
    ds = _dataset(s3, "held")
    monkeypatch.setattr(bucket_lock, "RENEW", 0.05)
    with bucket_lock.bucket_lock(ds):
        first = json.loads(fs.cat_file(_lock_key("held")))
        assert first["host"] == socket.gethostname() and first["pid"] > 0
        with bucket_lock.bucket_lock(ds):  # nested (a stage inside prepare): no new lock
            pass
        assert fs.exists(_lock_key("held"))
        line = one_line(_synsets(s3, "held", check=False), 1,
                        f"pid {first['pid']} on {first['host']}")
        assert "started " in line
        deadline = time.time() + 10
        while json.loads(fs.cat_file(_lock_key("held")))["renewed"] == first["renewed"]:
            assert time.time() < deadline, "the lock was never renewed"
            time.sleep(0.05)
        assert json.loads(fs.cat_file(_lock_key("held")))["run"] == first["run"]
    assert not fs.exists(_lock_key("held"))
    _synsets(s3, "held")


RACER = """
import sys, time
from imagenet_prep.errors import LockedError
from imagenet_prep.runtime import bucket_lock
from imagenet_prep.runtime.storage import RemotePath
ds = RemotePath(sys.argv[1], {"key": sys.argv[2], "secret": sys.argv[3],
                              "client_kwargs": {"endpoint_url": sys.argv[4]}})
time.sleep(max(0.0, float(sys.argv[5]) - time.time()))
try:
    rec = bucket_lock._acquire("{who}", bucket_lock.lock_object(ds))
    print("got", rec["run"], flush=True)
except LockedError:
    print("refused", flush=True)
sys.stdin.read()  # a holder stays alive until every racer has answered
"""


def test_of_runs_starting_together_one_gets_it(s3):
    """The conditional write (If-None-Match: *): four processes race for one lock."""
    start = time.time() + 4  # the interpreters are up by then
    procs = [subprocess.Popen([sys.executable, "-c", RACER, f"s3://{BUCKET}/race", KEY,
                               SECRET, s3[2], str(start)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    said = sorted(p.stdout.readline().strip() for p in procs)
    for p in procs:
        p.communicate(timeout=60)
    assert [s.split()[0] for s in said] == ["got", "refused", "refused", "refused"], said
    assert json.loads(s3[0].cat_file(_lock_key("race")))["run"] == said[0].split()[1]


def test_a_lock_taken_over_is_neither_renewed_nor_removed(s3, monkeypatch):
    """A run silent past the lease whose lock another run took: its renewals stop, and it
    does not delete the other run's lock when it ends."""
    fs = s3[0]
    ds = _dataset(s3, "taken")
    monkeypatch.setattr(bucket_lock, "RENEW", 0.05)
    with bucket_lock.bucket_lock(ds):
        _put_lock(fs, "taken", host="gpu-node-7", pid=4242, run="other",
                  renewed=time.time())
        time.sleep(0.3)
    assert json.loads(fs.cat_file(_lock_key("taken")))["run"] == "other"


def test_a_filesystem_without_conditional_writes_looks_first():
    """Other protocols (here fsspec's memory://) are looked at before the lock is written:
    a second run is refused while the first holds it."""
    ds = RemotePath("memory://lock-test/ds")
    with bucket_lock.bucket_lock(ds):
        rec = json.loads(bucket_lock.lock_object(ds).read_bytes())
        assert not bucket_lock._create(bucket_lock.lock_object(ds), {"run": "other"})
        assert json.loads(bucket_lock.lock_object(ds).read_bytes()) == rec
    assert not bucket_lock.lock_object(ds).exists()
