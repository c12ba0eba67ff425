"""`imagenet-prep download` against a real HTTP server on 127.0.0.1 serving a replica.

The server (tests/mirror_server.py) switches Range support off, drops
connections midway, demands a header, flips a byte or sends slowly; every case
ends either with files byte-identical to the replica or with a one-line error
and nothing under a final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import one_line, run_cli, tmpfs
from mirror_server import MirrorServer

from imagenet_prep.download import Credentials, RetryPolicy, TransferOptions, download_archives
from imagenet_prep.download.auth import parse_headers, redact, split_userinfo
from imagenet_prep.download.transfer import load_state, state_path
from imagenet_prep.errors import NoSpaceError, PrepError
from imagenet_prep.sources.archives import MD5SUMS, SIZES, TEST, TEST_V10102019, TRAIN, VAL

ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_img_test.tar",
            "ILSVRC2012_bbox_train_v2.tar.gz", "ILSVRC2012_bbox_val_v3.tgz",
            "ILSVRC2012_devkit_t12.tar.gz")
# Fast retries, frequent checkpoints and small pieces, so every file splits over connections.
FAST = TransferOptions(connections=4, retry=RetryPolicy(attempts=5, delay=0.001),
                       checkpoint_seconds=0.05, min_piece=8 << 10)
SECRETS = ("s3cr3t-header", "s3cr3t-cookie", "s3cr3t-pass")


@pytest.fixture
def mirror(small_replica):
    with MirrorServer(small_replica) as srv:
        yield srv


def fetch(to: Path, url: str, options: TransferOptions = FAST, **kw) -> tuple[dict, list[str]]:
    lines: list[str] = []
    report = download_archives(to, base_url=url, options=options, progress=False,
                               log=lines.append, **kw)
    return report, lines


def same_files(a: Path, b: Path, names=ARCHIVES) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".part" in p.name)


def as_from_a_shell() -> None:
    """In the child before exec: the signal state a shell gives a foreground command, not
    the test process's (a library loaded by the suite may have blocked or ignored SIGINT,
    which a child inherits, and Ctrl-C then never arrives)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def range_starts(srv: MirrorServer, name: str) -> list[int]:
    """Start offsets of the ranged data requests (the first-byte probe left out)."""
    out = []
    for r in srv.gets(name):
        spec = r["headers"].get("Range")
        if spec and spec != "bytes=0-0":
            out.append(int(spec.removeprefix("bytes=").split("-")[0]))
    return out


def partial(to: Path, srv: MirrorServer, name: str = TRAIN, after: int = 40_000) -> int:
    """Leave `name` half downloaded (a drop, and no retries allowed); returns bytes kept."""
    srv.drops, srv.drop_after = 1, after
    one_try = TransferOptions(connections=1, retry=RetryPolicy(attempts=1, delay=0.001))
    with pytest.raises(PrepError, match="gave up after 1 failed attempts in a row"):
        fetch(to, srv.url, one_try, roles=[name])
    srv.drops = 0
    state = load_state(to / name)
    assert state is not None and state["done"] == [[0, after]]
    assert not (to / name).exists()
    return after


def test_full_download_verifies(mirror, small_replica, tmp_path):
    to = tmp_path / "archives"
    proc = run_cli("download", "--to", to, "--base-url", mirror.url)
    same_files(to, small_replica, (*ARCHIVES, MD5SUMS, SIZES))
    assert leftovers(to) == []
    assert f"reference: MD5SUMS and SIZES from {mirror.url}" in proc.stdout
    assert proc.stdout.count("size and MD5 match") == 6
    assert "downloaded 6 files" in proc.stdout
    run_cli("verify", "--archives", to)  # exits 0 only if every archive is OK


