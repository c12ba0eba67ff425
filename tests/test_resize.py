"""Resized variants (issue 16): geometry, colour modes, every output, determinism, refusals.

One `prepare --only all --wds --resize short=40` of the small replica (images about
64x48, with its CMYK, YCCK, PNG and grayscale files) is shared by most tests; the
rest are pure functions on tiny images, or one command each.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    SORTED_WNIDS,
    boxes_of,
    one_line,
    replica_box_lines,
    replica_truth,
    reseal,
    run_cli,
    sample_image,
    tree_digest,
)
from PIL import Image

from imagenet_prep.errors import OptionError
from imagenet_prep.formats import resize
from imagenet_prep.formats.tfrecord import iter_records
from imagenet_prep.layout import STATE_DIR

# torchvision before TensorFlow: imported the other way round in one process, torch crashes
ImageFolder = pytest.importorskip("torchvision.datasets").ImageFolder

SHORT = ("--resize", "short=40")
SHARDS = ("--train-shards", "3", "--val-shards", "2", "--wds", "--wds-shard-samples", "20")
TAG = "short40"


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _expected(spec: resize.ResizeSpec, data: bytes) -> tuple[int, int]:
    im = Image.open(io.BytesIO(data))
    return resize.target_size(spec, *im.size) or im.size


@pytest.fixture(scope="module")
def variant(replicas, tmp_path_factory) -> tuple[Path, Path]:
    """(DATASET, its variant folder) after one prepare with --resize short=40, 2 workers."""
    ds = tmp_path_factory.mktemp("resized") / "ds"
    run_cli("prepare", "--archives", replicas["small"], "--out", ds, "--only", "all", *SHARDS,
            *SHORT, "--workers", "2", "--no-report")
    return ds, ds / "variants" / TAG


# --- the rules, on single images ------------------------------------------------------------

def test_options_and_tags():
    assert resize.parse("none") is None and resize.parse(None) is None
    assert resize.parse("short=256").tag == "short256"
    assert resize.parse("max=512", 95).tag == "max512_q95"
    assert resize.parse("box=64", None, "webp").tag == "box64_webp"
    for bad in ("short=0", "long=5", "box=x", "short=256px"):
        with pytest.raises(OptionError):
            resize.parse(bad)
    with pytest.raises(OptionError):
        resize.parse("none", quality=80)  # --quality without resizing


@pytest.mark.parametrize("spec, size, want", [
    ("short=256", (500, 375), (341, 256)),  # 500 * 256 / 375 = 341.33
    ("short=256", (375, 500), (256, 341)),
    ("short=160", (500, 333), (240, 160)),  # 240.24
    ("short=100", (301, 200), (151, 100)),  # 150.5 rounds half up
    ("short=256", (200, 150), None),  # never enlarged
    ("short=256", (256, 900), None),  # already there
    ("max=512", (1024, 683), (512, 342)),  # 341.5 rounds half up
    ("max=512", (500, 375), None),
    ("box=64", (500, 375), (64, 64)),
    ("box=64", (10, 7), (64, 64)),  # a box is exact, tiny images included
    ("short=1", (4000, 3), (1333, 1)),  # 1333.33
])
def test_geometry_rule(spec, size, want):
    assert resize.target_size(resize.parse(spec), *size) == want


@pytest.mark.parametrize("kind", ["rgb", "gray", "cmyk", "ycck", "png", "rgba-png", "gzip"])
def test_modes_when_resized(kind):
    """Grayscale stays grayscale in JPEG and becomes RGB in WebP; everything else is RGB;
    the stored image has the requested size and no metadata."""
    data = sample_image(kind, 3)
    for fmt in ("jpeg", "webp"):
        spec = resize.parse("box=16", None, fmt)
        out, w, h, note = resize.resized_image(data, "x", spec)
        im = _decode(out)
        assert (im.format, im.size, (w, h)) == (resize.PIL_FORMAT[fmt], (16, 16), (16, 16))
        assert im.mode == ("L" if kind == "gray" and fmt == "jpeg" else "RGB")
        assert "exif" not in im.info and "icc_profile" not in im.info
        assert (note is None) == (kind in ("rgb", "gray"))


def test_tiny_images_fill_the_box():
    """box=B is exact: a 5x3 image is enlarged to BxB; short/max keep it as it is."""
    buf = io.BytesIO()
    Image.new("RGB", (5, 3), (200, 30, 30)).save(buf, "JPEG")
    out, w, h, _ = resize.resized_image(buf.getvalue(), "x", resize.parse("box=16"))
    assert (w, h) == (16, 16) == _decode(out).size
    kept, w, h, _ = resize.resized_image(buf.getvalue(), "x", resize.parse("max=16"))
    assert kept == buf.getvalue() and (w, h) == (5, 3)


@pytest.mark.parametrize("kind", ["rgb", "gray", "cmyk", "png", "gzip"])
def test_images_smaller_than_the_target(kind):
    """short/max never enlarge: an RGB or grayscale JPEG keeps its bytes (JPEG variant);
    others are encoded once at their size (RGB JPEG), and WebP always re-encodes."""
    data = sample_image(kind, 5)
    size = Image.open(io.BytesIO(resize._gunzip(data, "x") if kind == "gzip" else data)).size
    out, w, h, _ = resize.resized_image(data, "x", resize.parse("short=1000"))
    assert (w, h) == size == _decode(out).size
    assert (out is data) == (kind in ("rgb", "gray"))
    if kind not in ("rgb", "gray"):
        assert _decode(out).format == "JPEG" and _decode(out).mode == "RGB"
    webp, *_ = resize.resized_image(data, "x", resize.parse("max=1000", None, "webp"))
    assert _decode(webp).format == "WEBP" and _decode(webp).size == size


def test_fast_path_matches_the_reference_path():
    """The reduced decode applies (500x375 decodes at 2/8 for box=64, at 6/8 for short=256,
    at 7/8 for short=300) and stays close to the full decode with the same filter; without
    reduction (short=370) the two are identical."""
    assert [resize.eighths(500, 375, resize.target_size(resize.parse(r), 500, 375))
            for r in ("box=64", "short=160", "short=256", "short=300", "short=370")] == \
        [2, 4, 6, 7, 8]
    im = Image.radial_gradient("L").resize((500, 375)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92)
    for recipe in ("box=64", "short=256", "short=300"):
        assert resize.fast_vs_reference(buf.getvalue(), "x", resize.parse(recipe)) > 40
    assert resize.fast_vs_reference(buf.getvalue(), "x", resize.parse("short=370")) == \
        float("inf")
    assert resize.fast_vs_reference(buf.getvalue(), "x", resize.parse("short=400")) is None
    exact = resize.parse("box=64", full_decode=True)  # --full-decode: the reference's pixels
    assert exact.tag == "box64_full" and resize.from_text(exact.text) == exact
    assert resize.fast_vs_reference(buf.getvalue(), "x", exact) == float("inf")


def test_a_jpeg_turbojpeg_warns_about_takes_pillows_path():
    """TurboJPEG (strict) refuses a JPEG with stray bytes before a marker, which libjpeg
    only warns about; such an image is decoded by Pillow, as before, not lost."""
    buf = io.BytesIO()
    Image.radial_gradient("L").resize((200, 150)).convert("RGB").save(buf, "JPEG")
    good = buf.getvalue()
    at = good.index(b"\xff\xda")  # start of scan
    stray = good[:at] + b"\x00\x00\x00" + good[at:]
    spec = resize.parse("box=64")
    assert resize._turbojpeg_resized(good, spec) is not None
    assert resize._turbojpeg_resized(stray, spec) is None
    out, w, h, _ = resize.resized_image(stray, "x", spec)
    assert (w, h) == (64, 64) == _decode(out).size


# --- every output of a variant ----------------------------------------------------------

def test_class_trees_and_flat_folders(variant, small_replica):
    """Every image of train/, val/ (grouped) and the flat folders decodes at the rule's size;
    names and classes are those of the archives; CMYK/YCCK/PNG are RGB, grayscale stays L."""
    ds, root = variant
    spec = resize.parse("short=40")
    truth = replica_truth(small_replica)
    seen = {}
    for split in ("train", "val"):
        for p in (root / split).glob("*/*"):
            wnid, data, kind = truth[p.name]
            assert p.parent.name == wnid
            im = _decode(p.read_bytes())
            assert im.size == _expected(spec, data), p
            assert im.format == "JPEG"
            assert im.mode == ("L" if kind == "gray" else "RGB"), (p, kind)
            seen[p.name] = kind
    assert set(seen) == set(truth)
    assert {"cmyk", "ycck", "png", "gray"} <= set(seen.values())
    assert any(_expected(spec, d) != Image.open(io.BytesIO(d)).size for _, d, _ in
               truth.values())  # the replica's images are resized, not all kept
    flat = sorted(p.name for p in (root / "train_flatten").iterdir())
    assert flat == sorted(n for n in truth if not n.startswith("ILSVRC"))
    assert not (ds / "train").exists()  # the original layout is not written by a variant


def test_check_and_record(variant):
    ds, root = variant
    out = run_cli("check", ds).stdout
    assert f"variant {TAG}: OK" in out and out.strip().endswith(": OK")
    rec = json.loads((root / STATE_DIR / "variant.json").read_text())
    assert rec["resize"] == "short=40" and rec["quality"] == 90
    assert rec["versions"] == resize.versions()
    assert rec["quality_sample"]["images"] > 0
    from imagenet_prep.report.gather import variant_rows

    (row,) = variant_rows(ds)  # the report's line for it
    assert row.key == f"variant_{TAG}" and row.count == len(list(root.glob("*/*/*.JPEG")))
    assert "class trees, TFRecords, WebDataset" in row.detail


def test_tfrecords_parse_with_tensorflow(variant, small_replica):
    """Every record parses with TensorFlow and the reference's feature spec; its
    height/width are the stored image's, its label, synset and boxes the original's."""
    from test_tfrecord import read_with_tensorflow

    _, root = variant
    spec = resize.parse("short=40")
    truth = replica_truth(small_replica)
    boxes = boxes_of(replica_box_lines(small_replica))
    parsed = read_with_tensorflow(root, {"train": 3, "val": 2})
    names = set()
    for split, records in parsed.items():
        for rec in records:
            name = rec["image/filename"].decode()
            wnid, data, _ = truth[name]
            h, w = int(rec["image/height"]), int(rec["image/width"])
            assert (w, h) == _expected(spec, data) and rec["decoded_shape"] == (h, w, 3)
            assert rec["image/class/synset"].decode() == wnid
            assert rec["image/class/label"] == SORTED_WNIDS.index(wnid) + 1
            assert (rec["image/format"], rec["image/channels"]) == (b"JPEG", 3)
            want = boxes.get(name, []) if split == "train" else []
            got = list(zip(*(rec[f"image/object/bbox/{k}"]
                             for k in ("xmin", "ymin", "xmax", "ymax")), strict=True))
            assert got == [tuple(float(np.float32(v)) for v in b) for b in want]
            names.add(name)
    assert names == set(truth)


def test_webdataset_samples_describe_the_stored_image(variant, small_replica):
    _, root = variant
    spec = resize.parse("short=40")
    truth = replica_truth(small_replica)
    n = 0
    for shard in sorted((root / "wds").glob("*.tar")):
        with tarfile.open(shard) as t:
            members = {m.name: t.extractfile(m).read() for m in t}
        for name, data in members.items():
            if name.endswith(".json"):
                meta = json.loads(data)
                im = _decode(members[name[:-5] + ".jpg"])
                assert im.size == (meta["width"], meta["height"])
                if meta["filename"] in truth:
                    assert im.size == _expected(spec, truth[meta["filename"]][1])
                n += 1
    assert n == len(truth)


def test_imagefolder_loads_the_resized_trees(variant):
    _, root = variant
    for split in ("train", "val"):
        folder = ImageFolder(str(root / split))
        assert len(folder) == sum(1 for _ in (root / split).glob("*/*"))
        image, label = folder[len(folder) - 1]
        assert min(image.size) <= 48 and folder.classes[label] == \
            Path(folder.samples[-1][0]).parent.name


# --- determinism and refusals ----------------------------------------------------------------

def test_same_bytes_with_one_worker_and_with_dask(variant, small_replica, tmp_path):
    """The variant's bytes do not depend on --workers 1, 2 or --dask-local 2."""
    _, root = variant
    want = tree_digest(root)
    for name, how in (("w1", ("--workers", "1")), ("dask", ("--dask-local", "2"))):
        ds = tmp_path / name
        run_cli("prepare", "--archives", small_replica, "--out", ds, "--only", "all", *SHARDS,
                *SHORT, *how, "--no-report")
        assert tree_digest(ds / "variants" / TAG) == want, name


