"""The synthetic ILSVRC2012 replica: layout of the six archives, their quirks, determinism.

Every other test trusts the replica to look like the real archives (docs/archives.md,
docs/labels.md, docs/boxes.md, docs/quirks.md), so each rule is checked here by opening
the archives with tarfile, Pillow and scipy directly.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat

from imagenet_prep.cli import main
from imagenet_prep.replica.build import (
    ARCHIVES,
    BBOX_TRAIN,
    BBOX_VAL,
    DEVKIT,
    GID,
    GNAME,
    MTIME,
    TEST,
    TRAIN,
    UID,
    UNAME,
    VAL,
    make_replica,
)
from imagenet_prep.replica.images import ImageTask, render
from imagenet_prep.sources import metadata

PARAMS = dict(classes=20, train_per_class=50, val_per_class=10, test=20, size=(64, 48))
SEED = 5
WNID_RE = re.compile(r"n\d{8}")
FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
          "wordnet_height", "num_train_images")


def _number(name: str) -> int:
    return int(name.rsplit("_", 1)[1].split(".")[0])


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tf:
        return tf.getmembers()


def _files(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("replica")
    info = make_replica(out, seed=SEED, workers=2, **PARAMS)
    return out, info


@pytest.fixture(scope="module")
def train(built):
    """WNID -> (inner member names in tar order, name -> bytes), plus the outer members."""
    out, _ = built
    classes = {}
    with tarfile.open(out / TRAIN) as outer:
        members = outer.getmembers()
        for m in members:
            with tarfile.open(fileobj=io.BytesIO(outer.extractfile(m).read())) as inner:
                inner_members = inner.getmembers()
                classes[m.name[:-4]] = (
                    inner_members, {im.name: inner.extractfile(im).read() for im in inner_members})
    return members, classes


@pytest.fixture(scope="module")
def meta(built):
    with tarfile.open(built[0] / DEVKIT) as tf:
        data = tf.extractfile("ILSVRC2012_devkit_t12/data/meta.mat").read()
    return loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]


@pytest.fixture(scope="module")
def val_labels(built):
    """Val image name -> first <object><name> of its box XML."""
    out = {}
    for name, data in _files(built[0] / BBOX_VAL).items():
        out[name.split("/")[1][:-4] + ".JPEG"] = ET.fromstring(data).find("object/name").text
    return out


def _tar_metadata_fixed(members: list[tarfile.TarInfo]) -> None:
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (MTIME, UID, GID, UNAME, GNAME)
        assert m.mode == (0o755 if m.isdir() else 0o644)
        assert m.isdir() or m.isfile()


def test_manifests_and_formats(built):
    out, info = built
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*ARCHIVES, "MD5SUMS", "SIZES", "replica.json"])
    md5_lines = (out / "MD5SUMS").read_text().splitlines()
    size_lines = (out / "SIZES").read_text().splitlines()
    assert len(md5_lines) == len(size_lines) == 6
    for line in md5_lines:
        digest, name = re.fullmatch(r"([0-9a-f]{32})  (\S+)", line).groups()
        assert hashlib.md5((out / name).read_bytes()).hexdigest() == digest
        assert info.archives[name].md5 == digest
    for line in size_lines:
        size, name = line.split("  ")
        assert (out / name).stat().st_size == int(size) == info.archives[name].size
    for name in (TRAIN, VAL, TEST):
        raw = (out / name).read_bytes()
        assert raw[257:265] == b"ustar  \0"  # GNU format, uncompressed
    for name in (BBOX_TRAIN, BBOX_VAL, DEVKIT):
        raw = (out / name).read_bytes()
        assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"  # gzip, mtime 0
        assert not raw[3] & 0x08  # no file name in the gzip header
        with gzip.open(out / name) as gz:
            assert gz.read(512)[257:265] == b"ustar  \0"
    summary = json.loads((out / "replica.json").read_text())
    assert summary["params"] == {**PARAMS, "size": list(PARAMS["size"]), "seed": SEED}
    assert summary["counts"]["train"] == info.train_images
    assert set(summary["quirks"]) >= {"cmyk", "ycck", "png", "grayscale"}
    assert len((out / "replica.json").read_bytes()) < 20_000


def test_train_layout(built, train):
    _, info = built
    members, classes = train
    wnids = list(metadata.wnids()[: PARAMS["classes"]])
    names = [m.name for m in members]
    assert sorted(names) == [f"{w}.tar" for w in wnids]  # exactly N, no directories
    assert names != sorted(names)
    _tar_metadata_fixed(members)
    k = PARAMS["train_per_class"]
    counts = {w: len(v[0]) for w, v in classes.items()}
    assert counts == info.train_counts
    assert all(0.7 * k - 1 <= c <= 1.3 * k + 1 for c in counts.values())
    assert len(set(counts.values())) > 1
    with tarfile.open(built[0] / TRAIN) as outer:
        first = outer.extractfile(members[0]).read()
    assert first[257:265] == b"ustar  \0"  # inner tars: uncompressed GNU tar too
    widths = set()
    for wnid, (inner_members, _) in classes.items():
        _tar_metadata_fixed(inner_members)
        inner = [m.name for m in inner_members]
        assert all(re.fullmatch(rf"{wnid}_[1-9]\d*\.JPEG", n) for n in inner), inner
        numbers = [_number(n) for n in inner]
        assert len(set(numbers)) == len(numbers)
        assert sorted(numbers) != list(range(min(numbers), max(numbers) + 1))
        widths |= {len(str(n)) for n in numbers}
        by_text, by_number = sorted(inner), sorted(inner, key=_number)
        assert by_text != by_number  # e.g. _57 and _123
        assert inner != by_text and inner != by_number
    assert len(widths) > 1


def test_val_and_test_layout(built, val_labels):
    out, info = built
    n = PARAMS["classes"] * PARAMS["val_per_class"]
    members = _members(out / VAL)
    _tar_metadata_fixed(members)
    names = [m.name for m in members]
    assert sorted(names) == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, n + 1)]
    assert names != sorted(names)
    labels = [val_labels[f"ILSVRC2012_val_{i:08d}.JPEG"] for i in range(1, n + 1)]
    assert tuple(labels) == info.val_labels
    assert {w: labels.count(w) for w in set(labels)} == {
        w: PARAMS["val_per_class"] for w in metadata.wnids()[: PARAMS["classes"]]}
    assert labels != sorted(labels)  # a random assignment, not grouped
    members = _members(out / TEST)
    _tar_metadata_fixed(members)
    names = [m.name for m in members]
    assert sorted(names) == [f"ILSVRC2012_test_{i:08d}.JPEG" for i in range(1, PARAMS["test"] + 1)]
    assert names != sorted(names)


def _all_images(built, train) -> dict[str, bytes]:
    out, _ = built
    images = {n: d for _, (_, files) in train[1].items() for n, d in files.items()}
    images |= _files(out / VAL) | _files(out / TEST)
    return images


def test_image_quirks(built, train):
    _, info = built
    quirks = info.quirks
    images = _all_images(built, train)
    special = {}
    for kind in ("cmyk", "ycck", "png", "grayscale"):
        assert quirks[kind], kind
        special |= {n: kind for n in quirks[kind]}
    assert any(n.startswith("ILSVRC2012_val_") for n in quirks["cmyk"])
    assert any(not n.startswith("ILSVRC2012_") for n in quirks["cmyk"])
    assert any(n.startswith("ILSVRC2012_val_") for n in quirks["grayscale"])
    assert any(not n.startswith("ILSVRC2012_") for n in quirks["grayscale"])
    assert not any(n.startswith("ILSVRC2012_") for n in quirks["ycck"] + quirks["png"])
    for name, data in images.items():
        im = Image.open(io.BytesIO(data))
        im.load()  # every image decodes
        kind = special.get(name)
        if kind == "png":
            assert name.endswith(".JPEG") and data[:8] == b"\x89PNG\r\n\x1a\n"
            assert im.format == "PNG"
            continue
        assert data[:3] == b"\xff\xd8\xff" and im.format == "JPEG", name
        if kind in ("cmyk", "ycck"):
            assert im.mode == "CMYK"
            assert im.info["adobe_transform"] == (2 if kind == "ycck" else 0)
        elif kind == "grayscale":
            assert im.mode == "L"
        else:
            assert im.mode == "RGB", name


def test_ycck_decodes_to_the_same_colours_as_cmyk():
    """The YCCK file is a real YCCK encoding, not a CMYK file with a flipped flag."""
    cmyk = render(3, ImageTask("n01440764_1.JPEG", 64, 48, "cmyk"))
    ycck = render(3, ImageTask("n01440764_1.JPEG", 64, 48, "ycck"))
    a = np.asarray(Image.open(io.BytesIO(cmyk)), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(ycck)), dtype=np.int16)
    assert a.shape == b.shape == (48, 64, 4)
    assert np.abs(a - b).mean() < 4
    flipped = bytearray(ycck)  # read as plain CMYK instead, it is far off
    at = flipped.index(b"Adobe")
    flipped[at + 11] = 0
    c = np.asarray(Image.open(io.BytesIO(bytes(flipped))), dtype=np.int16)
    assert np.abs(a - c).mean() > 20


def _objects(root: ET.Element) -> list[tuple[str, list[str]]]:
    return [(o.find("name").text, [o.find(f"bndbox/{k}").text
                                   for k in ("xmin", "ymin", "xmax", "ymax")])
            for o in root.findall("object")]


def test_bbox_train(built, train):
    out, info = built
    members = _members(out / BBOX_TRAIN)
    _tar_metadata_fixed(members)
    wnids = set(info.wnids)
    dirs = [m.name for m in members if m.isdir()]
    assert sorted(dirs) == sorted(wnids)
    files = _files(out / BBOX_TRAIN)
    images = {n: d for _, (_, f) in train[1].items() for n, d in f.items()}
    per_class = {w: 0 for w in wnids}
    quirky = {m for k, v in info.quirks.items() if k.startswith("bbox_") for m in v}
    for path, data in files.items():
        wnid, fname = path.split("/")
        stem = fname[:-4]
        assert fname.endswith(".xml") and f"{stem}.JPEG" in images and stem.startswith(wnid)
        per_class[wnid] += 1
        root = ET.fromstring(data)
        assert root.tag == "annotation" and root.findtext("folder") == wnid
        assert root.findtext("source/database") == "ILSVRC_2012"
        assert root.findtext("size/depth") == "3" and root.findtext("segmented") == "0"
        for o in root.findall("object"):
            assert o.findtext("pose") == "Unspecified"
            assert (o.findtext("truncated"), o.findtext("difficult")) == ("0", "0")
        if path in quirky:
            continue
        assert root.findtext("filename") == stem
        w, h = Image.open(io.BytesIO(images[f"{stem}.JPEG"])).size
        assert (int(root.findtext("size/width")), int(root.findtext("size/height"))) == (w, h)
        for name, coords in _objects(root):
            x0, y0, x1, y1 = map(int, coords)
            assert name == wnid and 0 <= x0 < x1 < w and 0 <= y0 < y1 < h
    assert all(c >= 1 for c in per_class.values())
    assert 0.3 <= len(files) / info.train_images <= 0.5
    assert len(files) == info.bbox_train_files


BOX_QUIRKS = ("bbox_beyond_image", "bbox_min_gt_max", "bbox_float", "bbox_multi_object",
              "bbox_other_wnid", "bbox_human_word", "bbox_size_mismatch", "bbox_filename_%s")


def _check_box_quirks(out: Path, info) -> None:
    files = _files(out / BBOX_TRAIN)
    images = {}
    with tarfile.open(out / TRAIN) as outer:
        for m in outer:
            with tarfile.open(fileobj=io.BytesIO(outer.extractfile(m).read())) as inner:
                images |= {im.name: inner.extractfile(im).read() for im in inner}
    q = info.quirks
    assert all(len(q[k]) >= 1 for k in BOX_QUIRKS)

    def root(member: str) -> ET.Element:
        return ET.fromstring(files[member])

    for m in q["bbox_beyond_image"]:
        r = root(m)
        w, h = int(r.findtext("size/width")), int(r.findtext("size/height"))
        assert any(float(c[2]) > w and float(c[3]) > h for _, c in _objects(r))
    for m in q["bbox_min_gt_max"]:
        assert any(float(c[0]) > float(c[2]) and float(c[1]) > float(c[3])
                   for _, c in _objects(root(m)))
    for m in q["bbox_float"]:
        assert any(all(re.fullmatch(r"\d+\.5", c) for c in cs) for _, cs in _objects(root(m)))
    for m in q["bbox_multi_object"]:
        assert len(root(m).findall("object")) >= 3
    for m in q["bbox_other_wnid"]:
        wnid = m.split("/")[0]
        first = _objects(root(m))[0][0]
        assert first != wnid and first in info.wnids
    for m in q["bbox_human_word"]:
        wnid = m.split("/")[0]
        word = metadata.descriptions()[wnid].split(", ")[0].replace(" ", "_")
        assert word in {n for n, _ in _objects(root(m))} and not WNID_RE.fullmatch(word)
    for m in q["bbox_size_mismatch"]:
        r = root(m)
        real = Image.open(io.BytesIO(images[m.split("/")[1][:-4] + ".JPEG"])).size
        assert (int(r.findtext("size/width")), int(r.findtext("size/height"))) != real
    for m in q["bbox_filename_%s"]:
        assert root(m).findtext("filename") == "%s"


def test_bbox_train_quirks(built):
    out, info = built
    _check_box_quirks(out, info)
    # at this scale each quirk has a file of its own, and the human word is the only name
    assert len({m for k in BOX_QUIRKS for m in info.quirks[k]}) == len(BOX_QUIRKS)
    files = _files(out / BBOX_TRAIN)
    for m in info.quirks["bbox_human_word"]:
        names = {o.findtext("name") for o in ET.fromstring(files[m]).findall("object")}
        assert len(names) == 1 and not WNID_RE.fullmatch(names.pop())


def test_box_quirks_sharing_files_keep_each_other(tmp_path):
    info = make_replica(tmp_path, classes=2, train_per_class=2, val_per_class=1, test=1,
                        size=(16, 12), workers=1)
    assert info.bbox_train_files == 2
    _check_box_quirks(tmp_path, info)


def test_bbox_val(built, val_labels):
    out, info = built
    members = _members(out / BBOX_VAL)
    _tar_metadata_fixed(members)
    assert members[0].isdir() and members[0].name == "val"  # tarfile drops the "/"
    assert [m.name for m in members if m.isdir()] == ["val"]
    files = _files(out / BBOX_VAL)
    n = len(info.val_labels)
    assert sorted(files) == [f"val/ILSVRC2012_val_{i:08d}.xml" for i in range(1, n + 1)]
    sizes = {k: Image.open(io.BytesIO(v)).size for k, v in _files(out / VAL).items()}
    for path, data in files.items():
        r = ET.fromstring(data)
        stem = path.split("/")[1][:-4]
        assert r.findtext("folder") == "val" and r.findtext("filename") == stem
        assert (int(r.findtext("size/width")), int(r.findtext("size/height"))) == sizes[
            stem + ".JPEG"]
        assert {name for name, _ in _objects(r)} == {val_labels[stem + ".JPEG"]}


def test_devkit(built, meta, val_labels):
    out, info = built
    members = _members(out / DEVKIT)
    _tar_metadata_fixed(members)
    d = "ILSVRC2012_devkit_t12"
    assert {m.name for m in members if m.isfile()} == {
        f"{d}/readme.txt", f"{d}/data/meta.mat",
        f"{d}/data/ILSVRC2012_validation_ground_truth.txt",
        f"{d}/data/ILSVRC2012_validation_blacklist.txt"}
    assert meta.dtype.names == FIELDS
    ids = [int(s["ILSVRC2012_ID"]) for s in meta]
    n = PARAMS["classes"]
    assert ids == list(range(1, len(meta) + 1))
    leaves = [s for s in meta if int(s["num_children"]) == 0]
    inner = [s for s in meta if int(s["num_children"]) > 0]
    assert [int(s["ILSVRC2012_ID"]) for s in leaves] == list(range(1, n + 1)) and inner
    real_rank = {w: i for i, w in metadata.devkit_id_to_wnid().items()}
    expected = sorted(metadata.wnids()[:n], key=real_rank.__getitem__)
    assert [str(s["WNID"]) for s in leaves] == expected == list(info.devkit_order)
    assert expected != sorted(expected)  # devkit order is not alphabetical
    words = metadata.descriptions()
    assert all(str(s["words"]) == words[str(s["WNID"])] for s in leaves)
    assert all(int(s["num_train_images"]) == info.train_counts[str(s["WNID"])] for s in leaves)
    for s in inner:
        kids = [int(k) for k in (s["children"].ravel() if hasattr(s["children"], "ravel")
                                 else [s["children"]])]
        assert int(s["ILSVRC2012_ID"]) > n and len(kids) == int(s["num_children"])
        assert all(1 <= k <= len(meta) for k in kids)
    assert {k for s in inner for k in
            (s["children"].ravel() if hasattr(s["children"], "ravel") else [s["children"]])
            } >= set(range(1, n + 1))
    # torchvision's reading: entries with num_children == 0, first three fields
    tv = {idx: wnid for idx, wnid, *_ in
          (tuple(s)[:3] for s in meta if int(tuple(s)[4]) == 0)}
    with tarfile.open(out / DEVKIT) as tf:
        gt = tf.extractfile(f"{d}/data/ILSVRC2012_validation_ground_truth.txt").read().split()
        black = tf.extractfile(f"{d}/data/ILSVRC2012_validation_blacklist.txt").read().split()
    names = sorted(val_labels)
    assert len(gt) == len(names)
    assert {name: tv[int(i)] for name, i in zip(names, gt, strict=True)} == val_labels
    black_numbers = [int(x) for x in black]
    assert black_numbers and black_numbers == sorted(set(black_numbers))
    assert all(1 <= x <= len(names) for x in black_numbers)


def test_deterministic_whatever_the_workers(tmp_path, built):
    small = dict(classes=4, train_per_class=10, val_per_class=3, test=5, size=(40, 30))
    a = make_replica(tmp_path / "a", seed=1, workers=1, **small)
    b = make_replica(tmp_path / "b", seed=1, workers=2, **small)
    c = make_replica(tmp_path / "c", seed=2, workers=2, **small)
    for name in (*ARCHIVES, "MD5SUMS", "SIZES", "replica.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert a.archives == b.archives
    for name in ARCHIVES:
        assert a.archives[name].md5 != c.archives[name].md5, name


def test_default_size_images_are_realistic(tmp_path):
    info = make_replica(tmp_path, classes=2, train_per_class=25, val_per_class=2, test=2,
                        workers=2)
    sizes, dims = [], set()
    with tarfile.open(tmp_path / TRAIN) as outer:
        for m in outer:
            with tarfile.open(fileobj=io.BytesIO(outer.extractfile(m).read())) as inner:
                for im in inner:
                    if im.name in info.quirks.get("png", ()):
                        continue
                    data = inner.extractfile(im).read()
                    sizes.append(len(data))
                    dims.add(Image.open(io.BytesIO(data)).size)
    assert 80_000 <= sum(sizes) / len(sizes) <= 140_000
    assert (500, 375) in dims and (375, 500) in dims and len(dims) > 2


def test_tiny_replica(tmp_path):
    info = make_replica(tmp_path, classes=1, train_per_class=1, val_per_class=0, test=0,
                        size=(2, 2), workers=1)
    assert info.train_counts == {metadata.wnids()[0]: 1}
    assert info.val_images == 0 and info.test_images == 0
    assert "bbox_other_wnid" not in info.quirks  # needs a second class
    with tarfile.open(tmp_path / TRAIN) as tf:
        assert tf.getnames() == [f"{metadata.wnids()[0]}.tar"]
    with tarfile.open(tmp_path / DEVKIT) as tf:
        gt = tf.extractfile("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")
        assert gt.read() == b""


def test_cli(tmp_path, capsys):
    out = tmp_path / "fake"
    rc = main(["fake", "--out", str(out), "--classes", "3", "--train-per-class", "6",
               "--val-per-class", "2", "--test", "4", "--size", "32x24", "--seed", "9",
               "--workers", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "3 classes" in text and "images/s" in text
    summary = json.loads((out / "replica.json").read_text())
    assert summary["params"] == {"classes": 3, "train_per_class": 6, "val_per_class": 2,
                                 "test": 4, "size": [32, 24], "seed": 9}
    assert main(["fake", "--out", str(out), "--classes", "0"]) == 1
    assert "--classes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fake", "--out", str(out), "--size", "big"])


def test_meta_mat_integers_fit_real_scale():
    """The root node of a full-size replica counts 1.28 M training images (found at scale)."""
    from imagenet_prep.replica.build import _uint

    assert _uint(255).dtype == np.uint8 and _uint(1000).dtype == np.uint16
    assert int(_uint(1_285_044)) == 1_285_044


def test_meta_mat_header_has_no_clock_time(tmp_path):
    """scipy stamps the current time into a MAT file; two runs a second apart differed."""
    from scipy.io import loadmat

    from imagenet_prep.replica.build import MAT_HEADER

    make_replica(tmp_path, classes=2, train_per_class=2, val_per_class=1, test=0, size=(16, 12))
    with tarfile.open(tmp_path / "ILSVRC2012_devkit_t12.tar.gz") as tf:
        meta = tf.extractfile("ILSVRC2012_devkit_t12/data/meta.mat").read()
    assert meta[:116] == MAT_HEADER.ljust(116, b" ")
    assert len(loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]) >= 2
