"""TFRecord shards: TensorFlow reads every record; bytes independent of workers and route;
conversions by content; resume; refusal of other options; check.

The inputs are small archives (helpers.build_inputs): a train tar of per-class tars with real
WNIDs (including a CMYK, a YCCK, a PNG named .JPEG, a grayscale JPEG, an RGBA PNG
and a gzip-wrapped JPEG), a val tar with its label XMLs, and a box tar.gz.  The
expected labels, texts and boxes are computed here from the bundled data files
and the rules of docs/tfrecord.md and docs/boxes.md, not by the code under test.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    CLASSES,
    DATA,
    SORTED_WNIDS,
    boxes_of,
    build_inputs,
    folders_from,
    replica_box_lines,
    replica_truth,
    sample_image,
)
from PIL import Image
from tarutil import tar_bytes, write_tar

from imagenet_prep.check.tfrecord import check_tfrecords
from imagenet_prep.cli import main
from imagenet_prep.errors import BadImageError, PrepError
from imagenet_prep.folders.bbox_csv import ensure_csv
from imagenet_prep.formats.images import jpeg_for_record
from imagenet_prep.formats.tfrecord import (
    bytes_feature,
    decode_example,
    encode_example,
    float_feature,
    int64_feature,
    iter_records,
)
from imagenet_prep.runtime import stage_state
from imagenet_prep.shards import tfrecord as tfrecord_shards
from imagenet_prep.sources import metadata

TEXTS = dict(line.split("\t", 1) for line in
             DATA.joinpath("imagenet_metadata.txt").read_text().splitlines())
EXPECTED_REASON = {"cmyk": "cmyk", "ycck": "ycck", "png": "png", "rgba-png": "png",
                   "gzip": "gzip"}



def write_tfrecords(dataset: Path, *, archives: Path | None = None, workers: int | None = None,
                    splits: tuple[str, ...] = ("train", "val"), **kw) -> dict:
    """The library call as the CLI makes it: the box CSV first (made when missing)."""
    dataset.mkdir(parents=True, exist_ok=True)
    boxes = ensure_csv(dataset, archives, workers) if "train" in splits else None
    return tfrecord_shards.write_tfrecords(dataset, archives=archives, workers=workers,
                                           splits=splits, boxes_csv=boxes, **kw)


# --- inputs ----------------------------------------------------------------------------

def expected_boxes() -> dict[str, list[tuple[float, float, float, float]]]:
    """The CSV rules (docs/boxes.md) applied by hand to box_xmls(), in sorted-line order."""
    a, b, c = CLASSES
    lines = sorted([
        f"{a}_1.JPEG,{10 / 500:.4f},{20 / 375:.4f},{300 / 500:.4f},{200 / 375:.4f}",
        f"{a}_1.JPEG,{100 / 500:.4f},{30 / 375:.4f},{400 / 500:.4f},{300 / 375:.4f}",
        f"{a}_3.JPEG,0.0000,0.0000,1.0000,{47 / 48:.4f}",
        f"{b}_2.JPEG,{1 / 333:.4f},{2 / 500:.4f},{3 / 333:.4f},{4 / 500:.4f}",
        f"{b}_2.JPEG,{12 / 333:.4f},{30 / 500:.4f},{200 / 333:.4f},{499 / 500:.4f}",
        f"{c}_6.JPEG,0.0500,0.0500,0.9500,0.9500",
        f"{c}_99.JPEG,0.0500,0.0500,0.9500,0.9500",
    ])
    out: dict[str, list] = {}
    for line in lines:
        name, *vals = line.split(",")
        out.setdefault(name, []).append(tuple(float(v) for v in vals))
    return out


def shard_bytes(ds: Path) -> dict[str, bytes]:
    out = {}
    for folder in ("tfrecord_train", "tfrecord_val", "tfrecord_train_idx", "tfrecord_val_idx"):
        if (ds / folder).is_dir():
            for p in sorted((ds / folder).iterdir()):
                out[f"{folder}/{p.name}"] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("archives")
    return root, build_inputs(root)


@pytest.fixture(scope="module")
def written(inputs, tmp_path_factory) -> tuple[Path, dict]:
    """One run from the archives with 2 workers and DALI indexes."""
    archives, _ = inputs
    ds = tmp_path_factory.mktemp("ds")
    report = write_tfrecords(ds, archives=archives, train_shards=5, val_shards=3, seed=3,
                             workers=2, dali_index=True)
    return ds, report


# --- tests -----------------------------------------------------------------------------

def read_with_tensorflow(ds: Path, shards: dict[str, int]) -> dict[str, list[dict]]:
    """split -> every record, parsed by TensorFlow with the reference's feature spec."""
    tf = pytest.importorskip("tensorflow")
    spec = {
        **{k: tf.io.FixedLenFeature([], tf.string) for k in (
            "image/encoded", "image/format", "image/colorspace", "image/filename",
            "image/class/synset", "image/class/text")},
        **{k: tf.io.FixedLenFeature([], tf.int64) for k in (
            "image/channels", "image/class/label", "image/height", "image/width")},
        **{f"image/object/bbox/{k}": tf.io.VarLenFeature(tf.float32)
           for k in ("xmin", "ymin", "xmax", "ymax")},
        "image/object/bbox/label": tf.io.VarLenFeature(tf.int64),
    }
    out: dict[str, list[dict]] = {}
    for split, prefix in (("train", "train"), ("val", "validation")):
        n = shards[split]
        paths = sorted(str(p) for p in (ds / f"tfrecord_{split}").iterdir())
        assert [Path(p).name for p in paths] == [f"{prefix}-{k:05d}-of-{n:05d}"
                                                 for k in range(n)]
        out[split] = []
        for raw in tf.data.TFRecordDataset(paths):
            ex = tf.io.parse_single_example(raw, spec)
            rec = {k: v.numpy() for k, v in ex.items() if not isinstance(v, tf.SparseTensor)}
            rec.update({k: tf.sparse.to_dense(v).numpy().tolist() for k, v in ex.items()
                        if isinstance(v, tf.SparseTensor)})
            rec["decoded_shape"] = tuple(tf.io.decode_jpeg(ex["image/encoded"], channels=3).shape)
            out[split].append(rec)
    return out