def test_webp_box_shards(small_replica, tmp_path):
    """box=16 WebP: TFRecords say WEBP, samples are KEY.webp, check proves both."""
    ds = tmp_path / "ds"
    opts = ("--resize", "box=16", "--image-format", "webp", "--workers", "2")
    run_cli("tfrecord", ds, "--archives", small_replica, "--train-shards", "2",
            "--val-shards", "1", *opts)
    run_cli("wds", ds, "--archives", small_replica, "--shard-samples", "30", *opts)
    root = ds / "variants" / "box16_webp"
    shard = sorted((root / "tfrecord_val").iterdir())[0]
    from imagenet_prep.formats.tfrecord import decode_example

    ex = decode_example(next(iter(iter_records(shard)))[1])
    assert ex["image/format"] == [b"WEBP"]
    assert _decode(ex["image/encoded"][0]).size == (16, 16)
    with tarfile.open(sorted((root / "wds").glob("*.tar"))[0]) as t:
        names = t.getnames()
    assert any(n.endswith(".webp") for n in names) and not any(n.endswith(".jpg") for n in names)
    assert run_cli("check", ds).stdout.strip().endswith(": OK")


def test_other_options_or_versions_are_refused(small_replica, tmp_path):
    ds = tmp_path / "ds"
    base = ("--archives", small_replica, "--shard-samples", "50", "--workers", "1")
    run_cli("wds", ds, *base, "--out", ds / "w", "--resize", "box=8")
    proc = run_cli("wds", ds, *base, "--out", ds / "w", "--resize", "box=8", "--quality", "70",
                   check=False)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "not box=8 q70 jpeg" in proc.stderr and "start over" in proc.stderr
    state = ds / "w" / STATE_DIR / "variant.json"
    rec = json.loads(state.read_text())
    rec["versions"]["pillow"] = "1.0"
    state.write_text(json.dumps(rec))
    reseal(state)  # as a run with that Pillow would have written it
    proc = run_cli("wds", ds, *base, "--out", ds / "w", "--resize", "box=8", check=False)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "Pillow 1.0" in proc.stderr and f"delete {ds / 'w'} to start over" in proc.stderr
    proc = run_cli("wds", ds, *base, "--out", ds / "w", check=False)  # no --resize
    assert proc.returncode != 0 and "holds the resized variant box=8" in proc.stderr