def test_rerun_skips_what_is_here(mirror, small_replica, tmp_path):
    fetch(tmp_path, mirror.url)
    before = len(mirror.requests)
    report, lines = fetch(tmp_path, mirror.url)
    assert report["already_here"] == 6 and report["downloaded_files"] == 0
    assert sum("already here" in line for line in lines) == 6
    # Only MD5SUMS and SIZES were asked for: sizes match the reference, nothing is re-read.
    assert {r["path"] for r in mirror.requests[before:]} == {MD5SUMS, SIZES}


def test_verify_replaces_a_damaged_archive_already_here(mirror, small_replica, tmp_path):
    fetch(tmp_path, mirror.url)
    data = bytearray((tmp_path / VAL).read_bytes())
    data[100] ^= 1
    (tmp_path / VAL).write_bytes(data)  # same size: only an MD5 sees it
    report, _ = fetch(tmp_path, mirror.url)
    assert {f["status"] for f in report["files"]} == {"already here"}
    report, lines = fetch(tmp_path, mirror.url, verify_existing=True)
    assert any(line.startswith(f"{VAL}: MD5 ") and line.endswith(
        f"renamed to {VAL}.bad, downloading it again") for line in lines), lines
    assert [f["name"] for f in report["files"] if f["status"] == "downloaded"] == [VAL]
    same_files(tmp_path, small_replica)
    assert (tmp_path / f"{VAL}.bad").read_bytes() == data


def test_drops_midway_end_correct_through_resume(mirror, small_replica, tmp_path):
    mirror.drops, mirror.drop_after = 8, 20_000
    report, _ = fetch(tmp_path, mirror.url, replace(FAST, min_piece=64 << 10))
    same_files(tmp_path, small_replica)
    assert mirror.drops == 0
    assert sum(f["retries"] for f in report["files"]) == 8
    # The retries asked for the bytes after each drop, not for the piece again
    # (val, 51,200 bytes in one piece, is cut at 20,000 and at 40,000 bytes).
    assert range_starts(mirror, VAL) == [0, 20_000, 40_000]


def test_rerun_resumes_a_partial_file(mirror, small_replica, tmp_path):
    kept = partial(tmp_path, mirror)
    mirror.requests.clear()
    report, lines = fetch(tmp_path, mirror.url, roles=["train"])
    same_files(tmp_path, small_replica, [TRAIN])
    assert any(line.startswith(f"{TRAIN}: resuming at 18.6%") for line in lines), lines
    f = report["files"][0]
    assert f["resumed"] and f["resumed_from"] == kept and not f["restarted"]
    assert min(range_starts(mirror, TRAIN)) == kept
    assert leftovers(tmp_path) == []


def test_server_without_range_restarts_cleanly(mirror, small_replica, tmp_path):
    partial(tmp_path, mirror)
    mirror.ranges = False
    report, lines = fetch(tmp_path, mirror.url, roles=["train"])
    same_files(tmp_path, small_replica, [TRAIN])
    restart = [line for line in lines if "Range" in line]
    assert restart == [f"{TRAIN}: the server ignores Range requests; restarting from byte 0 "
                       "with one connection"]
    f = report["files"][0]
    assert f["restarted"] and not f["resumed"] and f["connections"] == 1


def test_range_ignored_midway_restarts_with_one_connection(mirror, small_replica, tmp_path):
    mirror.ranges = "probe"  # says yes to the probe, then answers ranges with the whole file
    report, lines = fetch(tmp_path, mirror.url, roles=["train"])
    same_files(tmp_path, small_replica, [TRAIN])
    assert f"{TRAIN}: the server ignored a Range request; restarting from byte 0 with one " \
           "connection" in lines
    assert report["files"][0]["connections"] == 1


def test_changed_on_server_restarts(mirror, archives_copy, tmp_path):
    with MirrorServer(archives_copy) as srv:
        partial(tmp_path, srv)
        os.utime(archives_copy / TRAIN, ns=(1, 1))  # a new ETag and Last-Modified
        report, lines = fetch(tmp_path, srv.url, roles=["train"])
    same_files(tmp_path, archives_copy, [TRAIN])
    assert f"{TRAIN}: it changed on the server since the last run (ETag or Last-Modified); " \
           "restarting from byte 0" in lines
    assert report["files"][0]["restarted"]


