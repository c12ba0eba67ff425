"""Each stage of imagenet-prep with its baselines, on one replica, in one work folder.

Every `imagenet-prep` command runs through the real CLI in a fresh interpreter
(`python -m imagenet_prep ...`), so its figure includes start-up, as a user sees
it.  Inputs that a stage needs but does not time (an extracted dataset, a
regrouped val/) come from one base dataset made by `prepare` at the start;
setups link or copy from it before each run, teardowns delete the outputs.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import Contender, Result, Stage, Target, at_least
from replica_cache import Replica

from imagenet_prep.sources import metadata
from imagenet_prep.sources.archives import (
    BBOX_TRAIN,
    BBOX_VAL,
    DEVKIT,
    MD5SUMS,
    TEST,
    TRAIN,
    VAL,
)

HERE = Path(__file__).resolve().parent
SPLIT_DIRS = ("train", "val", "test", "bbox_train", "bbox_val")
TARGET_XML_PER_S = 30_000
STATE = ".imagenet-prep"


@dataclass
class Ctx:
    """Where everything is for one benchmark run."""

    work: Path
    replica: Replica
    archives: Path  # the six archives (a copy in RAM under --tmpfs)
    bbox_archives: Path  # the larger box archive alone
    workers: int
    train_shards: int
    val_shards: int
    startup: float = 0.0  # median seconds of `imagenet-prep --help`

    @property
    def base(self) -> Path:
        return self.work / "base"

    def cli(self, *args: object) -> list[str]:
        return [sys.executable, "-m", "imagenet_prep", *map(str, args)]

    def py(self, script: str, *args: object) -> list[str]:
        return [sys.executable, str(HERE / script), *map(str, args)]

    def archive(self, name: str) -> Path:
        return self.archives / name

    @property
    def all_archives(self) -> list[Path]:
        return [self.archive(n) for n in (TRAIN, VAL, TEST, BBOX_TRAIN, BBOX_VAL, DEVKIT)]

    @property
    def shard_args(self) -> list[str]:
        return ["--train-shards", str(self.train_shards), "--val-shards", str(self.val_shards)]


def rm(*paths: Path) -> None:
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link copy of a folder tree (`cp -al`): instant, no data bytes."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)


def tree_digest(*folders: Path) -> str:
    """SHA-256 over relative names and contents of every file below `folders`."""
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(folder)).encode() + b"\0")
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()


def disk_bytes(*paths: Path) -> int:
    """Bytes allocated to the files below `paths`, each inode counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in paths:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def build_base(ctx: Ctx, full: bool = True, log=print) -> None:
    """The untimed base dataset the stages start from: `prepare --only all`, or with
    `full=False` only the box CSV (all that `tfrecord --archives` needs)."""
    rm(ctx.base)
    log("preparing the base dataset (untimed) ...")
    cmd = (ctx.cli("prepare", "--archives", ctx.archives, "--out", ctx.base, "--only", "all",
                   "--workers", ctx.workers, *ctx.shard_args) if full else
           ctx.cli("bbox", ctx.base, "--archives", ctx.archives, "--workers", ctx.workers))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (ctx.work / "synsets-1000.txt").write_text("".join(w + "\n" for w in metadata.wnids()))


# --- stages ---------------------------------------------------------------------------

def startup(ctx: Ctx) -> Stage:
    return Stage(
        "startup", "CLI start-up (in every figure below)", "runs", 1, None,
        [Contender("cli", "imagenet-prep --help", lambda: ctx.cli("--help"), ours=True),
         Contender("python", "python -c pass (the interpreter alone)",
                   lambda: [sys.executable, "-c", "pass"])],
        baseline="python",
    )