def test_extract_killed_and_rerun(replicas, tmp_path):
    """A resized extraction killed midway, then rerun, gives the bytes of a clean run."""
    from test_resume import count_files, kill_when

    arch = replicas["medium"]
    clean, ds = tmp_path / "clean", tmp_path / "killed"
    args = ("--resize", "box=24", "--workers", "2", "--splits", "train,val")
    run_cli("extract", "--archives", arch, "--out", clean, *args)
    train = ds / "variants" / "box24" / "train"
    killed = kill_when(["extract", "--archives", arch, "--out", ds, *args],
                       lambda _: count_files(train) >= 300)
    assert killed, "the run finished before the kill: aim earlier"
    run_cli("extract", "--archives", arch, "--out", ds, *args)
    assert tree_digest(ds) == tree_digest(clean)
    assert run_cli("check", ds).stdout.strip().endswith(": OK")


def test_parquet_and_mds_store_the_variant(small_replica, tmp_path):
    """The loaders' formats take --resize too: Parquet rows and MDS samples hold the
    resized JPEGs; WebP is refused for MDS (its x column is typed jpeg)."""
    import pyarrow.parquet as pq

    ds = tmp_path / "ds"
    opts = ("--archives", small_replica, "--resize", "box=16", "--workers", "2")
    run_cli("parquet", ds, *opts)
    run_cli("mds", ds, *opts)
    root = ds / "variants" / "box16"
    rows = 0
    for f in sorted((root / "parquet").rglob("*.parquet")):
        for image in pq.read_table(f).column("image").to_pylist():
            assert _decode(image["bytes"]).size == (16, 16)
            rows += 1
    assert rows == len(replica_truth(small_replica)) + 5  # train, val and the 5 test images
    assert (root / "mds" / "train" / "index.json").is_file()
    assert run_cli("check", ds).stdout.strip().endswith(": OK")
    proc = run_cli("mds", ds, *opts, "--image-format", "webp", check=False)
    assert proc.returncode != 0 and "not --image-format webp" in proc.stderr