def test_parallel_output_identical_to_single(mirror, small_replica, tmp_path):
    one, four = tmp_path / "one", tmp_path / "four"
    r1, _ = fetch(one, mirror.url, TransferOptions(connections=1, min_piece=8 << 10))
    mirror.requests.clear()
    mirror.rate = 500_000  # a piece takes ~0.1 s, so each of the 4 threads gets one
    r4, _ = fetch(four, mirror.url)
    same_files(one, four)
    same_files(four, small_replica)
    conns = {f["name"]: f["connections"] for f in r4["files"]}
    assert conns[TRAIN] == 4
    assert {f["connections"] for f in r1["files"]} == {1}
    assert len({r["port"] for r in mirror.gets(TRAIN)}) >= 4  # separate TCP connections
    assert len(range_starts(mirror, TRAIN)) >= 4


@pytest.mark.parametrize("kind", ["header", "cookie-header", "cookies-file", "netrc", "userinfo"])
def test_credentials_are_sent(small_replica, tmp_path, monkeypatch, kind):
    creds, url_auth = Credentials(), ""
    if kind == "header":
        required = ("X-Token", "s3cr3t-header")
        creds.headers = parse_headers(["X-Token: s3cr3t-header"])[0]
    elif kind == "cookie-header":
        required = ("Cookie", "sessionid=s3cr3t-cookie")
        creds.cookie_header = parse_headers(["Cookie: sessionid=s3cr3t-cookie"])[1]
    elif kind == "cookies-file":
        from imagenet_prep.download.auth import load_cookies

        required = ("Cookie", "sessionid=s3cr3t-cookie")
        jar = tmp_path / "cookies.txt"
        jar.write_text("# Netscape HTTP Cookie File\n"
                       "127.0.0.1\tFALSE\t/\tFALSE\t0\tsessionid\ts3cr3t-cookie\n")
        creds.cookies = load_cookies(jar)
    else:
        required = ("Authorization", "Basic ")  # me:s3cr3t-pass
        if kind == "netrc":
            rc = tmp_path / "netrc"
            rc.write_text("machine 127.0.0.1 login me password s3cr3t-pass\n")
            rc.chmod(0o600)
            monkeypatch.setenv("NETRC", str(rc))
            creds.netrc = True
        else:
            url_auth = "me:s3cr3t-pass@"
    with MirrorServer(small_replica) as srv:
        srv.required = required
        url = srv.url.replace("://", f"://{url_auth}")
        report, lines = fetch(tmp_path / "out", url, credentials=creds, roles=["val"])
        sent = [r["headers"].get(required[0], "") for r in srv.gets(VAL)]
    same_files(tmp_path / "out", small_replica, [VAL])
    assert sent and all(required[1] in v for v in sent)
    text = json.dumps(report) + "\n".join(lines)
    assert not any(s in text for s in SECRETS)


def test_401_says_credentials_and_never_shows_them(small_replica, tmp_path):
    jar = tmp_path / "cookies.txt"
    jar.write_text("# Netscape HTTP Cookie File\n"
                   "127.0.0.1\tFALSE\t/\tFALSE\t0\tsessionid\ts3cr3t-cookie\n")
    to = tmp_path / "out"
    with MirrorServer(small_replica) as srv:
        srv.required = ("X-Token", "the-right-one")
        url = srv.url.replace("://", "://me:s3cr3t-pass@")
        proc = run_cli("download", "--to", to, "--base-url", url, "--header",
                       "X-Token: s3cr3t-header", "--cookies", jar, check=False)
    line = one_line(proc, 1, "HTTP 401", "--cookies FILE", "--header", "--netrc",
                          f"{srv.url}ILSVRC2012_devkit_t12.tar.gz")
    assert "@" not in line
    assert not any(s in proc.stdout + proc.stderr for s in SECRETS)
    assert not any((to / n).exists() for n in ARCHIVES) and leftovers(to) == []


