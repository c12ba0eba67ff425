"""MDS shards: mosaicml-streaming's StreamingDataset (and StreamingImageNet) read every split,
every sample matching the replica's truth; the bytes equal what MosaicML's own MDSWriter
writes for the same samples; check finds a deleted or flipped shard and a wrong index, and
a rerun mends them.  Workers, Dask and kills: tests/test_parquet.py (both formats).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_hf import image_size, offline_hf, split_truth
from PIL import Image

offline_hf()  # before streaming (and the Hugging Face libraries it imports) is imported

from streaming import MDSWriter, StreamingDataset  # noqa: E402

from imagenet_prep.check import check_dataset  # noqa: E402
from imagenet_prep.cli import main  # noqa: E402
from imagenet_prep.formats import mds as mds_format  # noqa: E402


def read_split(folder: Path) -> list[dict]:
    ds = StreamingDataset(local=str(folder), shuffle=False, batch_size=1)
    return [ds[i] for i in range(len(ds))]


def test_streaming_dataset_reads_every_split(hf_dataset):
    arch, ds = hf_dataset
    truth = split_truth(arch)
    for split, want in truth.items():
        samples = read_split(ds / "mds" / split)
        assert sorted(s["filename"] for s in samples) == sorted(want), split
        ranks = {n: i for i, n in enumerate(sorted(want))}
        for s in samples:
            t = want[s["filename"]]
            assert s["y"] == t.label and s["i"] == ranks[s["filename"]]
            assert isinstance(s["x"], Image.Image) and s["x"].size == t.size
            assert s["x"].format == "JPEG"


def test_streaming_imagenet_class_reads_the_folder(hf_dataset):
    from streaming.vision import StreamingImageNet

    arch, ds = hf_dataset
    truth = split_truth(arch)["val"]
    val = StreamingImageNet(local=str(ds / "mds"), split="val", batch_size=1, shuffle=False)
    assert len(val) == len(truth)
    x, y = val[0]  # its default transform gives a (C, H, W) tensor
    assert y in {t.label for t in truth.values()}
    assert tuple(x.shape[-2:]) in {(t.size[1], t.size[0]) for t in truth.values()}


def stored_images(folder: Path) -> dict[str, bytes]:
    """File name -> stored JPEG bytes of every sample of a split, parsed by the test itself
    (count, offsets, then per sample: two lengths, file name, i, x, y)."""
    out = {}
    for shard in sorted(folder.glob("shard.*.mds")):
        data = shard.read_bytes()
        n = int.from_bytes(data[:4], "little")
        offsets = [int.from_bytes(data[4 + 4 * k:8 + 4 * k], "little") for k in range(n + 1)]
        assert offsets[-1] == len(data)
        for a, b in zip(offsets, offsets[1:], strict=False):
            name_len = int.from_bytes(data[a:a + 4], "little")
            img_len = int.from_bytes(data[a + 4:a + 8], "little")
            start = a + 8 + name_len + 8
            assert start + img_len + 8 == b
            out[data[a + 8:a + 8 + name_len].decode()] = data[start:start + img_len]
    return out


def test_bytes_equal_mosaicmls_own_writer(tmp_path, small_replica):
    """One shard per split, so MDSWriter's own cut gives the same shards: every byte of the
    shard and of index.json must be what MosaicML's writer makes of the same samples."""
    ds = tmp_path / "ds"
    assert main(["mds", str(ds), "--archives", str(small_replica), "--workers", "2"]) == 0
    jpg = tmp_path / "x.jpg"
    for split in ("train", "val", "test"):
        ours = ds / "mds" / split
        theirs = tmp_path / "theirs" / split
        stored = stored_images(ours)
        with MDSWriter(out=str(theirs), columns=mds_format.COLUMNS, size_limit=1 << 26) as w:
            for s in read_split(ours):
                jpg.write_bytes(stored[s["filename"]])  # MDSWriter's jpeg takes a file's bytes
                w.write({"filename": s["filename"], "i": s["i"], "x": Image.open(jpg),
                         "y": s["y"]})
        for name in ("shard.00000.mds", "index.json"):
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), (split, name)


def test_stored_images_decode_to_the_archive_sizes(hf_dataset):
    arch, ds = hf_dataset
    for split, truth in split_truth(arch).items():
        stored = stored_images(ds / "mds" / split)
        assert sorted(stored) == sorted(truth)
        for name, data in stored.items():
            assert image_size(data) == truth[name].size
            if truth[name].kind in ("rgb", "gray"):
                assert data == truth[name].data


@pytest.mark.parametrize("damage", ["delete", "flip", "index"])
def test_check_finds_damage_and_a_rerun_mends_it(tmp_path, small_replica, damage):
    ds = tmp_path / "ds"
    args = ["mds", str(ds), "--archives", str(small_replica), "--shard-size", "20KB"]
    assert main(args) == 0
    folder = ds / "mds" / "train"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert len(before) > 2 and check_dataset(ds)[0] == []
    victim = folder / ("index.json" if damage == "index" else "shard.00001.mds")
    if damage == "delete":
        victim.unlink()
    elif damage == "flip":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
    else:
        doc = json.loads(victim.read_text())
        doc["shards"] = doc["shards"][:-1]
        victim.write_text(json.dumps(doc, sort_keys=True))
    problems, _ = check_dataset(ds)
    assert problems and all(victim.name in p for p in problems), problems
    assert main(["check", str(ds)]) == 1
    assert main(args) == 0
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert check_dataset(ds)[0] == []