def test_damage_in_a_variant_is_found_and_mended(variant, small_replica, tmp_path):
    """check DATASET proves its variants: a flipped byte and a deleted image are named,
    and the next prepare of the variant writes back the same bytes."""
    ds = tmp_path / "ds"
    run_cli("prepare", "--archives", small_replica, "--out", ds, "--only", "all", *SHARDS,
            *SHORT, "--workers", "2", "--no-report")
    root = ds / "variants" / TAG
    want = tree_digest(root)
    assert want == tree_digest(variant[1])
    flipped = sorted((root / "train").glob("*/*.JPEG"))[3]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    deleted = sorted((root / "val").glob("*/*.JPEG"))[0]
    deleted.unlink()
    proc = run_cli("check", ds, check=False)
    assert proc.returncode == 1 and f"variant {TAG}: problems below" in proc.stdout
    assert f"{flipped}: content changed" in proc.stdout
    assert f"{root / 'val' / deleted.name}: missing" in proc.stdout
    assert f"{root / 'val' / deleted.parent.name}: 2 files, expected 3" in proc.stdout
    run_cli("prepare", "--archives", small_replica, "--out", ds, "--only", "all", *SHARDS,
            *SHORT, "--workers", "2", "--no-report")
    assert tree_digest(root) == want
    assert run_cli("check", ds).stdout.strip().endswith(": OK")


