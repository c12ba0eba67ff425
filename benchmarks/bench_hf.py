"""The Hugging Face Parquet and MosaicML MDS stages against a plain copy of the same bytes.

Each runs from the archives (train and val) through the CLI, alternating with `cat | split`
of the train and val archives into as many files as the format writes, then `sync`: the
disk's and the page cache's speed for the bytes the format must read and write.  Target:
each format at least 0.7x that copy.  Two runs of ours must give the same bytes.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from harness import Contender, Stage, at_least
from stages import STATE, Ctx, rm, tree_digest

from imagenet_prep.sources.archives import TRAIN, VAL

SHARD_SIZE = {"parquet": 500 * 10**6, "mds": 1 << 26}  # the commands' defaults


def _format_stage(ctx: Ctx, kind: str) -> Stage:
    ds = ctx.work / f"{kind}-ds"
    inputs = [ctx.archive(TRAIN), ctx.archive(VAL)]
    total = sum(p.stat().st_size for p in inputs)
    files = max(1, -(-total // SHARD_SIZE[kind]))
    copy_out = ctx.work / f"{kind}-copy"
    digests: list[str] = []

    def reset() -> None:
        rm(ds)

    def after() -> None:
        digests.append(tree_digest(ds / kind))
        rm(ds)

    a = " ".join(shlex.quote(str(p)) for p in inputs)
    r = ctx.replica
    return Stage(
        kind, f"{kind}: train + val from the archives ({files} files against a copy into "
              f"{files})", "images", r.train_images + r.val_images, total,
        [Contender("ours", f"imagenet-prep {kind} --archives",
                   lambda: ctx.cli(kind, ds, "--archives", ctx.archives, "--splits",
                                   "train,val", "--workers", ctx.workers, "--json"),
                   ours=True, setup=reset, teardown=after, warm=inputs, json_out=True),
         Contender("copy", f"copy of the train and val archives into {files} files, then sync",
                   lambda: f"mkdir -p {copy_out} && cat {a} | split -b "
                           f"{-(-total // files)} -a 5 -d - {copy_out}/part- && "
                           f"sync {copy_out}/part-*",
                   setup=lambda: rm(copy_out), teardown=lambda: rm(copy_out), warm=inputs)],
        baseline="copy",
        targets=[at_least(f"{kind} >= 0.7x a plain copy of the same bytes", "ours", "copy",
                          0.7, ctx.startup)],
        checks=[("every run wrote the same bytes", lambda: len(set(digests)) == 1)],
        notes=[f"state in {Path(STATE)}/{kind}.json; the copy writes the input bytes once"],
    )


def parquet(ctx: Ctx) -> Stage:
    return _format_stage(ctx, "parquet")


def mds(ctx: Ctx) -> Stage:
    return _format_stage(ctx, "mds")


STAGES = {"parquet": parquet, "mds": mds}