def verify(ctx: Ctx) -> Stage:
    files = sorted(ctx.all_archives, key=lambda p: -p.stat().st_size)
    one = ctx.work / "verify-train-only"
    one.mkdir(parents=True, exist_ok=True)
    if not (one / TRAIN).exists():
        (one / TRAIN).symlink_to(ctx.archive(TRAIN))
    shutil.copy(ctx.archive(MD5SUMS), one / MD5SUMS)
    names = " ".join(shlex.quote(str(f)) for f in files)
    w = ctx.workers
    return Stage(
        "verify", "verify: MD5 of the six archives", "images", ctx.replica.images,
        sum(f.stat().st_size for f in files),
        [
            Contender("ours", f"imagenet-prep verify ({w} threads)",
                      lambda: ctx.cli("verify", "--archives", ctx.archives, "--workers", w),
                      ours=True, warm=files),
            Contender("md5sum-par", f"md5sum, {w} at once (xargs -P {w}, largest first)",
                      lambda: f"printf '%s\\0' {names} | xargs -0 -n 1 -P {w} md5sum",
                      warm=files),
            Contender("md5sum", "md5sum, one process", lambda: f"md5sum {names}", warm=files),
            Contender("ours-1", "imagenet-prep verify, train archive only",
                      lambda: ctx.cli("verify", "--archives", one), ours=True,
                      warm=[ctx.archive(TRAIN)]),
            Contender("md5sum-1", "md5sum, train archive only",
                      lambda: ["md5sum", str(ctx.archive(TRAIN))], warm=[ctx.archive(TRAIN)]),
        ],
        baseline="md5sum",
        targets=[
            at_least("verify >= 0.9x md5sum with the same parallelism (per core)",
                     "ours", "md5sum-par", 0.9, ctx.startup),
            at_least("verify of one archive >= 0.9x md5sum (one core)", "ours-1", "md5sum-1",
                     0.9, ctx.startup),
        ],
        notes=["the train archive is most of the bytes, so a second core shortens the run only "
               "by the small archives"],
    )


def _tar_two_step(ctx: Ctx, out: Path) -> str:
    a = {n: shlex.quote(str(ctx.archive(n))) for n in (TRAIN, VAL, TEST, BBOX_TRAIN, BBOX_VAL)}
    o = shlex.quote(str(out))
    return (
        f"set -e; mkdir -p {o}/train {o}/val {o}/test {o}/bbox_train {o}/bbox_val; "
        f"tar xf {a[TRAIN]} -C {o}/train; cd {o}/train; "
        'for f in *.tar; do d="${f%.tar}"; mkdir -p "$d"; tar xf "$f" -C "$d"; rm "$f"; done; '
        f"tar xf {a[VAL]} -C {o}/val; tar xf {a[TEST]} -C {o}/test; "
        f"tar xzf {a[BBOX_TRAIN]} -C {o}/bbox_train; tar xzf {a[BBOX_VAL]} -C {o}/bbox_val"
    )


def extract(ctx: Ctx) -> Stage:
    out, out_tar, out_cp = ctx.work / "x-ours", ctx.work / "x-tar", ctx.work / "x-cp"
    inputs = ctx.all_archives
    inner_tars: list[int] = []

    def after_ours() -> None:
        inner_tars.append(sum(1 for _ in out.rglob("*.tar")))
        rm(out)

    srcs = " ".join(shlex.quote(str(ctx.base / d)) for d in SPLIT_DIRS)
    r = ctx.replica
    return Stage(
        "extract", "extract: train, val, test and box XMLs from the archives", "images",
        r.images, r.archive_bytes(TRAIN, VAL, TEST),
        [
            Contender("ours", "imagenet-prep extract",
                      lambda: ctx.cli("extract", "--archives", ctx.archives, "--out", out,
                                      "--workers", ctx.workers, "--json"),
                      ours=True, setup=lambda: rm(out), teardown=after_ours, warm=inputs,
                      json_out=True),
            Contender("tar", "GNU tar two-step (outer, each inner tar, rm)",
                      lambda: _tar_two_step(ctx, out_tar), setup=lambda: rm(out_tar),
                      teardown=lambda: rm(out_tar), warm=inputs),
            Contender("cp", "cp -r of the extracted tree (creating the files)",
                      lambda: f"mkdir -p {out_cp} && cp -r {srcs} {out_cp}/",
                      setup=lambda: rm(out_cp), teardown=lambda: rm(out_cp),
                      warm=[ctx.base / d for d in SPLIT_DIRS]),
        ],
        baseline="tar",
        targets=[
            at_least("extract >= 2x GNU tar two-step", "ours", "tar", 2.0, ctx.startup),
            at_least("extract >= 0.8x cp -r of the tree", "ours", "cp", 0.8, ctx.startup),
            Target("no inner tar written",
                   lambda res: (f"{max(inner_tars, default=0)} .tar files",
                                bool(inner_tars) and max(inner_tars) == 0)),
        ],
    )


