"""Baseline: a TFRecord converter that fully decodes every image to learn its size.

    python full_decode.py --train DIR --val DIR --out DIR --train-shards N --val-shards M
                          [--workers W]

The cost model of TensorFlow's build_imagenet_data.py: read each file of the
class trees, decode it completely (here Pillow, `convert("RGB")`; TensorFlow uses
`decode_jpeg`, the same libjpeg-turbo work), take the size from the pixels, then
write the original bytes in a framed Example.  Records are encoded with
imagenet_prep's own encoder, so the difference to `tfrecord` is the decode alone.
One task per shard on a process pool of `--workers`; shards are fsynced.
"""

from __future__ import annotations

import argparse
import io
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from imagenet_prep.formats.tfrecord import (
    bytes_feature,
    bytes_feature_parts,
    encode_example_parts,
    frame_parts,
    int64_feature,
)


def _files(root: Path) -> list[tuple[str, int]]:
    wnids = sorted(d.name for d in os.scandir(root) if d.is_dir())
    out = []
    for label, wnid in enumerate(wnids, 1):
        out += [(os.path.join(root, wnid, f), label) for f in sorted(os.listdir(root / wnid))]
    return out


def write_shard(task: tuple[str, list[tuple[str, int]]]) -> int:
    path, files = task
    with open(path, "wb") as out:
        for name, label in files:
            with open(name, "rb") as f:
                data = f.read()
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.convert("RGB").size  # the full decode
            parts = frame_parts(encode_example_parts({
                "image/encoded": bytes_feature_parts(data),
                "image/height": int64_feature([height]),
                "image/width": int64_feature([width]),
                "image/class/label": int64_feature([label]),
                "image/filename": bytes_feature([os.path.basename(name).encode()]),
            }))
            out.write(b"".join(parts))
        out.flush()
        os.fsync(out.fileno())
    return len(files)


def main() -> None:
    ap = argparse.ArgumentParser()
    for k in ("--train", "--val", "--out"):
        ap.add_argument(k, type=Path, required=True)
    ap.add_argument("--train-shards", type=int, required=True)
    ap.add_argument("--val-shards", type=int, required=True)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    tasks = []
    for split, root, shards in (("validation", a.val, a.val_shards),
                                ("train", a.train, a.train_shards)):
        files = _files(root)
        random.Random(12345).shuffle(files)
        for k in range(shards):
            part = files[k * len(files) // shards:(k + 1) * len(files) // shards]
            tasks.append((str(a.out / f"{split}-{k:05d}-of-{shards:05d}"), part))
    with ProcessPoolExecutor(a.workers) as pool:
        total = sum(pool.map(write_shard, tasks))
    print(f"{total} images")


if __name__ == "__main__":
    main()