def test_404_names_the_url(mirror, tmp_path):
    with pytest.raises(PrepError) as e:
        fetch(tmp_path, mirror.url + "wrong/")
    assert str(e.value) == (f"{mirror.url}wrong/ILSVRC2012_devkit_t12.tar.gz: not found "
                            "(HTTP 404 Not Found); check --base-url")
    assert not any((tmp_path / n).exists() for n in ARCHIVES) and leftovers(tmp_path) == []


def test_test_archive_falls_back_to_its_other_name(archives_copy, tmp_path):
    os.replace(archives_copy / TEST, archives_copy / TEST_V10102019)
    for name in (MD5SUMS, SIZES):  # list the file under both names; only the second exists
        path = archives_copy / name
        line = next(x for x in path.read_text().splitlines() if x.endswith(TEST))
        path.write_text(path.read_text() + line.replace(TEST, TEST_V10102019) + "\n")
    with MirrorServer(archives_copy) as srv:
        report, _ = fetch(tmp_path, srv.url, roles=["test"])
        tried = [r["path"] for r in srv.requests if r["path"].startswith("ILSVRC")]
    assert tried[0] == TEST and report["files"][0]["name"] == TEST_V10102019
    same_files(tmp_path, archives_copy, [TEST_V10102019])


def test_broken_checksum_list_is_ignored_and_sizes_still_checked(archives_copy, tmp_path):
    (archives_copy / MD5SUMS).write_text("<html>oops</html>\n")
    with MirrorServer(archives_copy) as srv:
        lines: list[str] = []
        with pytest.raises(PrepError) as e:
            download_archives(tmp_path / "out", base_url=srv.url, options=FAST,
                              progress=False, log=lines.append, roles=["train"])
    assert lines[0] == (f"ignoring MD5SUMS and SIZES from {srv.url}: {srv.url}MD5SUMS:1: "
                        "expected '<value>  <name>', got '<html>oops</html>'")
    assert str(e.value) == (f"{srv.url}{TRAIN}: the server has 215,040 bytes, the reference "
                            "says 147,897,477,120; wrong --base-url, or another version of "
                            "the file")
    assert list((tmp_path / "out").iterdir()) == []  # nothing fetched, nothing kept


def test_corrupted_byte_is_kept_as_bad(mirror, small_replica, tmp_path):
    mirror.corrupt = {TRAIN: 12_345}
    with pytest.raises(PrepError) as e:
        fetch(tmp_path, mirror.url)
    message = str(e.value)
    assert message.startswith(f"{tmp_path / TRAIN}: downloaded, but MD5 ")
    assert f"kept as {TRAIN}.bad" in message and "\n" not in message
    assert not (tmp_path / TRAIN).exists() and leftovers(tmp_path) == []
    bad, good = (tmp_path / f"{TRAIN}.bad").read_bytes(), (small_replica / TRAIN).read_bytes()
    assert len(bad) == len(good)
    assert [i for i in range(len(bad)) if bad[i] != good[i]] == [12_345]
    # Smaller archives come first and are complete.
    same_files(tmp_path, small_replica, [n for n in ARCHIVES if n not in (TRAIN,)])


def test_local_folder_and_file_url(small_replica, tmp_path):
    fetch(tmp_path / "a", str(small_replica))
    fetch(tmp_path / "b", small_replica.as_uri())
    same_files(tmp_path / "a", small_replica, (*ARCHIVES, MD5SUMS, SIZES))
    same_files(tmp_path / "b", small_replica, (*ARCHIVES, MD5SUMS, SIZES))


def test_full_disk_is_refused_before_downloading(mirror, tmp_path):
    with tmpfs(tmp_path / "small", "size=128k") as to:
        with pytest.raises(NoSpaceError, match="cannot write: no space left on device"):
            fetch(to, mirror.url, roles=["train"])
        assert not (to / TRAIN).exists() and leftovers(to) == []


