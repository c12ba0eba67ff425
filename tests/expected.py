"""What the seed's `tar` commands and label sources would produce, computed with tarfile and
scipy directly, independently of the code under test."""

from __future__ import annotations

import io
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

from scipy.io import loadmat


def seed_extraction(archives: Path) -> dict[str, bytes]:
    """Relative path in DATASET -> bytes, as `tar xf` of every archive (and inner tar) gives."""
    out: dict[str, bytes] = {}
    with tarfile.open(archives / "ILSVRC2012_img_train.tar") as outer:
        for m in outer:
            inner_bytes = outer.extractfile(m).read()
            with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
                for im in inner:
                    out[f"train/{m.name[:-4]}/{im.name}"] = inner.extractfile(im).read()
    for split, name in (("val", "ILSVRC2012_img_val.tar"), ("test", "ILSVRC2012_img_test.tar"),
                        ("bbox_train", "ILSVRC2012_bbox_train_v2.tar.gz"),
                        ("bbox_val", "ILSVRC2012_bbox_val_v3.tgz")):
        with tarfile.open(archives / name) as tf:
            for m in tf:
                if m.isfile():
                    out[f"{split}/{m.name}"] = tf.extractfile(m).read()
    return out


def devkit_truth(archives: Path) -> dict[str, str]:
    """Validation file name -> WNID through the devkit's meta.mat and ground truth."""
    with tarfile.open(archives / "ILSVRC2012_devkit_t12.tar.gz") as tf:
        meta = tf.extractfile("ILSVRC2012_devkit_t12/data/meta.mat").read()
        gt = tf.extractfile(
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt").read()
    synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets
                  if int(s["num_children"]) == 0}
    with tarfile.open(archives / "ILSVRC2012_img_val.tar") as tf:
        names = sorted(tf.getnames())
    ids = [int(x) for x in gt.split()]
    assert len(ids) == len(names)
    return {n: id_to_wnid[i] for n, i in zip(names, ids, strict=True)}


def bbox_val_truth(archives: Path) -> dict[str, str]:
    """Validation file name -> first <object><name> of its box XML."""
    out = {}
    with tarfile.open(archives / "ILSVRC2012_bbox_val_v3.tgz") as tf:
        for m in tf:
            if m.isfile():
                root = ET.fromstring(tf.extractfile(m).read())
                out[m.name.split("/")[-1][:-4] + ".JPEG"] = root.find("object/name").text
    return out


def devkit_words(archives: Path) -> dict[str, str]:
    with tarfile.open(archives / "ILSVRC2012_devkit_t12.tar.gz") as tf:
        meta = tf.extractfile("ILSVRC2012_devkit_t12/data/meta.mat").read()
    synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    return {str(s["WNID"]): str(s["words"]) for s in synsets if int(s["num_children"]) == 0}