def _flat_val(ctx: Ctx, dataset: Path) -> None:
    """dataset/val/ with every validation image flat, hard-linked from the base dataset."""
    rm(dataset)
    val = dataset / "val"
    val.mkdir(parents=True)
    for d in os.scandir(ctx.base / "val"):
        for f in os.scandir(d.path):
            os.link(f.path, val / f.name)


def _valtree_script(ctx: Ctx, dataset: Path) -> Path:
    """The seed's regrouping as a shell loop: `mkdir -p WNID; mv NAME WNID/` per image."""
    lines = [f"cd {shlex.quote(str(dataset / 'val'))}"]
    for d in sorted(os.scandir(ctx.base / "val"), key=lambda e: e.name):
        for f in sorted(os.listdir(d.path)):
            lines.append(f"mkdir -p {d.name}; mv {f} {d.name}/")
    script = ctx.work / "valtree-mv.sh"
    script.write_text("\n".join(lines) + "\n")
    return script


def valtree(ctx: Ctx) -> Stage:
    ds, ds_sh = ctx.work / "vt-ours", ctx.work / "vt-sh"
    script = _valtree_script(ctx, ds_sh)
    return Stage(
        "valtree", "valtree: val/*.JPEG into val/WNID/", "images", ctx.replica.val_images, None,
        [
            Contender("ours", "imagenet-prep valtree (devkit + box XML labels)",
                      lambda: ctx.cli("valtree", ds, "--archives", ctx.archives),
                      ours=True, setup=lambda: _flat_val(ctx, ds), teardown=lambda: rm(ds),
                      warm=[ctx.archive(DEVKIT), ctx.archive(BBOX_VAL)]),
            Contender("sh", "shell loop: mkdir -p + mv per image (1 run; no target)",
                      lambda: ["bash", str(script)], setup=lambda: _flat_val(ctx, ds_sh),
                      teardown=lambda: rm(ds_sh), max_runs=1),
        ],
        baseline="sh",
    )


def flatten(ctx: Ctx) -> Stage:
    ds = ctx.work / "fl"

    def setup() -> None:
        rm(ds)
        for split in ("train", "val"):
            link_tree(ctx.base / split, ds / split)

    return Stage(
        "flatten", "flatten: train_flatten/ and val_flatten/ (hard links)", "images",
        ctx.replica.train_images + ctx.replica.val_images, None,
        [
            Contender("ours", "imagenet-prep flatten", lambda: ctx.cli("flatten", ds),
                      ours=True, setup=setup, teardown=lambda: rm(ds)),
            Contender("cp", "cp -al of the class trees (the same number of links)",
                      lambda: f"cp -al {ds}/train {ds}/train_links && "
                              f"cp -al {ds}/val {ds}/val_links",
                      setup=setup, teardown=lambda: rm(ds)),
        ],
        baseline="cp",
    )