def assert_records(parsed: dict[str, list[dict]], truth: dict[str, tuple[str, bytes, str]],
                   boxes: dict[str, list[tuple[float, ...]]]) -> None:
    """Every record against the truth: name -> (WNID, original bytes, kind)."""
    seen = set()
    for split, recs in parsed.items():
        for rec in recs:
            name = rec["image/filename"].decode()
            wnid, original, kind = truth[name]
            seen.add(name)
            label = SORTED_WNIDS.index(wnid) + 1
            assert rec["image/class/label"] == label
            assert rec["image/class/synset"].decode() == wnid
            assert rec["image/class/text"].decode() == TEXTS[wnid]
            assert (rec["image/format"], rec["image/colorspace"], rec["image/channels"]) == \
                (b"JPEG", b"RGB", 3)
            h, w = rec["image/height"], rec["image/width"]
            assert rec["decoded_shape"] == (h, w, 3)
            ref = Image.open(io.BytesIO(gzip.decompress(original) if kind == "gzip"
                                        else original))
            assert (w, h) == ref.size
            encoded = rec["image/encoded"]
            if kind in ("rgb", "gray"):
                assert encoded == original  # kept byte for byte
            else:
                assert encoded != original and Image.open(io.BytesIO(encoded)).mode == "RGB"
            want = boxes.get(name, []) if split == "train" else []
            got = list(zip(*(rec[f"image/object/bbox/{k}"]
                             for k in ("xmin", "ymin", "xmax", "ymax")), strict=True))
            assert got == [tuple(float(np.float32(v)) for v in b) for b in want]
            assert rec["image/object/bbox/label"] == [label] * len(want)
    assert seen == set(truth)


def test_tensorflow_reads_every_record(inputs, written):
    _, truth = inputs
    ds, _ = written
    assert_records(read_with_tensorflow(ds, {"train": 5, "val": 3}), truth, expected_boxes())


def test_conversions_are_reported_by_content(inputs, written):
    _, truth = inputs
    _, report = written
    got = {(c["name"], c["reason"]) for c in report["converted"]}
    want = {(n, EXPECTED_REASON[k]) for n, (_, _, k) in truth.items() if k in EXPECTED_REASON}
    want.add(("ILSVRC2012_val_00000005.JPEG", "cmyk"))
    assert got == want
    assert report["skipped"] == []
    assert report["splits"]["train"]["records"] == 21
    assert report["splits"]["val"]["records"] == 8
    saved = stage_state.load(written[0], "tfrecord-report")
    assert saved["converted"] == report["converted"]


