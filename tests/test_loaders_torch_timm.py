"""torchvision's `ImageNet` class reads DATASET through meta.bin, and timm's WebDataset reader
reads DATASET/wds through _info.json, in training and evaluation mode; every sample's label,
file name (where the loader gives it) and decoded size match the replica's truth, computed
from tarfile and the devkit (tests/expected.py), never from the code under test.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from expected import devkit_words
from helpers import SORTED_WNIDS, replica_truth, run_cli
from PIL import Image

from imagenet_prep.check import check_dataset
from imagenet_prep.report.gather import summary_rows

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
timm_data = pytest.importorskip("timm.data")


@pytest.fixture(scope="module")
def prepared(replicas, tmp_path_factory) -> tuple[Path, Path]:
    """(archives, DATASET): --only pytorch --wds, with torch unimportable in the run."""
    arch, ds = replicas["small"], tmp_path_factory.mktemp("loaders") / "ds"
    code = ("import sys; sys.modules['torch'] = None; from imagenet_prep.cli import main; "
            f"sys.exit(main(['prepare', '--archives', {str(arch)!r}, '--out', {str(ds)!r}, "
            "'--only', 'pytorch', '--wds', '--wds-shard-samples', '7', '--no-report']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return arch, ds


@pytest.fixture(scope="module")
def truth(prepared) -> dict[str, dict[str, tuple[int, tuple[int, int]]]]:
    """split -> file name -> (label 0..999, (width, height) decoded)."""
    out: dict[str, dict] = {"train": {}, "val": {}}
    for name, (wnid, data, _) in replica_truth(prepared[0]).items():
        split = "val" if name.startswith("ILSVRC2012_val_") else "train"
        out[split][name] = (SORTED_WNIDS.index(wnid), Image.open(io.BytesIO(data)).size)
    return out


@pytest.mark.parametrize("split", ["train", "val"])
def test_torchvision_imagenet_reads_every_sample(prepared, truth, split):
    arch, ds = prepared
    data = torchvision.datasets.ImageNet(root=str(ds), split=split)
    want = truth[split]
    assert len(data) == len(want)
    words = devkit_words(arch)
    for i, (path, target) in enumerate(data.samples):
        name = Path(path).name
        wnid = data.wnids[target]
        assert SORTED_WNIDS.index(wnid) == want[name][0], name
        assert data.classes[target] == tuple(words[wnid].split(", "))
        image, t = data[i]
        assert (t, image.size) == (target, want[name][1]), name


def test_meta_bin_is_what_torch_save_holds(prepared, truth):
    arch, ds = prepared
    classes, val_wnids = torch.load(ds / "meta.bin", weights_only=True)
    assert sorted(classes) == SORTED_WNIDS
    val = truth["val"]
    assert val_wnids == [SORTED_WNIDS[val[n][0]] for n in sorted(val)]
    for wnid, text in devkit_words(arch).items():
        assert classes[wnid] == tuple(text.split(", "))


@pytest.mark.parametrize("split, ours", [("train", "train"), ("validation", "val")])
@pytest.mark.parametrize("training", [False, True])
def test_timm_wds_reader_reads_every_sample(prepared, truth, split, ours, training):
    _, ds = prepared
    data = timm_data.create_dataset("wds/imagenet", root=str(ds / "wds"), split=split,
                                    is_training=training, batch_size=1)
    want = Counter(truth[ours].values())
    assert len(data) == sum(want.values())
    got = Counter((int(target), image.size) for image, target in data)
    assert got == want


def test_timm_info_lists_the_shards(prepared):
    _, ds = prepared
    info = json.loads((ds / "wds" / "_info.json").read_text())
    for name in ("train", "validation"):
        index = json.loads((ds / "wds" / f"{name}.json").read_text())["shardlist"]
        split = info["splits"][name]
        assert split["filenames"] == [s["url"] for s in index]
        assert split["shard_lengths"] == [s["nsamples"] for s in index]
        assert split["num_samples"] == sum(split["shard_lengths"])
        assert all((ds / "wds" / f).is_file() for f in split["filenames"])


def test_check_proves_meta_bin_and_timm_info(prepared, truth, tmp_path):
    _, src = prepared
    problems, checked = check_dataset(src)
    assert problems == [] and "torchvision" in checked["outputs"]
    rows = {r.key: r for r in summary_rows(src, {})}  # what the report counts
    assert (rows["meta_bin"].classes, rows["meta_bin"].count) == (1000, len(truth["val"]))
    assert rows["timm_info"].count == len(truth["train"]) + len(truth["val"])
    ds = tmp_path / "ds"
    shutil.copytree(src, ds, symlinks=True)
    meta = ds / "meta.bin"
    data = bytearray(meta.read_bytes())
    data[-30] ^= 1
    meta.write_bytes(bytes(data))
    info = ds / "wds" / "_info.json"
    info.write_text(info.read_text().replace('"num_samples": ', '"num_samples": 1'))
    text = "\n".join(check_dataset(ds)[0])
    assert "meta.bin: changed after it was written" in text
    assert "_info.json: does not list the shards" in text
    meta.unlink()
    info.unlink()
    text = "\n".join(check_dataset(ds)[0])
    assert "meta.bin: missing" in text and "_info.json: missing" in text
    run_cli("prepare", "--archives", prepared[0], "--out", ds, "--only", "pytorch", "--wds",
            "--wds-shard-samples", "7", "--no-report")
    assert meta.read_bytes() == (src / "meta.bin").read_bytes()
    assert info.read_text() == (src / "wds" / "_info.json").read_text()
    assert check_dataset(ds)[0] == []
