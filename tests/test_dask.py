"""Stages on a Dask cluster: the local pool's bytes, retries, a killed worker, the probe.

One LocalCluster of 2 worker processes serves the module (starting one costs
seconds).  References come from the CLI with the local pool (`--workers 2`).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pytest
from helpers import run_cli, tree_digest

pytest.importorskip("distributed")

from distributed import Client, LocalCluster  # noqa: E402

import imagenet_prep.runtime.dask_cluster as dx  # noqa: E402
from imagenet_prep.errors import PrepError  # noqa: E402
from imagenet_prep.folders import extract as tree  # noqa: E402
from imagenet_prep.folders.bbox_csv import ensure_csv, write_bbox_csv  # noqa: E402
from imagenet_prep.runtime.files import tmp_path as ipart_path  # noqa: E402
from imagenet_prep.runtime.pool import run_tasks  # noqa: E402
from imagenet_prep.shards import engine as shard_engine  # noqa: E402
from imagenet_prep.shards.tfrecord import write_tfrecords  # noqa: E402
from imagenet_prep.shards.wds import write_wds  # noqa: E402
from imagenet_prep.sources.archives import find_archive  # noqa: E402
from imagenet_prep.sources.catalog import iter_classes  # noqa: E402

SHARDS = dict(train_shards=8, val_shards=4)
SHARD_ARGS = ("--train-shards", "8", "--val-shards", "4")
BLOCK_AT = 2  # the third task of a run blocks until its worker is killed


@pytest.fixture(scope="module")
def cluster():
    # the helpers below travel to the workers by value (workers cannot import tests/)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address="127.0.0.1:0")
    try:
        yield c
    finally:
        c.close()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def on(cluster: LocalCluster, dataset: Path, archives: Path | None = None) -> dx.DaskExecutor:
    return dx.DaskExecutor(dataset=dataset, archives=archives,
                           scheduler=cluster.scheduler_address, log=lambda line: None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, replicas) -> dict[str, Path]:
    """The local pool's outputs: extract + bbox (from the folder), and tfrecord (archives)."""
    arch = replicas["small"]
    root = tmp_path_factory.mktemp("pool")
    run_cli("extract", "--archives", arch, "--out", root / "tree", "--workers", "2")
    run_cli("bbox", root / "tree", "--workers", "2")
    run_cli("tfrecord", root / "tf", "--archives", arch, *SHARD_ARGS, "--workers", "2")
    return {"tree": root / "tree", "tf": root / "tf"}