def test_shard_sizes_and_order(inputs, written):
    ds, _ = written
    for folder, n in (("tfrecord_train", 21), ("tfrecord_val", 8)):
        counts = [sum(1 for _ in iter_records(p)) for p in sorted((ds / folder).iterdir())]
        assert sum(counts) == n and max(counts) - min(counts) <= 1
    train = [decode_example(d)["image/filename"][0] for p in sorted(
        (ds / "tfrecord_train").iterdir()) for _, d in iter_records(p)]
    assert train != sorted(train)  # shuffled


def test_dali_index_lines(written):
    ds, _ = written
    for split in ("train", "val"):
        idx_files = sorted((ds / f"tfrecord_{split}_idx").iterdir())
        shards = sorted((ds / f"tfrecord_{split}").iterdir())
        assert [p.name for p in idx_files] == [p.name + ".idx" for p in shards]
        for shard, idx in zip(shards, idx_files, strict=True):
            data, pos, lines = shard.read_bytes(), 0, []
            while pos < len(data):  # walk the framing as DALI's tfrecord2idx does
                length = int.from_bytes(data[pos:pos + 8], "little")
                lines.append(f"{pos} {length + 16}\n")
                pos += length + 16
            assert idx.read_text() == "".join(lines)


def test_identical_bytes_for_workers_and_routes(inputs, written, tmp_path):
    archives, truth = inputs
    ds, _ = written
    reference = shard_bytes(ds)
    one = tmp_path / "one"
    write_tfrecords(one, archives=archives, train_shards=5, val_shards=3, seed=3, workers=1,
                    dali_index=True)
    assert shard_bytes(one) == reference
    folders = folders_from(truth, tmp_path / "folders", archives)
    rep = write_tfrecords(folders, from_folders=True, train_shards=5, val_shards=3, seed=3,
                          workers=2, dali_index=True)
    assert shard_bytes(folders) == reference
    assert rep["source"] == "folders"
    assert (folders / "imagenet_2012_bounding_boxes.csv").read_bytes() == \
        (ds / "imagenet_2012_bounding_boxes.csv").read_bytes()


def test_seed_changes_order_only(inputs, written, tmp_path):
    archives, _ = inputs
    ds, _ = written
    other = tmp_path / "other"
    write_tfrecords(other, archives=archives, train_shards=5, val_shards=3, seed=4, workers=2)

    def records_of(root: Path) -> list[bytes]:
        return [d for p in sorted((root / "tfrecord_train").iterdir()) for _, d in
                iter_records(p)]
    assert records_of(other) != records_of(ds)
    assert sorted(records_of(other)) == sorted(records_of(ds))


def test_rerun_writes_only_missing_shards(inputs, written, tmp_path):
    archives, _ = inputs
    ds = tmp_path / "ds"
    shutil.copytree(written[0], ds)
    reference = shard_bytes(written[0])
    train = ds / "tfrecord_train"
    (train / "train-00001-of-00005").unlink()
    (ds / "tfrecord_val_idx" / "validation-00002-of-00003.idx").unlink()
    (train / ".train-00003-of-00005.ipart").write_bytes(b"half a shard")  # a killed run's
    state = stage_state.load(ds, "tfrecord")
    del state["shards"]["train-00004-of-00005"]  # renamed after the last state save
    stage_state.save(ds, "tfrecord", state)
    before = {p.name: p.stat().st_mtime_ns for p in train.iterdir()}
    time.sleep(0.01)
    report = write_tfrecords(ds, archives=archives, train_shards=5, val_shards=3, seed=3,
                             workers=2, dali_index=True)
    assert report["run"]["shards_written"] == 2
    after = {p.name: p.stat().st_mtime_ns for p in train.iterdir()}
    changed = {n for n in after if before.get(n) != after[n]}
    assert changed == {"train-00001-of-00005", "train-00004-of-00005"}
    assert shard_bytes(ds) == reference
    assert report["converted"] == written[1]["converted"]
    assert check_tfrecords(ds, {"train": 21, "val": 8}) == []


