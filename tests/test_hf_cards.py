"""Hugging Face dataset cards: `load_dataset(DATASET/wds)` reads every split of the WebDataset
shards with the card's columns; `load_dataset(DATASET)` reads the class folders once each
(no flat folders, no box folders) with labels; the documented `imagefolder` call with
`data_files` does the same; our YAML and Parquet features equal the library's own; a
README.md that imagenet-prep did not write is left alone; check finds a damaged card.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers_hf import HUB_SPLIT, image_size, offline_hf, split_truth

offline_hf()  # before datasets is imported

import datasets  # noqa: E402

from imagenet_prep.check import check_dataset  # noqa: E402
from imagenet_prep.cli import main  # noqa: E402
from imagenet_prep.formats import hf_card  # noqa: E402
from imagenet_prep.sources import metadata  # noqa: E402

WDS_FEATURES = datasets.Features({
    "__key__": datasets.Value("string"), "__url__": datasets.Value("string"),
    "cls": datasets.Value("int64"), "jpg": datasets.Image(),
    "json": {"boxes": datasets.List(datasets.List(datasets.Value("float64"))),
             "filename": datasets.Value("string"), "height": datasets.Value("int64"),
             "label": datasets.Value("int64"), "width": datasets.Value("int64"),
             "wnid": datasets.Value("string")},
})


def test_our_features_are_the_librarys_own():
    hub = datasets.Features({"image": datasets.Image(),
                             "label": datasets.ClassLabel(names=list(metadata.hub_class_names()))})
    assert hf_card.hub_features_yaml() == hub._to_yaml_list()
    assert json.loads(hf_card.hub_features_metadata()) == {"info": {"features": hub.to_dict()}}
    assert hf_card.wds_features_yaml() == WDS_FEATURES._to_yaml_list()


def test_yaml_reads_back_as_written():
    import yaml

    value = {"a": [{"name": 'x "y", z: \\ #', "n": 3}, {"k": {}}], "b": {"0": "é", "c": []}}
    assert yaml.safe_load("\n".join(hf_card.yaml_lines(value))) == value


def test_load_dataset_reads_every_webdataset_split(tmp_path, small_replica):
    out = tmp_path / "wds"
    assert main(["wds", "--archives", str(small_replica), "--out", str(out), "--splits",
                 "train,val,test", "--shard-samples", "7", "--workers", "2"]) == 0
    truth = split_truth(small_replica)
    loaded = datasets.load_dataset(str(out))
    assert set(loaded) == {"train", "validation", "test"}
    for split, want in truth.items():
        d = loaded[HUB_SPLIT[split]].cast_column("jpg", datasets.Image(decode=False))
        assert d.features["json"] == WDS_FEATURES["json"] and d.features["cls"] == WDS_FEATURES[
            "cls"]
        rows = list(d)
        assert sorted(r["json"]["filename"] for r in rows) == sorted(want)
        for r in rows:
            t = want[r["json"]["filename"]]
            assert r["cls"] == (None if split == "test" else t.label)
            assert r["json"]["label"] == (None if split == "test" else t.label)
            assert image_size(r["jpg"]["bytes"]) == t.size == (r["json"]["width"],
                                                                r["json"]["height"])
    streamed = datasets.load_dataset(str(out), streaming=True)
    assert sum(1 for _ in streamed["validation"]) == len(truth["val"])


def test_root_card_reads_the_class_folders_once(hf_dataset):
    arch, ds = hf_dataset
    assert (ds / "train_flatten").is_dir() and (ds / "bbox_train").is_dir()
    truth = split_truth(arch)
    loaded = datasets.load_dataset(str(ds))
    assert set(loaded) == {"train", "validation"}
    wnids = sorted({metadata.wnids()[t.label] for t in truth["train"].values()})
    for split in ("train", "val"):
        d = loaded[HUB_SPLIT[split]]
        assert d.features["label"].names == wnids  # the class folders, sorted: their ranks
        rows = list(d.cast_column("image", datasets.Image(decode=False)))
        assert len(rows) == len(truth[split])  # the flat folders are not counted again
        got = sorted((Path(r["image"]["path"]).name, wnids[r["label"]]) for r in rows)
        assert got == sorted((n, metadata.wnids()[t.label]) for n, t in truth[split].items())
        for r in rows:
            assert image_size(Path(r["image"]["path"]).read_bytes()) == \
                truth[split][Path(r["image"]["path"]).name].size
    documented = datasets.load_dataset("imagefolder", data_files={
        "train": f"{ds}/train/*/*.JPEG", "validation": f"{ds}/val/*/*.JPEG"})
    assert {s: len(d) for s, d in documented.items()} == {
        "train": len(truth["train"]), "validation": len(truth["val"])}
    assert "label" in documented["train"].features


def test_cards_are_checked(tmp_path, small_replica):
    ds = tmp_path / "ds"
    args = ["prepare", "--archives", str(small_replica), "--out", str(ds), "--only", "pytorch",
            "--wds", "--no-report", "--wds-shard-samples", "20"]
    assert main(args) == 0
    assert check_dataset(ds)[0] == []
    for card in (ds / "README.md", ds / "wds" / "README.md"):
        text = card.read_text()
        card.write_text(text.replace("train", "trian", 1))
        assert any(str(card) in p for p in check_dataset(ds)[0])
        assert main(args) == 0  # rewritten
        assert card.read_text() == text and check_dataset(ds)[0] == []


def test_a_readme_of_someone_elses_is_left_alone(tmp_path, small_replica):
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "README.md").write_text("# my notes\n")
    assert main(["prepare", "--archives", str(small_replica), "--out", str(ds), "--only",
                 "pytorch", "--no-report"]) == 0
    assert (ds / "README.md").read_text() == "# my notes\n"
    assert check_dataset(ds)[0] == []