@pytest.mark.parametrize("gone", ["folder", "record"])
def test_a_variant_that_is_gone_is_a_problem(variant, small_replica, tmp_path, gone):
    """DATASET remembers each variant it was asked to hold: with the variant's folder (or
    only its variant.json) deleted, `check DATASET` names it instead of saying OK over the
    rest, and the same prepare writes it back byte for byte."""
    ds, root = tmp_path / "ds", tmp_path / "ds" / "variants" / TAG
    subprocess.run(["cp", "-a", variant[0], ds], check=True)  # links kept
    want = tree_digest(root)
    if gone == "folder":
        shutil.rmtree(root)
    else:
        (root / STATE_DIR / "variant.json").unlink()
    proc = run_cli("check", ds, check=False)
    assert proc.returncode == 1, proc.stdout
    assert (f"problem: {root}: this dataset was asked to hold that variant and it is not "
            f"there (no variant.json); rerun prepare with --resize short=40 --quality 90 "
            f"--image-format jpeg to write it again, or delete "
            f"{ds / STATE_DIR / ('variant-' + TAG + '.json')} if it is no longer wanted"
            ) in proc.stdout
    run_cli("prepare", "--archives", small_replica, "--out", ds, "--only", "all", *SHARDS,
            *SHORT, "--workers", "2", "--no-report")
    assert tree_digest(root) == want
    assert run_cli("check", ds).stdout.strip().endswith(": OK")
    shutil.rmtree(root)  # not wanted any more: its record goes too, as the line says
    (ds / STATE_DIR / f"variant-{TAG}.json").unlink()
    one_line(run_cli("check", ds, check=False), 8, "nothing here to check")  # it held no more