def synsets(ctx: Ctx) -> Stage:
    ds = ctx.work / "sy"

    def setup() -> None:  # the class folders are all synsets reads of the tree
        rm(ds)
        for d in os.scandir(ctx.base / "train"):
            if d.is_dir():
                (ds / "train" / d.name).mkdir(parents=True)

    return Stage(
        "synsets", "synsets: synsets.txt (devkit words)", "files", 1, None,
        [Contender("ours", "imagenet-prep synsets",
                   lambda: ctx.cli("synsets", ds, "--archives", ctx.archives), ours=True,
                   setup=setup, teardown=lambda: rm(ds))],
    )


def bbox(ctx: Ctx) -> Stage:
    gz = ctx.bbox_archives / BBOX_TRAIN
    ds_gz, ds_dir = ctx.work / "bb-gz", ctx.work / "bb-dir"
    ref_csv = ctx.work / "bb-ref.csv"
    csv_name = "imagenet_2012_bounding_boxes.csv"
    if not (ds_dir / "bbox_train").is_dir():
        rm(ds_dir)
        subprocess.run(ctx.cli("extract", "--archives", ctx.bbox_archives, "--out", ds_dir,
                               "--splits", "bbox_train"), check=True, stdout=subprocess.DEVNULL)
    digests: dict[str, str] = {}

    def keep(key: str, path: Path) -> None:
        if key not in digests:
            digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()

    def after_gz() -> None:
        keep("gz", ds_gz / csv_name)
        rm(ds_gz)

    def after_dir() -> None:
        keep("dir", ds_dir / csv_name)
        rm(ds_dir / csv_name, ds_dir / STATE / "bbox.json")

    def after_ref() -> None:
        keep("ref", ref_csv)
        rm(ref_csv)

    xmls = int(ctx.replica.facts["counts"]["bbox_scaled"])
    synsets_file = ctx.work / "synsets-1000.txt"
    ref_cmd = (f"{shlex.join(ctx.py('ref_bbox.py', ds_dir / 'bbox_train', synsets_file))} "
               f"| LC_ALL=C sort > {shlex.quote(str(ref_csv))}")
    return Stage(
        "bbox", f"bbox: the box CSV from {xmls:,} XMLs of 1000 classes", "XML files", xmls,
        None,
        [
            Contender("ours", "imagenet-prep bbox, from the .tar.gz",
                      lambda: ctx.cli("bbox", ds_gz, "--archives", ctx.bbox_archives,
                                      "--workers", ctx.workers, "--json"),
                      ours=True, setup=lambda: rm(ds_gz), teardown=after_gz, warm=[gz],
                      json_out=True),
            Contender("ours-dir", "imagenet-prep bbox, from extracted bbox_train/",
                      lambda: ctx.cli("bbox", ds_dir, "--workers", ctx.workers, "--json"),
                      ours=True, teardown=after_dir, warm=[ds_dir / "bbox_train"],
                      json_out=True),
            Contender("ref", "reference method (ElementTree, 1 core) | sort; 1 run",
                      lambda: ref_cmd, teardown=after_ref, warm=[ds_dir / "bbox_train"],
                      max_runs=1),
        ],
        baseline="ref",
        targets=[
            Target(f"bbox from the .tar.gz >= {TARGET_XML_PER_S:,} XML/s on {ctx.workers} cores",
                   lambda res: _xml_rate(res["ours"], xmls, ctx.startup)),
        ],
        checks=[("CSV identical to the reference's (from .tar.gz and from folder)",
                 lambda: len(set(digests.values())) == 1 and len(digests) == 3)],
    )


def _xml_rate(res: Result, xmls: int, startup: float) -> tuple[str, bool]:
    """XML/s net of the CLI start-up; the run's own clock (its --json `seconds`) beside."""
    if not res.samples:
        return "n/a", False
    net = xmls / max(1e-3, res.seconds - startup)
    own = res.report.get("seconds") if isinstance(res.report, dict) else None
    shown = f"{xmls / res.seconds:,.0f}/s wall, {net:,.0f}/s net of start-up"
    if own:
        shown += f", {xmls / own:,.0f}/s by its own clock"
    return shown, net >= TARGET_XML_PER_S