def test_other_options_are_refused(inputs, written, tmp_path):
    archives, _ = inputs
    ds = tmp_path / "ds"
    shutil.copytree(written[0], ds)
    with pytest.raises(PrepError, match=r"other options \(.*--seed 3.*\).*to start over"):
        write_tfrecords(ds, archives=archives, train_shards=5, val_shards=3, seed=9, workers=1)
    with pytest.raises(PrepError, match="other options"):
        write_tfrecords(ds, archives=archives, train_shards=6, val_shards=3, seed=3, workers=1)
    (ds / ".imagenet-prep" / "tfrecord.json").unlink()
    with pytest.raises(PrepError, match="no tfrecord run recorded"):
        write_tfrecords(ds, archives=archives, train_shards=5, val_shards=3, seed=3, workers=1)


def test_bad_image_fails_or_is_skipped(tmp_path):
    archives = tmp_path / "archives"
    truth = build_inputs(archives, per_class=3, val_images=3, bad=f"{CLASSES[1]}_bad.JPEG")
    with pytest.raises(BadImageError, match=re.escape(
            f"ILSVRC2012_img_train.tar:{CLASSES[1]}.tar:{CLASSES[1]}_bad.JPEG: not a readable")):
        write_tfrecords(tmp_path / "a", archives=archives, train_shards=2, val_shards=1,
                        workers=1)
    assert not list((tmp_path / "a" / "tfrecord_train").glob(".*"))
    ds = tmp_path / "b"
    report = write_tfrecords(ds, archives=archives, train_shards=2, val_shards=1, workers=2,
                             on_bad_image="skip")
    assert [s["name"] for s in report["skipped"]] == [f"{CLASSES[1]}_bad.JPEG"]
    assert report["splits"]["train"]["records"] == len(truth) - 3
    assert check_tfrecords(ds, None) == []
    again = write_tfrecords(ds, archives=archives, train_shards=2, val_shards=1, workers=1,
                            on_bad_image="skip")
    assert again["run"]["shards_written"] == 0 and len(again["skipped"]) == 1
    with pytest.raises(BadImageError, match="_bad.JPEG"):  # fail redoes the shard that skipped
        write_tfrecords(ds, archives=archives, train_shards=2, val_shards=1, workers=1)