def test_a_variant_record_check_cannot_vouch_for(variant, tmp_path):
    """The variant's record is what the next run holds it to: damaged, `check` stops with
    the one line that run gives (it said OK); naming other options than the shards were
    written with, or gone from beside shards, it is a problem, not an OK."""
    root = tmp_path / "ds" / "variants" / TAG
    subprocess.run(["cp", "-a", variant[0], tmp_path / "ds"], check=True)  # links kept
    record = root / STATE_DIR / "variant.json"
    good = record.read_text()
    record.write_text(good[:len(good) // 2])
    one_line(run_cli("check", tmp_path / "ds", check=False), 5,
             f"{record}: damaged state record", "delete it to run that stage again")
    # a flipped bit in a library's name: it read as that library missing, check said OK
    # and the run refused, "written with ... libwebp None". The record's own SHA-256
    # finds it; sealed again (as if written so), its shape does
    record.write_text(good.replace('"libwebp"', '"libwdbp"'))
    one_line(run_cli("check", tmp_path / "ds", check=False), 5,
             f"{record}: damaged state record (its content differs from its own SHA-256)")
    reseal(record)
    one_line(run_cli("check", tmp_path / "ds", check=False), 5,
             f"{record}: damaged state record (versions.libwebp is missing)")
    record.write_text(good.replace('"short=40"', '"short=48"'))
    reseal(record)  # a record naming other options than the shards, whole
    out = run_cli("check", tmp_path / "ds", check=False).stdout
    for name in ("tfrecord.json", "wds/.imagenet-prep/wds.json"):
        assert f"{root / STATE_DIR / name if '/' not in name else root / name}: shards " \
               f"written as short=40 q90 jpeg, but {record} records short=48 q90 jpeg" in out
    record.write_text(good)
    (root / STATE_DIR / "tfrecord.json").unlink()
    (root / "wds" / STATE_DIR / "wds.json").unlink()
    proc = run_cli("check", tmp_path / "ds", check=False)
    assert proc.returncode == 1
    for folder, stage in (("tfrecord_train", "tfrecord"), ("wds", "wds")):
        assert f"{root / folder}: holds shards that no {stage} run recorded" in proc.stdout


@pytest.mark.parametrize("command, files", [("wds", "wds/train-*.tar"),
                                            ("parquet", "parquet/data/train-*.parquet"),
                                            ("mds", "mds/train/shard.*.mds")])
def test_size_cut_counts_the_stored_bytes(command, files, replicas, tmp_path):
    """A size cut plans from the variant's bytes (a sampled stored/input ratio), not from
    the originals': the shards are about the size asked, not a fraction of it."""
    ds, asked = tmp_path / "ds", 400_000
    run_cli(command, ds, "--archives", replicas["medium"], "--resize", "box=32",
            "--shard-size", str(asked), "--workers", "2")
    sizes = [p.stat().st_size for p in sorted((ds / "variants" / "box32").glob(files))]
    assert len(sizes) >= 3
    # cut by the input bytes, they were 0.24-0.5x; Parquet adds its ~60 KB footer (the
    # schema's class names), which no cut counts
    assert all(0.75 * asked <= s <= 1.15 * asked for s in sizes[:-1]), sizes
    assert run_cli("check", ds).stdout.strip().endswith(": OK")
    if command == "wds":  # the sampled plan is the main process's: any workers, same cut
        one = tmp_path / "one"
        run_cli(command, one, "--archives", replicas["medium"], "--resize", "box=32",
                "--shard-size", str(asked), "--workers", "1")
        assert tree_digest(one / "variants" / "box32" / "wds") == \
            tree_digest(ds / "variants" / "box32" / "wds")


def test_a_cut_planned_otherwise_is_named(small_replica, tmp_path):
    """A variant whose state records another cut of the same images (an earlier version
    planned size cuts from the input bytes) is refused in one line saying so, not as
    'other images'; nothing is rewritten."""
    ds = tmp_path / "ds"
    opts = ("wds", ds, "--archives", small_replica, "--resize", "box=16", "--shard-size",
            "20000")
    run_cli(*opts)
    root = ds / "variants" / "box16" / "wds"
    state_path = root / ".imagenet-prep" / "wds.json"
    state = json.loads(state_path.read_text())
    state["splits"]["train"]["shards"] += 3
    state_path.write_text(json.dumps(state))
    reseal(state_path)  # as an earlier imagenet-prep that planned the cut otherwise wrote it
    before = tree_digest(root)
    one_line(run_cli(*opts, check=False), None, "train shards were cut into", "same images")
    assert tree_digest(root) == before
