"""The truth about a replica for the Hugging Face and MosaicML tests, read without the code
under test (tarfile, the devkit, replica.json), and the offline settings for `datasets`."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from expected import seed_extraction
from helpers import SORTED_WNIDS, replica_truth
from PIL import Image

SPLITS = ("train", "val", "test")
HUB_SPLIT = {"train": "train", "val": "validation", "test": "test"}


@dataclass(frozen=True)
class Truth:
    label: int  # 0..999, -1 in test
    size: tuple[int, int]  # decoded (width, height)
    data: bytes  # the archive member's bytes
    kind: str  # rgb, gray, cmyk, ycck, png


def split_truth(arch: Path) -> dict[str, dict[str, Truth]]:
    """split -> file name -> its truth, for train, val and test."""
    out: dict[str, dict[str, Truth]] = {s: {} for s in SPLITS}
    for name, (wnid, data, kind) in replica_truth(arch).items():
        split = "val" if name.startswith("ILSVRC2012_val_") else "train"
        out[split][name] = Truth(SORTED_WNIDS.index(wnid), Image.open(io.BytesIO(data)).size,
                                 data, kind)
    for rel, data in seed_extraction(arch).items():
        if rel.startswith("test/"):
            out["test"][rel[5:]] = Truth(-1, Image.open(io.BytesIO(data)).size, data, "rgb")
    return out


def offline_hf() -> None:
    """No network and a private cache for `datasets` and `huggingface_hub` (call before they
    are imported); the cache is removed when the test process ends."""
    if "IMAGENET_PREP_TEST_HF_HOME" in os.environ:  # a second test module: already set
        return
    home = Path(tempfile.mkdtemp(prefix="hf-home-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ["IMAGENET_PREP_TEST_HF_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HOME"] = str(home)
    os.environ["HF_DATASETS_CACHE"] = str(home / "datasets")
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size