def test_check_finds_damage(written, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(written[0], ds)
    assert check_tfrecords(ds, {"train": 21, "val": 8}) == []
    assert any("expected 22" in p for p in check_tfrecords(ds, {"train": 22, "val": 8}))
    shard = ds / "tfrecord_train" / "train-00002-of-00005"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40
    shard.write_bytes(bytes(data))
    (ds / "tfrecord_val" / "validation-00001-of-00003").unlink()
    (ds / "tfrecord_val" / ".validation-00001-of-00003.ipart").write_bytes(b"")
    problems = "\n".join(check_tfrecords(ds, None))
    assert "train-00002-of-00005: data CRC mismatch" in problems
    assert "1 of 3 shards missing, first validation-00001-of-00003" in problems
    assert "leftover temporary file" in problems
    from imagenet_prep.check import check_dataset

    listed = [p for p in check_dataset(ds)[0] if "leftover temporary file" in p]
    assert listed == [f"{ds / 'tfrecord_val' / '.validation-00001-of-00003.ipart'}: "
                      "leftover temporary file"]  # once, though two checks see it
    for _ in range(3):  # results come back as shards finish: each is told for its own shard
        damaged = check_dataset(ds, workers=2)[1]["damaged"]
        assert [d for d in damaged if "tfrecord_train" in d] == [
            "tfrecord_train/train-00002-of-00005"]


def test_cli_summary_and_json(inputs, tmp_path, capsys):
    archives, _ = inputs
    ds = tmp_path / "ds"
    argv = ["tfrecord", str(ds), "--archives", str(archives), "--train-shards", "4",
            "--val-shards", "2", "--workers", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"wrote 6 shards: 29 images, .* images/s, .* MB/s", out)
    assert "converted to RGB JPEG: 6 (cmyk 2, gzip 1, png 2, ycck 1)" in out
    assert main([*argv, "--json"]) == 0
    assert '"shards_written": 0' in capsys.readouterr().out
    assert main([*argv[:-2], "--seed", "1"]) == 1
    assert "other options" in capsys.readouterr().err


def _kill_when(ds: Path, args: list[str], shards_done: int) -> int:
    """Start the CLI, SIGKILL it once `shards_done` train shards exist; returns how many did."""
    proc = subprocess.Popen([sys.executable, "-m", "imagenet_prep", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = ds / "tfrecord_train"
    deadline = time.monotonic() + 60
    done = 0
    while proc.poll() is None and time.monotonic() < deadline:
        done = sum(1 for n in os.listdir(folder) if n.startswith("train")) \
            if folder.is_dir() else 0
        if done >= shards_done:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    return done


@pytest.mark.parametrize("shards_done, workers", [(1, 1), (7, 2), (3, 2)])
def test_killed_run_then_rerun_is_identical(tmp_path, shards_done, workers):
    archives = tmp_path / "archives"
    build_inputs(archives, per_class=60, val_images=12)
    clean = tmp_path / "clean"
    args = ["--archives", str(archives), "--train-shards", "30", "--val-shards", "4"]
    assert main(["tfrecord", str(clean), *args, "--workers", "1"]) == 0
    ds = tmp_path / "ds"
    killed = _kill_when(ds, ["tfrecord", str(ds), *args, "--workers", str(workers)],
                        shards_done)
    assert shards_done <= killed < 30
    assert main(["tfrecord", str(ds), *args, "--workers", str(workers)]) == 0
    assert shard_bytes(ds) == shard_bytes(clean)
    assert check_tfrecords(ds, None) == []


def test_record_layout_is_the_sorted_example():
    """The record path lays the Example's entries out by hand; the generic encoder sorts a
    dict of the same features: the bytes must be the same."""
    image = sample_image("rgb", 1)
    rng = np.random.default_rng(0)
    for label, n in ((1, 0), (1000, 1), (500, 3)):
        boxes = rng.random((n, 4)).astype(np.float32)
        wnid = SORTED_WNIDS[label - 1]
        features = {
            "image/encoded": bytes_feature([image]), "image/format": bytes_feature([b"JPEG"]),
            "image/colorspace": bytes_feature([b"RGB"]), "image/channels": int64_feature([3]),
            "image/height": int64_feature([21]), "image/width": int64_feature([37]),
            "image/filename": bytes_feature([b"x_1.JPEG"]),
            "image/class/label": int64_feature([label]),
            "image/class/synset": bytes_feature([wnid.encode()]),
            "image/class/text": bytes_feature([TEXTS[wnid].encode()]),
            "image/object/bbox/label": int64_feature([label] * n),
            **{f"image/object/bbox/{k}": float_feature(boxes[:, j].tolist())
               for j, k in enumerate(("xmin", "ymin", "xmax", "ymax"))},
        }
        parts = tfrecord_shards.example_parts(image, 37, 21, "x_1.JPEG", label, boxes)
        assert parts[1] is image and b"".join(parts) == encode_example(features)


# --- images: decided by content ---------------------------------------------------------

def test_image_decisions_by_content():
    rgb = sample_image("rgb", 1)
    assert jpeg_for_record(rgb, "x")[3] is None and jpeg_for_record(rgb, "x")[0] is rgb
    gray = sample_image("gray", 2)
    assert jpeg_for_record(gray, "x")[0] is gray
    im = Image.open(io.BytesIO(rgb))
    mpo = io.BytesIO()
    im.save(mpo, "MPO", save_all=True, append_images=[im.rotate(90)])
    assert Image.open(io.BytesIO(mpo.getvalue())).format == "MPO"
    assert jpeg_for_record(mpo.getvalue(), "x")[3] is None  # a JPEG with an MPF marker: kept
    deep = io.BytesIO()
    Image.fromarray((np.arange(1200).reshape(30, 40) * 50).astype(np.uint16)).save(deep, "PNG")
    out, w, h, reason = jpeg_for_record(deep.getvalue(), "x")
    conv = Image.open(io.BytesIO(out))
    assert (reason, conv.format, conv.mode, (w, h)) == ("png", "JPEG", "RGB", (40, 30))
    assert conv.getpixel((39, 29))[0] == (1199 * 50) >> 8  # 16 bits scaled, not clipped
    for kind, reason in (("cmyk", "cmyk"), ("ycck", "ycck"), ("png", "png"),
                         ("rgba-png", "png"), ("gzip", "gzip")):
        out, w, h, got = jpeg_for_record(sample_image(kind, 3), "x")
        assert got == reason
        assert Image.open(io.BytesIO(out)).mode == "RGB"
    for data in (b"", b"GIF89a garbage", b"\xff\xd8\xff\xe0 cut", b"\x1f\x8b\x08 cut gzip"):
        with pytest.raises(BadImageError, match=r"^where\.JPEG: "):
            jpeg_for_record(data, "where.JPEG")


def test_content_detection_finds_the_known_special_files(tmp_path):
    """The bundled list of TensorFlow's 23 special files, as a cross-check only: files with
    those names and that content are exactly what the conversion report lists."""
    special = metadata.special_images()
    assert sorted(collections.Counter(special.values()).items()) == [("cmyk", 22), ("png", 1)]
    inner: dict[str, dict[str, bytes]] = {}
    for k, (name, kind) in enumerate(sorted(special.items())):
        wnid = name.split("_")[0]
        inner.setdefault(f"{wnid}.tar", {})[name] = sample_image(kind, k)
        inner[f"{wnid}.tar"][f"{wnid}_99999.JPEG"] = sample_image("rgb", 100 + k)
    write_tar(tmp_path / "ILSVRC2012_img_train.tar", {n: tar_bytes(m) for n, m in inner.items()})
    report = write_tfrecords(tmp_path / "ds", archives=tmp_path, train_shards=3, workers=2,
                             splits=("train",))
    assert {c["name"]: c["reason"] for c in report["converted"]} == special
    assert report["splits"]["train"]["records"] == 46


# --- on the replica --------------------------------------------------------------------

@pytest.fixture(scope="module")
def replica_shards(replicas, tmp_path_factory) -> tuple[Path, Path, dict]:
    arch = replicas["small"]
    ds = tmp_path_factory.mktemp("replica-ds")
    report = write_tfrecords(ds, archives=arch, train_shards=4, val_shards=2, workers=2,
                             dali_index=True)
    return arch, ds, report


def test_replica_box_csv_has_every_quirk(replica_shards):
    arch, ds, _ = replica_shards
    quirks = json.loads((arch / "replica.json").read_text())["quirks"]
    assert {k for k in quirks if k.startswith("bbox_")} >= {
        "bbox_beyond_image", "bbox_min_gt_max", "bbox_float", "bbox_other_wnid",
        "bbox_human_word", "bbox_filename_%s", "bbox_multi_object"}
    assert (ds / "imagenet_2012_bounding_boxes.csv").read_text() == \
        "".join(replica_box_lines(arch))


def test_replica_tensorflow_reads_every_record(replica_shards):
    arch, ds, report = replica_shards
    truth = replica_truth(arch)
    parsed = read_with_tensorflow(ds, {"train": 4, "val": 2})
    assert_records(parsed, truth, boxes_of(replica_box_lines(arch)))
    assert {(c["name"], c["reason"]) for c in report["converted"]} == {
        (n, k) for n, (_, _, k) in truth.items() if k in ("cmyk", "ycck", "png")}
    gray = [n for n, (_, _, k) in truth.items() if k == "gray"]
    assert gray and all(Image.open(io.BytesIO(truth[n][1])).mode == "L" for n in gray)
    assert check_tfrecords(ds, {"train": sum(1 for n in truth if not n.startswith("ILSVRC")),
                                "val": sum(1 for n in truth if n.startswith("ILSVRC"))}) == []


def test_replica_identical_for_workers_and_routes(replica_shards, tmp_path):
    arch, ds, _ = replica_shards
    reference = shard_bytes(ds)
    one = tmp_path / "one"
    write_tfrecords(one, archives=arch, train_shards=4, val_shards=2, workers=1, dali_index=True)
    assert shard_bytes(one) == reference
    folders = folders_from(replica_truth(arch), tmp_path / "folders", arch)
    write_tfrecords(folders, from_folders=True, train_shards=4, val_shards=2, workers=2,
                    dali_index=True)
    assert shard_bytes(folders) == reference
