"""The `tfds` stage: a TFDS data directory from the archives, against a plain copy of the
same bytes into as many files, and against TensorFlow Datasets' own `download_and_prepare`
of imagenet2012 from the same archives (its manual_dir)."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

from harness import Contender, Stage, at_least
from stages import Ctx, rm, tree_digest

from imagenet_prep.formats.tfrecord import decode_example, iter_records
from imagenet_prep.sources.archives import TRAIN, VAL


def _tfds_installed() -> bool:
    return importlib.util.find_spec("tensorflow_datasets") is not None


def _shard_files(ds: Path) -> int:
    return sum(1 for p in (ds / "tfds").rglob("imagenet2012-*.tfrecord-*"))


def _layout(data_dir: Path) -> dict[str, list[list[str]]]:
    """Train and validation file names, shard by shard in record order, of a TFDS folder
    (labels and converted images aside, what TFDS's own run and ours must share)."""
    folder = data_dir / "imagenet2012" / "5.1.0"
    out: dict[str, list[list[str]]] = {}
    for split in ("train", "validation"):
        out[split] = [[decode_example(d)["file_name"][0].decode() for _, d in iter_records(p)]
                      for p in sorted(folder.glob(f"imagenet2012-{split}.tfrecord-*"))]
    return out


def tfds(ctx: Ctx) -> Stage:
    ds, copy_out = ctx.work / "tfds-ours", ctx.work / "tfds-copy"
    own, manual = ctx.work / "tfds-own", ctx.work / "tfds-manual"
    inputs = [ctx.archive(TRAIN), ctx.archive(VAL)]
    manual.mkdir(parents=True, exist_ok=True)
    for p in inputs:  # TFDS's builder reads train and val (test too, when present)
        if not (manual / p.name).exists():
            (manual / p.name).symlink_to(p)
    # one untimed run: how many shard files TFDS's rule makes for this replica
    subprocess.run(ctx.cli("tfds", ds, "--archives", ctx.archives, "--workers", ctx.workers),
                   check=True, stdout=subprocess.DEVNULL)
    files = _shard_files(ds)
    digests = {tree_digest(ds / "tfds")}
    layouts = {"ours": _layout(ds / "tfds")}
    rm(ds)
    total = ctx.replica.input_bytes
    chunk = -(-total // files)
    a = " ".join(shlex.quote(str(p)) for p in inputs)

    def after() -> None:
        digests.add(tree_digest(ds / "tfds"))
        rm(ds)

    contenders = [
        Contender("ours", "imagenet-prep tfds --archives (train, validation)",
                  lambda: ctx.cli("tfds", ds, "--archives", ctx.archives, "--workers",
                                  ctx.workers, "--json"),
                  ours=True, setup=lambda: rm(ds), teardown=after, warm=inputs, json_out=True),
        Contender("copy", f"copy of the input into {files} files, then sync",
                  lambda: f"mkdir -p {copy_out} && cat {a} | split -b {chunk} -a 5 -d - "
                          f"{copy_out}/part- && sync {copy_out}/part-*",
                  setup=lambda: rm(copy_out), teardown=lambda: rm(copy_out), warm=inputs),
    ]
    notes = []

    def own_done() -> None:
        layouts.setdefault("tfds-own", _layout(own))
        rm(own)

    if _tfds_installed():
        contenders.append(Contender(
            "tfds-own", "tensorflow-datasets' own download_and_prepare (manual_dir)",
            lambda: [sys.executable, str(Path(__file__).with_name("tfds_own.py")), manual, own],
            setup=lambda: rm(own), teardown=own_done, warm=inputs, max_runs=1))
    else:
        notes.append("tensorflow-datasets is not installed: its own preparation was not timed")
    r = ctx.replica
    return Stage(
        "tfds", f"tfds: TFDS data directory, {files} shards", "images",
        r.train_images + r.val_images, total, contenders, baseline="copy",
        targets=[at_least("tfds >= 0.7x a plain copy into as many files", "ours", "copy", 0.7,
                          ctx.startup)]
        + ([at_least("tfds faster than TFDS's own preparation", "ours", "tfds-own", 1.0)]
           if _tfds_installed() else []),
        checks=[("same bytes in every run", lambda: len(digests) == 1)]
        + ([("TFDS's own run: the same shards, each with the same file names in the same order",
             lambda: layouts.get("tfds-own") == layouts["ours"])] if _tfds_installed() else []),
        notes=notes + ["TFDS's own run is timed once (max_runs=1): it takes far longer"],
    )
