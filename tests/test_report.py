"""`imagenet-prep report`: the page read back with html.parser, from folders and from shards.

Counts are compared with replica.json, the contact sheet's files with the devkit's
ground truth (computed by tests/expected.py, not by the code under test), and
every thumbnail is decoded with Pillow.  A deliberate swap of two validation
folders must show up on the contact sheet as rows of the other class.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from expected import devkit_truth
from helpers import run_cli
from PIL import Image

from imagenet_prep.cli import main
from imagenet_prep.folders.extract import extract
from imagenet_prep.folders.valtree import valtree
from imagenet_prep.report import build_report

SECTIONS = {"summary", "counts", "check", "timings", "distributions", "converted", "contact",
            "plot-per-class-train", "plot-per-class-val", "plot-width", "plot-height",
            "plot-aspect", "plot-filesize"}
CONVERTED_KINDS = ("cmyk", "ycck", "png")  # replica quirks the TFRecord writer re-encodes


class Page(HTMLParser):
    """What a test needs from the page: ids, rows, thumbnails, cards, plot tooltips."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str]] = {}
        self.rows: dict[str, dict[str, str | None]] = {}
        self.imgs: list[dict[str, str]] = []
        self.cards: list[dict[str, str]] = []
        self.sampled: dict[str, dict[str, str]] = {}
        self.links: list[str] = []
        self.titles: dict[str, list[str]] = {}
        self.stages: list[str] = []
        self._row: str | None = None
        self._svg: str | None = None
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids[a["id"]] = a
        self.links += [a[k] for k in ("src", "href") if k in a]
        if tag == "tr" and "data-stage" in a:
            self.stages.append(a["data-stage"])
        if tag == "tr" and "data-key" in a:
            self._row = a["data-key"]
            self.rows[self._row] = {}
        elif tag == "td" and self._row:
            for field in ("count", "classes", "bytes"):
                if field in a.get("class", "").split():
                    self.rows[self._row][field] = a.get("data-value")
        elif tag == "img":
            self.imgs.append(a)
        elif tag == "figure":
            self.cards.append(a)
        elif tag == "p" and "sampled" in a.get("class", ""):
            self.sampled[a["data-split"]] = a
        elif tag == "svg":
            self._svg = a.get("id")
        elif tag == "title" and self._svg:
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        elif tag == "svg":
            self._svg = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title and self._svg:
            self.titles.setdefault(self._svg, []).append(data)

    def per_class(self, split: str) -> dict[str, int]:
        """WNID -> count from the bar tooltips of the images-per-class plot."""
        out = {}
        for t in self.titles.get(f"plot-per-class-{split}", []):
            if t.startswith("n") and ": " in t:
                wnid, n = t.split(": ")
                out[wnid] = int(n.replace(",", ""))
        return out

    def contact(self, split: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for a in self.imgs:
            if a["data-section"] == "contact" and a["data-split"] == split:
                out.setdefault(a["data-wnid"], []).append(a["data-file"])
        return out


def read_page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def replica_json(archives: Path) -> dict:
    return json.loads((archives / "replica.json").read_text())


def expected_converted(meta: dict) -> set[tuple[str, str]]:
    return {("val" if n.startswith("ILSVRC2012_val_") else "train", n)
            for kind in CONVERTED_KINDS for n in meta["quirks"].get(kind, [])}


def assert_thumbnails_decode(page: Page) -> None:
    assert page.imgs
    for a in page.imgs:
        head, _, b64 = a["src"].partition(",")
        assert head == "data:image/jpeg;base64", a["data-file"]
        im = Image.open(io.BytesIO(base64.b64decode(b64)))
        im.load()
        assert im.format == "JPEG" and im.mode == "RGB" and max(im.size) <= 96
        assert a["data-section"] in ("contact", "converted") and a["data-split"] in ("train", "val")


def assert_self_contained(path: Path, page: Page) -> None:
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert all(link.startswith(("data:", "#")) for link in page.links)
    assert "<script" not in text


def assert_common(page: Page, meta: dict, sample: int = 5000) -> None:
    assert SECTIONS <= set(page.ids)
    counts = meta["counts"]
    for split in ("train", "val"):
        assert page.rows[split]["count"] == str(counts[split])
        assert page.rows[split]["classes"] == str(len(meta["wnids"]))
        assert page.sampled[split]["data-total"] == str(counts[split])
        assert page.sampled[split]["data-sampled"] == str(min(sample, counts[split]))
    assert page.per_class("train") == meta["train_per_class"]
    per_val = meta["params"]["val_per_class"]
    assert page.per_class("val") == {w: per_val for w in meta["wnids"]}
    # every class of this replica is on the sheet (24 > 4), with up to 8 images per row
    train, val = page.contact("train"), page.contact("val")
    assert sorted(train) == sorted(val) == meta["wnids"]
    for wnid in meta["wnids"]:
        assert len(train[wnid]) == min(8, meta["train_per_class"][wnid])
        assert all(n.startswith(wnid + "_") for n in train[wnid])
        assert len(val[wnid]) == min(8, per_val)
    assert_thumbnails_decode(page)


@pytest.fixture(scope="module")
def prepared(replicas, tmp_path_factory) -> Path:
    """The small replica after `prepare --only pytorch`, which writes the report."""
    ds = tmp_path_factory.mktemp("report-folders") / "ds"
    assert main(["prepare", "--archives", str(replicas["small"]), "--out", str(ds),
                 "--only", "pytorch", "--workers", "1"]) == 0
    return ds


@pytest.fixture(scope="module")
def shards_only(replicas, tmp_path_factory) -> Path:
    """A dataset holding only TFRecord shards, as a TensorFlow-only user has."""
    ds = tmp_path_factory.mktemp("report-shards") / "ds"
    assert main(["tfrecord", str(ds), "--archives", str(replicas["small"]),
                 "--train-shards", "3", "--val-shards", "2", "--workers", "1"]) == 0
    assert main(["report", str(ds), "--workers", "1"]) == 0
    return ds


def test_prepare_writes_the_report_from_folders(prepared, small_replica):
    meta = replica_json(small_replica)
    path = prepared / "report.html"
    page = read_page(path)
    assert_common(page, meta)
    assert_self_contained(path, page)
    assert page.rows["test"]["count"] == str(meta["counts"]["test"])
    assert page.rows["bbox_val"]["count"] == str(meta["counts"]["bbox_val"])
    assert "tfrecord_train" not in page.rows
    assert page.ids["check"]["data-ok"] == "true"
    truth = devkit_truth(small_replica)
    for wnid, names in page.contact("val").items():
        assert {truth[n] for n in names} == {wnid}
        assert all((prepared / "val" / wnid / n).is_file() for n in names)
    # no TFRecord run: the odd files are found by content (the sample covers this replica)
    found = {(c["data-split"], c["data-file"]) for c in page.cards}
    assert found == expected_converted(meta)
    assert {c["data-found-by"] for c in page.cards} == {"content"}
    assert page.ids["converted-count"]["data-value"] == str(len(found))
    assert len([a for a in page.imgs if a["data-section"] == "converted"]) == len(found)
    # the prepare run's stage timings are on the page, in stage order
    assert page.stages == ["verify", "extract", "valtree", "flatten", "synsets", "torchvision",
                           "card", "total"]


def test_report_from_shards_alone(shards_only, small_replica):
    meta = replica_json(small_replica)
    assert not (shards_only / "train").exists() and not (shards_only / "val").exists()
    path = shards_only / "report.html"
    page = read_page(path)
    assert_common(page, meta)
    assert_self_contained(path, page)
    assert page.rows["tfrecord_train"]["count"] == str(meta["counts"]["train"])
    assert page.rows["tfrecord_val"]["count"] == str(meta["counts"]["val"])
    truth = devkit_truth(small_replica)
    for wnid, names in page.contact("val").items():
        assert {truth[n] for n in names} == {wnid}
    # the TFRecord run's record lists every converted file; thumbnails come from the shards
    found = {(c["data-split"], c["data-file"]) for c in page.cards}
    assert found == expected_converted(meta)
    assert {c["data-found-by"] for c in page.cards} == {"tfrecord"}
    assert {a["data-file"] for a in page.imgs if a["data-section"] == "converted"} == {
        n for _, n in found}


def test_swapped_validation_folders_show_on_the_contact_sheet(small_replica, tmp_path):
    ds = tmp_path / "ds"
    extract(small_replica, ds, workers=1)
    valtree(ds, small_replica)
    meta = replica_json(small_replica)
    a, b = meta["wnids"][1], meta["wnids"][2]
    val = ds / "val"
    os.rename(val / a, val / "swap")
    os.rename(val / b, val / a)
    os.rename(val / "swap", val / b)
    build_report(ds, classes=len(meta["wnids"]), check=False, workers=1)
    page = read_page(ds / "report.html")
    truth = devkit_truth(small_replica)
    rows = page.contact("val")
    assert set(rows) == set(meta["wnids"])
    for wnid, names in rows.items():
        true = {truth[n] for n in names}
        assert true == ({b} if wnid == a else {a} if wnid == b else {wnid}), wnid
    # the train rows are untouched, so each swapped class pairs its own train images with
    # validation images of the other class
    for wnid, names in page.contact("train").items():
        assert all(n.startswith(wnid + "_") for n in names)
    # the box XMLs (bbox_val/) name the true class: the page frames exactly the swapped rows
    framed = {(m["data-wnid"], m["data-file"]) for m in page.imgs if "mismatch" in m.get(
        "class", "")}
    assert framed == {(w, n) for w in (a, b) for n in rows[w]}
    box = page.ids["box-check"]
    assert box["data-wrong"] == str(len(framed)) and box["class"] == "bad"


def test_prepare_no_report(small_replica, tmp_path):
    ds = tmp_path / "ds"
    assert main(["prepare", "--archives", str(small_replica), "--out", str(ds),
                 "--only", "pytorch", "--no-report", "--workers", "1"]) == 0
    assert (ds / "train").is_dir() and not (ds / "report.html").exists()


def test_same_page_whatever_the_workers(shards_only, tmp_path):
    one, two = tmp_path / "one.html", tmp_path / "two.html"
    build_report(shards_only, one, check=False, workers=1)
    build_report(shards_only, two, check=False, workers=2)
    assert one.read_bytes() == two.read_bytes()


def test_seed_and_counts_options(prepared, tmp_path, small_replica):
    out = tmp_path / "r.html"
    proc = run_cli("report", prepared, "--out", out, "--classes", "2", "--per-class", "3",
                   "--seed", "5", "--sample", "10", "--no-check", "--json")
    r = json.loads(proc.stdout)
    assert r["path"] == str(out) and r["bytes"] == out.stat().st_size
    page = read_page(out)
    assert len(page.contact("train")) == 2 and r["classes_shown"] == sorted(page.contact("val"))
    assert all(len(v) == 3 for v in page.contact("train").values())
    assert page.sampled["train"]["data-sampled"] == "10"
    assert page.ids["check"]["data-ok"] == "unknown"


def test_flat_val_without_shards(small_replica, tmp_path):
    """Validation images not yet grouped: the page says so and shows train rows only."""
    ds = tmp_path / "ds"
    extract(small_replica, ds, splits=("train", "val"), workers=1)
    build_report(ds, check=False, workers=1)
    page = read_page(ds / "report.html")
    meta = replica_json(small_replica)
    assert page.rows["val"]["count"] == str(meta["counts"]["val"])
    assert page.rows["val"]["classes"] is None
    assert page.contact("val") == {} and sorted(page.contact("train")) == meta["wnids"]


def test_foreign_report_file_is_not_replaced(prepared, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(prepared, ds, symlinks=True)
    (ds / "report.html").write_text("my own notes\n")
    proc = run_cli("report", ds, "--no-check", check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "report.html" in proc.stderr and "not written by imagenet-prep" in proc.stderr
    assert (ds / "report.html").read_text() == "my own notes\n"


def test_nothing_to_report(tmp_path):
    proc = run_cli("report", tmp_path, check=False)
    assert proc.returncode == 1 and "nothing to report on" in proc.stderr
    proc = run_cli("report", tmp_path / "missing", check=False)
    assert proc.returncode == 1 and "not a folder" in proc.stderr
    assert not (tmp_path / "missing").exists()


def test_shard_scan_reads_records_of_any_key_order(tmp_path):
    """Records whose keys are not in our writer's order (TensorFlow's may be) are read whole."""
    from imagenet_prep.formats.tfrecord import (
        bytes_feature,
        encode_example,
        frame,
        int64_feature,
        peek,
    )
    from imagenet_prep.report.shards import ScanTask, scan_shard

    jpeg = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(jpeg, "JPEG")
    records = []
    for i, label in enumerate((3, 7, 3)):
        features = {"image/encoded": bytes_feature([jpeg.getvalue()]),
                    "image/class/label": int64_feature([label]),
                    "image/filename": bytes_feature([f"f{i}.JPEG".encode()])}
        sorted_data = encode_example(features)
        # the same Example with its entries reversed (an Example's features may be split
        # over several fields; parsers merge them)
        reversed_data = b"".join(encode_example({k: features[k]}) for k in sorted(features)[::-1])
        assert peek(sorted_data).label == label
        assert peek(reversed_data).label is None  # the image comes first: read it whole
        records.append(frame(reversed_data))
    shard = tmp_path / "train-00000-of-00001"
    shard.write_bytes(b"".join(records))
    r = scan_shard(ScanTask(0, shard, 1.0, "k", frozenset({"f1.JPEG"})))
    assert r.counts == {3: 2, 7: 1} and r.problems == []
    assert r.sample == [(40, 30, len(jpeg.getvalue()))] * 3
    assert list(r.found) == ["f1.JPEG"] and [len(v) for v in r.firsts.values()] == [2, 1]
    shard.write_bytes(b"".join(records)[:-7])
    assert "truncated" in scan_shard(ScanTask(0, shard, 0.0, "k", frozenset())).problems[0]


def test_a_record_damaged_past_its_head_is_a_problem_on_the_page(shards_only, tmp_path):
    """The scan reads each record's head; a contact-sheet record damaged further on (a key
    that is not text) is listed among the page's read problems instead of stopping it."""
    ds = tmp_path / "ds"
    shutil.copytree(shards_only, ds)
    shards = sorted(ds.glob("tfrecord_train/*-of-*"))  # the validation shards stay whole
    for shard in shards:  # every record's file name key, at the same length
        shard.write_bytes(shard.read_bytes().replace(b"image/filename", b"image/fil\xffname"))
    assert main(["report", str(ds), "--workers", "1", "--no-check"]) == 0
    html = (ds / "report.html").read_text()
    assert 'id="read-problems"' in html and ": record at byte " in html
    assert_thumbnails_decode(read_page(ds / "report.html"))