def test_messages_never_show_secrets():
    assert redact("https://me:pw@host:8443/a/b?sig=abc#x") == "https://host:8443/a/b?..."
    assert split_userinfo("http://me:p%40ss@h/x/") == ("http://h/x/", ("me", "p@ss"))
    with pytest.raises(PrepError) as e:
        parse_headers(["s3cr3t-header-without-a-colon"])
    assert "s3cr3t" not in str(e.value)
    assert "s3cr3t" not in repr(Credentials(headers={"X": "s3cr3t"}))


def test_killed_download_resumes(small_replica, tmp_path):
    to = tmp_path / "out"
    size = (small_replica / TRAIN).stat().st_size
    with MirrorServer(small_replica) as srv:
        srv.rate = 40_000  # bytes/s: the file takes ~5 s, long enough to kill it midway
        cmd = [sys.executable, "-m", "imagenet_prep", "download", "--to", str(to),
               "--base-url", srv.url, "--only", "train", "--connections", "1"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        state = None
        while time.monotonic() < deadline and proc.poll() is None:
            state = load_state(to / TRAIN) if state_path(to / TRAIN).exists() else None
            if state and state["done"]:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        state = load_state(to / TRAIN)
        assert state is not None and state["done"] and state["done"][0][0] == 0
        kept = state["done"][0][1]
        assert 0 < kept < size
        assert not (to / TRAIN).exists()
        srv.rate = None
        srv.requests.clear()
        rerun = run_cli(*cmd[3:])
        assert f"{TRAIN}: resuming at" in rerun.stdout
        assert min(range_starts(srv, TRAIN)) >= kept
    same_files(to, small_replica, [TRAIN])
    assert leftovers(to) == []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_on_a_stalled_server_stops_at_once_and_keeps_progress(small_replica, tmp_path,
                                                                     sig, code):
    """Ctrl-C, and SIGTERM the same way (issue 18, finding 7), with their own exit codes."""
    to = tmp_path / "out"
    with MirrorServer(small_replica) as srv:
        srv.rate = 100  # bytes/s: one 16 KiB block, then minutes of silence
        proc = subprocess.Popen(
            [sys.executable, "-m", "imagenet_prep", "download", "--to", str(to), "--base-url",
             srv.url, "--only", "train", "--connections", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=as_from_a_shell)
        deadline = time.monotonic() + 30
        # wait until the server has written the block (headers before it), not a fixed
        # pause after the request: on a loaded machine that pause was too short
        while srv.sent.get(TRAIN, 0) < 16 << 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # the block is in the client's hands
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)  # far less than the 60 s read timeout
    assert proc.returncode == code
    assert err.strip().endswith("interrupted; run the same command again to resume")
    assert load_state(to / TRAIN)["done"] == [[0, 16 << 10]]  # what arrived was kept
    assert not (to / TRAIN).exists()


def test_prepare_download_into_empty_folder(mirror, tmp_path):
    arch, ds = tmp_path / "archives", tmp_path / "ds"
    proc = run_cli("prepare", "--archives", arch, "--out", ds, "--download", "--base-url",
                   mirror.url, "--only", "tensorflow", "--train-shards", "2", "--val-shards", "1",
                   "--json")
    report = json.loads(proc.stdout)
    assert {"download", "verify", "bbox", "tfrecord"} <= set(report["stages"])
    assert report["stages"]["download"]["result"]["downloaded_files"] == 5
    assert not (arch / TEST).exists()  # TensorFlow's outputs do not read the test archive
    assert (ds / "tfrecord_train" / "train-00000-of-00002").is_file()
    assert (ds / "imagenet_2012_bounding_boxes.csv").is_file()
    assert hashlib.md5((arch / TRAIN).read_bytes()).hexdigest() in (arch / MD5SUMS).read_text()