def test_extract_and_bbox_match_the_pool(cluster, small_replica, reference, tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    with on(cluster, ds, small_replica) as ex:
        summary = tree.extract(small_replica, ds, workers=ex)
        boxes = write_bbox_csv(ds, archives=small_replica, workers=ex)
    assert summary["train"]["files"] > 0 and summary["train"]["written"] > 0
    assert boxes["source"] == str(ds / "bbox_train") and boxes["boxes_written"] > 0
    assert tree_digest(ds) == tree_digest(reference["tree"])
    assert not list((ds / ".imagenet-prep").glob(dx.TOKEN_PREFIX + "*"))  # token removed


def test_tfrecord_from_archives_matches_the_pool(cluster, small_replica, reference, tmp_path):
    """Also runs `bbox` from the box archive (the XMLs streamed by the client)."""
    ds = tmp_path / "ds"
    ds.mkdir()
    with on(cluster, ds, small_replica) as ex:
        report = write_tfrecords(ds, archives=small_replica, workers=ex, **SHARDS,
                                 boxes_csv=ensure_csv(ds, small_replica, ex))
    assert report["run"]["shards_written"] == 12
    assert report["run"]["images"] == sum(s["images"] for s in report["splits"].values())
    assert tree_digest(ds) == tree_digest(reference["tf"])


def test_wds_matches_the_pool(cluster, small_replica, tmp_path):
    pool = tmp_path / "pool"
    run_cli("wds", "--archives", small_replica, "--out", pool, "--shard-samples", "10",
            "--workers", "2")
    out = tmp_path / "dask"
    out.mkdir()
    with on(cluster, out, small_replica) as ex:
        report = write_wds(out, archives=small_replica, shard_samples=10, workers=ex,
                           boxes_csv=ensure_csv(out, small_replica, ex))
    assert report["run"]["shards_written"] > 2
    assert tree_digest(out) == tree_digest(pool)


# --- a worker killed mid-task -------------------------------------------------------

def _claim(ctl: Path) -> int:
    """This call's number across every process (claimed by exclusive file creation)."""
    i = 0
    while True:
        try:
            os.close(os.open(ctl / f"call-{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return i
        except FileExistsError:
            i += 1


def _blocking(real, ctl: Path, output_of, task):
    """Run `real(task)`, except the BLOCK_AT-th call: it leaves a half-written temporary
    file, publishes its pid and waits to be killed."""
    if _claim(ctl) == BLOCK_AT:
        out = output_of(task)
        out.parent.mkdir(parents=True, exist_ok=True)
        ipart_path(out).write_bytes(b"half a file")
        (ctl / "pid.tmp").write_text(str(os.getpid()))
        os.replace(ctl / "pid.tmp", ctl / "pid")
        time.sleep(600)
    return real(task)


def _first_file(item: tuple[str, tree.CopyTask]) -> Path:
    task = item[1]
    return task.folder / task.names[0]


def _shard_file(task: shard_engine.ShardTask) -> Path:
    return task.path


def _kill_when_blocked(ctl: Path, killed: list[int]) -> None:
    deadline = time.monotonic() + 120
    while not (ctl / "pid").exists():
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)
    pid = int((ctl / "pid").read_text())
    os.kill(pid, signal.SIGKILL)
    killed.append(pid)


@pytest.mark.parametrize("stage", ["extract", "tfrecord"])
def test_worker_killed_midway(stage, cluster, small_replica, reference, tmp_path, monkeypatch):
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    ds = tmp_path / "ds"
    ds.mkdir()
    if stage == "extract":
        fn = functools.partial(_blocking, tree._run_task, ctl, _first_file)
        monkeypatch.setattr(tree, "_run_task", fn)
    else:
        fn = functools.partial(_blocking, shard_engine.write_shard, ctl, _shard_file)
        monkeypatch.setattr(shard_engine, "write_shard", fn)
    with Client(cluster.scheduler_address) as c:
        c.wait_for_workers(2, timeout=60)  # a previous test's killed worker is back
        pids = set(c.run(os.getpid).values())
    killed: list[int] = []
    killer = threading.Thread(target=_kill_when_blocked, args=(ctl, killed))
    killer.start()
    try:
        with on(cluster, ds, small_replica) as ex:
            if stage == "extract":
                tree.extract(small_replica, ds, splits=("train",), workers=ex)
            else:
                write_tfrecords(ds, archives=small_replica, workers=ex, **SHARDS,
                                boxes_csv=ensure_csv(ds, small_replica, ex))
    finally:
        killer.join()
    assert killed and killed[0] in pids, "the blocked task ran outside the cluster's workers"
    tasks = len(list((ds / "train").iterdir())) if stage == "extract" else 12
    assert len(list(ctl.glob("call-*"))) > tasks  # the killed worker's task ran again
    got = tree_digest(ds)
    want = tree_digest(reference["tree" if stage == "extract" else "tf"])
    if stage == "extract":
        want = {k: v for k, v in want.items() if k.startswith("train/")}
    assert got == want  # no temporary file left, every file as the pool wrote it


# --- failing tasks --------------------------------------------------------------------

def _flaky(ctl: Path, name: str) -> str:
    """Fails on its first attempt, succeeds on the next (attempts counted in files)."""
    attempt = _claim(ctl / name)
    if attempt == 0:
        raise OSError(f"transient failure of {name}")
    return f"{name} on attempt {attempt}"


def test_failed_task_is_retried(cluster, tmp_path):
    ctl = tmp_path / "ctl"
    names = [f"t{i}" for i in range(4)]
    for n in names:
        (ctl / n).mkdir(parents=True)
    with on(cluster, tmp_path) as ex:
        got = sorted(run_tasks(functools.partial(_flaky, ctl), names, ex))
    assert got == [f"{n} on attempt 1" for n in names]


def test_task_that_keeps_failing_stops_with_the_workers_error(cluster, archives_copy, tmp_path):
    """A file in the way (other content under a final name): the in-process one-line error."""
    wnid, members = next(iter_classes(find_archive(archives_copy, "train")))
    errors = []
    for route in ("local", "dask"):
        ds = tmp_path / route
        (ds / "train" / wnid).mkdir(parents=True)
        (ds / "train" / wnid / members[0].name).write_bytes(b"not this image")
        with pytest.raises(PrepError) as err:
            if route == "local":
                tree.extract(archives_copy, ds, splits=("train",), workers=1)
            else:
                with on(cluster, ds, archives_copy) as ex:
                    tree.extract(archives_copy, ds, splits=("train",), workers=ex)
        errors.append(str(err.value).replace(str(ds), "DS"))
    assert "exists with other content" in errors[0]
    assert errors[1] == errors[0]


# --- the probe ------------------------------------------------------------------------

def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


def _worker_seeing_tmpfs_over(folder: Path, address: str) -> subprocess.Popen:
    """A real `dask worker` whose mount namespace has an empty tmpfs over `folder`:
    it sees another folder at the same path, as a machine without the shared mount."""
    script = 'mount -t tmpfs none "$1" && shift && exec "$@"'
    return subprocess.Popen(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(folder), sys.executable, "-m",
         "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
         "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged user namespaces")
@pytest.mark.parametrize("hidden", ["dataset", "archives"])
def test_probe_refuses_a_worker_that_sees_other_folders(hidden, small_replica, tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    arch = tmp_path / "arch"
    shutil.copytree(small_replica, arch)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as good, Client(good) as c:
        # a run started before the bad worker joined refuses it at its first task
        with on(good, ds, arch) as ex:
            bad = _worker_seeing_tmpfs_over(ds if hidden == "dataset" else arch,
                                            good.scheduler_address)
            try:
                c.wait_for_workers(2, timeout=60)
                # the start-up probe (what a run started now does first) refuses it
                with pytest.raises(PrepError) as early:
                    ex._probe_all()
                with pytest.raises(PrepError) as late:
                    list(run_tasks(time.sleep, [0.2] * 10, ex))
            finally:
                bad.kill()
                bad.wait()
    for err in (late, early):
        msg = str(err.value)
        assert msg.startswith("Dask worker tcp://")
        if hidden == "dataset":
            assert f"sees another folder at DATASET {ds} " in msg
        else:
            assert f"sees another {arch}/ILSVRC2012_" in msg and "(missing;" in msg
        assert "every worker must see the archives and DATASET at the same paths" in msg


def test_view_problems_names_the_path(tmp_path):
    ds = tmp_path / "ds"
    ex = dx.DaskExecutor(dataset=ds, local_workers=1)
    view = ex._write_view()
    assert dx.view_problems(view) == []
    (ds / ".imagenet-prep" / view.token_name).write_text("another run's token")
    assert dx.view_problems(view) == [
        f"sees another folder at DATASET {ds} than {view.host} does "
        f"({ds}/.imagenet-prep/{view.token_name} is missing or differs)"]
    gone = dx.SharedView(**{**view.__dict__, "dataset": str(tmp_path / "nowhere")})
    assert dx.view_problems(gone) == [f"cannot see DATASET {tmp_path / 'nowhere'}"]


# --- the command line -----------------------------------------------------------------

def test_cli_dask_local_end_to_end(small_replica, reference, tmp_path):
    """`--dask-local 2` with a relative DATASET (made absolute for the workers)."""
    proc = run_cli("tfrecord", "ds", "--archives", small_replica, *SHARD_ARGS,
                   "--dask-local", "2", "--json", cwd=tmp_path)
    import json

    report = json.loads(proc.stdout)
    assert report["run"]["shards_written"] == 12
    assert report["dataset"] == str(tmp_path / "ds")
    assert "dask: 2 workers (2 threads)" in proc.stderr
    assert tree_digest(tmp_path / "ds") == tree_digest(reference["tf"])


def test_cli_without_the_extra_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['distributed'] = None; from imagenet_prep.cli import main; "
            f"sys.exit(main(['bbox', {str(tmp_path / 'ds')!r}, '--dask-local', '2']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("imagenet-prep: error: --scheduler and --dask-local need "
                                   "Dask: pip install 'imagenet-prep[dask]'")


def test_cli_worker_options_are_exclusive(tmp_path):
    proc = run_cli("extract", "--archives", tmp_path, "--out", tmp_path / "ds", "--workers", "2",
                   "--scheduler", "tcp://127.0.0.1:8786", check=False)
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


def test_unreachable_scheduler(tmp_path, monkeypatch):
    monkeypatch.setattr(dx, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(PrepError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with dx.DaskExecutor(dataset=tmp_path, scheduler="tcp://127.0.0.1:9"):
            pass