def _reset_tfrecord(ds: Path) -> None:
    rm(ds / "tfrecord_train", ds / "tfrecord_val", ds / STATE / "tfrecord.json",
       ds / STATE / "tfrecord-report.json")


def has_dask_local() -> bool:
    out = subprocess.run([sys.executable, "-m", "imagenet_prep", "tfrecord", "--help"],
                         capture_output=True, text=True).stdout
    return "--dask-local" in out


def tfrecord(ctx: Ctx) -> Stage:
    ds = ctx.base
    inputs = [ctx.archive(TRAIN), ctx.archive(VAL)]
    folders = [ds / "train", ds / "val"]
    copy_out, fd_out = ctx.work / "tf-copy", ctx.work / "tf-decode"
    total = ctx.replica.input_bytes
    files = ctx.train_shards + ctx.val_shards
    chunk = -(-total // files)
    digests: dict[str, str] = {}

    def after(key: str):
        def done() -> None:
            if key not in digests:
                digests[key] = tree_digest(ds / "tfrecord_train", ds / "tfrecord_val")
            _reset_tfrecord(ds)
        return done

    a = " ".join(shlex.quote(str(p)) for p in inputs)
    ours_args = ["--workers", ctx.workers, *ctx.shard_args]
    contenders = [
        Contender("ours", "imagenet-prep tfrecord --archives",
                  lambda: ctx.cli("tfrecord", ds, "--archives", ctx.archives, *ours_args,
                                  "--json"),
                  ours=True, setup=lambda: _reset_tfrecord(ds), teardown=after("ours"),
                  warm=inputs, json_out=True),
        Contender("ours-folders", "imagenet-prep tfrecord --from-folders",
                  lambda: ctx.cli("tfrecord", ds, "--from-folders", *ours_args, "--json"),
                  ours=True, setup=lambda: _reset_tfrecord(ds), teardown=after("folders"),
                  warm=folders, json_out=True),
    ]
    if has_dask_local():
        contenders.append(Contender(
            "ours-dask", "imagenet-prep tfrecord on a 2-worker Dask LocalCluster",
            lambda: ctx.cli("tfrecord", ds, "--archives", ctx.archives, "--dask-local", 2,
                            *ctx.shard_args, "--json"),
            ours=True, setup=lambda: _reset_tfrecord(ds), teardown=after("dask"), warm=inputs,
            json_out=True))
    contenders += [
        Contender("cat", "cat of the input to /dev/null (reading only)",
                  lambda: f"cat {a} > /dev/null", warm=inputs),
        Contender("copy", f"copy of the input into {files} files, then sync",
                  lambda: f"mkdir -p {copy_out} && cat {a} | split -b {chunk} -a 5 -d - "
                          f"{copy_out}/part- && sync {copy_out}/part-*",
                  setup=lambda: rm(copy_out), teardown=lambda: rm(copy_out), warm=inputs),
        Contender("decode", f"full-decode converter (Pillow, {ctx.workers} processes)",
                  lambda: ctx.py("full_decode.py", "--train", ds / "train", "--val", ds / "val",
                                 "--out", fd_out, "--workers", ctx.workers,
                                 *ctx.shard_args),
                  setup=lambda: rm(fd_out), teardown=lambda: rm(fd_out), warm=folders),
    ]
    r = ctx.replica
    return Stage(
        "tfrecord", f"tfrecord: {ctx.train_shards} train + {ctx.val_shards} val shards",
        "images", r.train_images + r.val_images, total, contenders,
        baseline="copy",
        targets=[
            at_least("tfrecord >= 0.5x a plain copy into as many files", "ours", "copy", 0.5,
                     ctx.startup),
            at_least("tfrecord >= 10x the full-decode converter", "ours", "decode", 10.0,
                     ctx.startup),
        ],
        checks=[("same shard bytes from archives, folders" +
                 (" and Dask" if has_dask_local() else ""),
                 lambda: len(set(digests.values())) == 1 and len(digests) >= 2)],
        notes=["TensorFlow's own converter does about 700 images/s on a 2-core machine of "
               "this kind (issue 6)"],
    )


def prepare(ctx: Ctx) -> Stage:
    out = ctx.work / "pp"
    r = ctx.replica
    return Stage(
        "prepare", "prepare --only all: every stage in one command", "images", r.images,
        sum(p.stat().st_size for p in ctx.all_archives),
        [Contender("ours", "imagenet-prep prepare --only all",
                   lambda: ctx.cli("prepare", "--archives", ctx.archives, "--out", out,
                                   "--only", "all", "--workers", ctx.workers,
                                   *ctx.shard_args, "--json"),
                   ours=True, setup=lambda: rm(out), teardown=lambda: rm(out),
                   warm=ctx.all_archives, json_out=True)],
    )


def subset(ctx: Ctx) -> Stage:
    """A tenth of the replica's classes against all of them, TFRecords from the archives:
    the subset skips the other class tars unread, so its time should be about a tenth."""
    wnids = list(metadata.wnids()[:ctx.replica.params.classes])
    tenth = wnids[::10]
    listing = ctx.work / "tenth-classes.txt"
    listing.write_text("".join(f"{w}\n" for w in tenth))
    outs = {"all": ctx.work / "sub-all", "tenth": ctx.work / "sub-tenth"}
    inputs = [ctx.archive(TRAIN), ctx.archive(VAL)]

    def run(key: str, *extra: object) -> Contender:
        out = outs[key]
        what = "all classes" if key == "all" else f"--classes: {len(tenth)} of them"
        return Contender(
            key, f"imagenet-prep tfrecord --archives ({what})",
            lambda: ctx.cli("tfrecord", out, "--archives", ctx.archives, "--workers",
                            ctx.workers, *ctx.shard_args, "--json", *extra),
            ours=key == "tenth", setup=lambda: rm(out), teardown=lambda: rm(out), warm=inputs,
            json_out=True)

    def proportional(results: dict[str, Result]) -> tuple[str, bool]:
        """Judged on the writing time (the part that grows with the images); the wall
        ratio and the indexing, which holds fixed costs (the validation labels of every
        image, the devkit), are shown beside it."""
        full, part = results["all"].seconds, results["tenth"].seconds
        reports = [results[k].report for k in ("all", "tenth")]
        if any(r is None for r in reports):
            return "n/a", False
        (w_all, i_all), (w_part, i_part) = ((r["run"]["write_seconds"], r["run"]["index_seconds"])
                                            for r in reports)
        share = len(tenth) / len(wnids)
        ratio = w_part / max(1e-3, w_all)
        return (f"writing {ratio:.2f} of all classes' ({share:.0%} of the classes); wall "
                f"{part / full:.2f}; indexing {i_part:.2f} s vs {i_all:.2f} s"), \
            ratio <= 2 * share
    r = ctx.replica
    return Stage(
        "subset", f"tfrecord of {len(tenth)} of {len(wnids)} classes vs all (--classes FILE)",
        "images", r.train_images + r.val_images, r.input_bytes,
        [run("all"), run("tenth", "--classes", listing)], baseline="all",
        targets=[Target("10% of the classes written in at most 2x 10% of the time",
                        proportional)],
    )


STAGES = {"startup": startup, "verify": verify, "extract": extract, "valtree": valtree,
          "flatten": flatten, "synsets": synsets, "bbox": bbox, "tfrecord": tfrecord,
          "prepare": prepare, "subset": subset}

from bench_hf import STAGES as HF_STAGES  # noqa: E402 (it builds on this module's Ctx)

STAGES.update(HF_STAGES)


def _tfds(ctx: Ctx) -> Stage:
    from tfds_stage import tfds  # its own module (issue 15)

    return tfds(ctx)


STAGES["tfds"] = _tfds
