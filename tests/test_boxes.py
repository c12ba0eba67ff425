"""The box CSV equals what TensorFlow's process_bounding_boxes.py prints, quirks included.

`helpers.reference_run` is a transcription of the reference script (inception copy,
docs/boxes.md) working on in-memory files; the code under test is compared with it.
"""

from __future__ import annotations

import random
import re
import tarfile
from pathlib import Path

import pytest
from helpers import reference_boxes, reference_run
from tarutil import add_file

from imagenet_prep.cli import main
from imagenet_prep.errors import PrepError, UnsafeArchiveError
from imagenet_prep.folders.bbox_csv import CSV_NAME, write_bbox_csv
from imagenet_prep.sources import boxes, metadata
from imagenet_prep.sources.boxes import csv_lines, is_box_xml_path

W = metadata.wnids()
A, B, C = W[0], W[1], W[2]  # challenge classes
OUTSIDE = "n00007846"  # a WNID outside the challenge


# --- quirky XMLs ---------------------------------------------------------------------

def xml(folder: str, filename: str, size, objects, extra: str = "") -> bytes:
    w, h = size
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, (x0, y0, x1, y1) in objects
    )
    return (f"<annotation><folder>{folder}</folder><filename>{filename}</filename>"
            f"<source><database>ILSVRC_2012</database></source><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size><segmented>0</segmented>"
            f"{extra}{objs}</annotation>").encode()


QUIRKS: dict[str, bytes] = {
    f"{A}/{A}_1.xml": xml(A, f"{A}_1", (500, 375), [(A, (10, 20, 300, 200))]),
    f"{A}/{A}_2.xml": xml(A, f"{A}_2", (500, 375), [(A, (0, 0, 500, 375)), (A, (5, 6, 7, 8)),
                                                     (A, (100, 100, 50, 50))]),  # reversed
    f"{A}/{A}_3.xml": xml(A, "%s", (333, 500), [(A, ("12.7", " 30.2 ", "200.9", "499.99"))]),
    f"{A}/{A}_4.xml": xml(A, f"{A}_4", (200, 100), [(A, (-20, -5, 250, 130))]),  # outside
    f"{A}/{A}_5.xml": xml(A, f"{A}_5", (200, 100), [(A, (210, 10, 260, 50)),  # degenerate
                                                     (A, (10, 10, 10, 50))]),  # zero width
    f"{A}/{A}_6.xml": xml(A, f"{A}_6", (640, 480), [(B, (1, 2, 3, 4)), (A, (5, 6, 70, 80))]),
    f"{A}/{A}_7.xml": xml(A, f"{A}_7", (640, 480), [(B, (1, 2, 30, 40))]),  # all rejected
    f"{B}/{B}_1.xml": xml(B, f"{B}_1", (640, 480), [("Scottish_deerhound", (1, 2, 30, 40))]),
    f"{B}/{B}_2.xml": xml(B, f"{B}_2", (640, 480), [(OUTSIDE, (1, 2, 30, 40))]),
    f"{B}/{B}_3.xml": xml(B, f"{B}_3", (640, 480), [(B, (10, 10, 40, 40)), (B, (-1, 5, 9, 9)),
                                                     (B, (50, 50, 90, 90))]),  # -1 ends the count
    f"{B}/{B}_4.xml": xml(B, f"{B}_4", (640, 480), [(B, ("-1.7", 5, 90, 90)), (B, (1, 1, 9, 9))]),
    f"{B}/{B}_5.xml": xml(B, f"{B}_5", (640, 480), []),  # no objects: a skipped file
    f"{B}/n09999999_1.xml": xml(B, "n09999999_1", (100, 100), [(B, (1, 1, 50, 50))]),
    f"{C}/{C}_1.xml": (b'<?xml version="1.0" encoding="utf-8"?>\n'
                       + xml(C, f"{C}_1", (120, 90), [(C, (1, 1, 119, 89))])),
    f"{C}/{C}_2.xml": (f"<annotation><filename>{C}_2</filename><size><width>100</width>"
                       f"<height>50</height></size><object><bndbox><xmin>10</xmin><ymin>5</ymin>"
                       f"<xmax>60</xmax><ymax>45</ymax></bndbox></object></annotation>").encode(),
    f"{C}/{C}_3.xml": xml(C, f"{C}_3", (100, 100), [(C, (1, 1, 50, 50))],  # first width wins
                          extra="<extra><width>50</width><height>200</height></extra>"),
    f"{OUTSIDE}/{OUTSIDE}_1.xml": xml(OUTSIDE, f"{OUTSIDE}_1", (50, 50), [(OUTSIDE, (1, 1, 9, 9))]),
    f"{OUTSIDE}/broken.xml": b"<annotation><unclosed>",  # never parsed: outside the challenge
    # not matched by the reference's glob <dir>/*/*.xml
    f"{A}/{A}_9.XML": xml(A, f"{A}_9", (10, 10), [(A, (1, 1, 5, 5))]),
    f"{A}/.{A}_9.xml": xml(A, f"{A}_9", (10, 10), [(A, (1, 1, 5, 5))]),
    f"{A}/deeper/{A}_9.xml": xml(A, f"{A}_9", (10, 10), [(A, (1, 1, 5, 5))]),
    "top.xml": xml(A, "top", (10, 10), [(A, (1, 1, 5, 5))]),
    f"{A}/notes.txt": b"not an XML",
}


def challenge() -> set[str]:
    return set(metadata.wnids())


def write_gz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            add_file(tf, name, data)
    return path


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


# --- tests ---------------------------------------------------------------------------

@pytest.mark.parametrize("rel", [r for r in QUIRKS if is_box_xml_path(r)])
def test_each_file_matches_reference(rel):
    want, counts = reference_run({rel: QUIRKS[rel]}, challenge())
    data = QUIRKS[rel] if rel.split("/")[0] in challenge() else None
    lines, got = csv_lines(rel, data, frozenset(challenge()), rel)
    assert lines == want
    assert (got.files, got.files_skipped, got.boxes_skipped, got.boxes_written,
            got.files_written) == tuple(counts[k] for k in (
                "xml_files", "files_skipped", "boxes_skipped", "boxes_written", "images"))


def test_glob_rule():
    matched = {r for r in QUIRKS if is_box_xml_path(r)}
    assert f"{A}/{A}_9.XML" not in matched and "top.xml" not in matched
    assert f"{A}/.{A}_9.xml" not in matched and f"{A}/deeper/{A}_9.xml" not in matched
    assert len(matched) == 18


@pytest.mark.parametrize("route", ["archive", "folder"])
@pytest.mark.parametrize("workers", [1, 2])
def test_csv_equals_sorted_reference_output(tmp_path, route, workers, capsys):
    ds = tmp_path / "ds"
    ds.mkdir()
    arch = tmp_path / "archives"
    arch.mkdir()
    if route == "archive":
        write_gz(arch / "ILSVRC2012_bbox_train_v2.tar.gz", QUIRKS)
    else:
        write_tree(ds / "bbox_train", QUIRKS)
    summary = write_bbox_csv(ds, archives=arch, workers=workers)
    want, counts = reference_run(QUIRKS, challenge())
    assert (ds / CSV_NAME).read_text() == "".join(sorted(want))
    assert {k: summary[k] for k in counts} == counts
    assert counts == {"xml_files": 18, "files_skipped": 7, "boxes_skipped": 5,
                      "boxes_written": 13, "images": 11}
    err = capsys.readouterr().err
    assert "Skipped 7 XML files not in ImageNet Challenge." in err
    assert "Wrote 13 bounding boxes from 11 annotated images." in err
    again = write_bbox_csv(ds, archives=arch, workers=workers)
    assert again["skipped"] and again["boxes_written"] == 13


def test_rerun_rewrites_a_damaged_csv(tmp_path):
    ds = tmp_path / "ds"
    write_tree(ds / "bbox_train", QUIRKS)
    write_bbox_csv(ds, workers=1)
    good = (ds / CSV_NAME).read_bytes()
    (ds / CSV_NAME).write_bytes(good[:-10])
    assert not write_bbox_csv(ds, workers=1)["skipped"]
    assert (ds / CSV_NAME).read_bytes() == good


@pytest.mark.parametrize("body, message", [
    (b"<annotation><size>", "not a readable XML file"),
    (xml(A, "x", (0, 375), [(A, (1, 2, 3, 4))]), "image size is 0x375"),
    (xml(A, "x", (10, 10), [(A, ("ten", 2, 3, 4))]), "<xmin> is not a number: 'ten'"),
    (xml(A, "x", (10, 10), [(A, (1, 2, "nan", 4))]), "<xmax> is not a number"),
    (b"<annotation><size><width>5</width><height>5</height></size><object><bndbox>"
     b"<xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>",
     "no <filename> text"),
])
def test_files_the_reference_stops_on(tmp_path, body, message):
    ds = tmp_path / "ds"
    write_tree(ds / "bbox_train", {f"{A}/{A}_1.xml": QUIRKS[f"{A}/{A}_1.xml"],
                                   f"{B}/{B}_bad.xml": body})
    with pytest.raises(PrepError, match=rf"{B}_bad\.xml: .*{re.escape(message)}"):
        write_bbox_csv(ds, workers=1)
    assert not (ds / CSV_NAME).exists()
    assert not list(ds.glob(".*.ipart"))


def test_unsafe_archive_members_are_refused(tmp_path):
    arch = tmp_path / "archives"
    arch.mkdir()
    with tarfile.open(arch / "ILSVRC2012_bbox_train_v2.tar.gz", "w:gz") as tf:
        add_file(tf, f"{A}/{A}_1.xml", QUIRKS[f"{A}/{A}_1.xml"])
        add_file(tf, f"../{A}_2.xml", QUIRKS[f"{A}/{A}_2.xml"])
    with pytest.raises(UnsafeArchiveError, match="points outside"):
        write_bbox_csv(tmp_path / "ds", archives=arch, workers=1)
    with tarfile.open(arch / "ILSVRC2012_bbox_train_v2.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo(f"{A}/{A}_3.xml")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(PrepError, match="is a symbolic link; refused"):
        write_bbox_csv(tmp_path / "ds", archives=arch, workers=1)


def test_no_source_is_a_clear_error(tmp_path):
    with pytest.raises(PrepError, match="no box XMLs"):
        write_bbox_csv(tmp_path / "ds", archives=tmp_path, workers=1)


def test_cli(tmp_path, capsys):
    arch = tmp_path / "archives"
    arch.mkdir()
    write_gz(arch / "ILSVRC2012_bbox_train_v2.tar.gz", QUIRKS)
    ds = tmp_path / "ds"
    assert main(["bbox", str(ds), "--archives", str(arch), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "13 boxes from 11 images" in out
    assert main(["bbox", str(ds), "--archives", str(arch)]) == 0
    assert "already complete" in capsys.readouterr().out


# --- the fast scanner reads what ElementTree reads -------------------------------------

_PLAIN = QUIRKS[f"{A}/{A}_1.xml"]


def _with(old: bytes, new: bytes) -> bytes:
    assert old in _PLAIN
    return _PLAIN.replace(old, new, 1)


TRICKY = {
    "attribute": _with(b"<xmin>", b'<xmin unit="px">'),
    "space in tag": _with(b"<xmin>", b"<xmin >"),
    "self-closing": _with(b"<xmin>10</xmin>", b"<xmin/>"),
    "empty element": _with(b"<xmin>10</xmin>", b"<xmin></xmin>"),
    "comment in text": _with(b"<xmin>10</xmin>", b"<xmin>1<!-- c -->0</xmin>"),
    "cdata": _with(b"<xmin>10</xmin>", b"<xmin><![CDATA[10]]></xmin>"),
    "entity": _with(b"<xmin>10</xmin>", b"<xmin>&#49;0</xmin>"),
    "default namespace": _with(b"<annotation>", b'<annotation xmlns="urn:x">'),
    "prefixed name": _with(b"<xmin>10</xmin>", b'<p:xmin xmlns:p="urn:p">10</p:xmin>'),
    "unbound prefix": _with(b"<xmin>10</xmin>", b"<p:xmin>10</p:xmin>"),
    "crlf": _PLAIN.replace(b"><", b">\r\n<"),
    "cr in text": _with(b"<name>" + A.encode(), b"<name>\r" + A.encode()),
    "utf-8 text": _with(b"<name>" + A.encode(), "<name>Hündin".encode()),
    "latin-1 bytes": _with(b"<name>" + A.encode(), b"<name>H\xfcndin"),
    "bom": b"\xef\xbb\xbf" + _PLAIN,
    "declaration": b'<?xml version="1.0"?>\n' + _PLAIN,
    "two roots": _PLAIN + b"<annotation/>",
    "text after root": _PLAIN + b"junk",
    "whitespace around": b" \n\t" + _PLAIN + b"\n ",
    "unclosed": _PLAIN[:-14],
    "mismatched": _with(b"</xmin>", b"</ymin>"),
    "child in xmin": _with(b"<xmin>10</xmin>", b"<xmin>1<b>2</b>0</xmin>"),
    "longer tag name": _with(b"<xmin>10</xmin>", b"<xmin>10</xmin><xminimum>3</xminimum>"),
    "field as root": b"<xmin>5</xmin>",
    "nul": _with(b"<xmin>10", b"<xmin>1\x000"),
    "control char": _with(b"<xmin>10", b"<xmin>1\x0b0"),
    "gt in text": _with(b"<xmin>10", b"<xmin>10>"),
    "cdata end in text": _with(b"<xmin>10", b"<xmin>10]]>"),
    "utf-16": _PLAIN.decode().encode("utf-16"),
    "empty": b"",
    # documents of the ILSVRC layout itself, which the scanner matches whole
    "indented layout": _PLAIN.replace(b"><", b">\n\t\t<"),
    "no source": _with(b"<source><database>ILSVRC_2012</database></source>", b""),
    "no objects": xml(A, "x", (10, 10), []),
    "three objects": xml(A, "x", (50, 40), [(A, (1, 2, 3, 4)), (B, ("5.5", 6, 7, 8)),
                                             ("Scottish_deerhound", (9, 10, 11, 12))]),
    "empty coordinate": _with(b"<ymin>20</ymin>", b"<ymin></ymin>"),
    "spaces in text": _with(b"<ymin>20</ymin>", b"<ymin> 2 0 </ymin>"),
    "del in text": _with(b"<name>" + A.encode(), b"<name>\x7f" + A.encode()),
    "form feed between": _with(b"<size>", b"<size>\x0c"),
    "bracket in text": _with(b"<xmin>10", b"<xmin>[10]"),
    "tag outside layout": _with(b"<segmented>", b"<note>x</note><segmented>"),
}


# The cases the scanner reads itself; it must decline (None) every other one and leave it
# to ElementTree.  Most tricky cases are meant to be declined: "any doubt returns None".
SCANNED = {
    "empty element", "whitespace around", "child in xmin", "longer tag name", "field as root",
    "gt in text", "indented layout", "no source", "no objects", "three objects",
    "empty coordinate", "spaces in text", "del in text", "bracket in text", "tag outside layout",
}


def _tree_or_error(data: bytes):
    try:
        return boxes._tree_fields(data, "x")
    except PrepError:
        return "error"


def _parsed_or_error(data: bytes):
    """(label, xmin, ymin, xmax, ymax) per box as parse_boxes reads them, or "error"."""
    try:
        label, found = boxes.parse_boxes(data, "x")
    except PrepError:
        return "error"
    return [(label, *box) for box in found]


def _reference_or_error(data: bytes):
    try:
        return reference_boxes(data)
    except Exception:  # the script stops: unparsable XML, not a number, no size, no filename
        return "error"


def test_tricky_cases_are_listed():
    assert SCANNED < set(TRICKY)


@pytest.mark.parametrize("case", list(TRICKY))
def test_scanner_agrees_with_elementtree(case):
    """The scanner reads the case exactly as ElementTree does, or declines it, as listed;
    either way the boxes (or the refusal) are the reference's."""
    data = TRICKY[case]
    fast = boxes._scan_fields(data)
    if case in SCANNED:
        assert fast is not None and fast == boxes._tree_fields(data, "x")
    else:
        assert fast is None
    assert _parsed_or_error(data) == _reference_or_error(data)


def test_scanner_reads_ordinary_files():
    ordinary = [d for r, d in QUIRKS.items() if is_box_xml_path(r) and not d.startswith(b"<?")
                and r != f"{OUTSIDE}/broken.xml"]
    for data in ordinary:
        assert boxes._scan_fields(data) == boxes._tree_fields(data, "x")
    assert boxes._scan_fields(TRICKY["whitespace around"]) is not None
    assert boxes._LAYOUT.fullmatch(_PLAIN) and boxes._LAYOUT.fullmatch(TRICKY["three objects"])
    assert not boxes._LAYOUT.fullmatch(TRICKY["tag outside layout"])  # read the other way
    assert boxes._scan_fields(TRICKY["tag outside layout"]) is not None


def test_scanner_agrees_on_random_edits():
    rng = random.Random(6)
    pieces = [b"<xmin>7</xmin>", b"<xmin>-1</xmin>", b"<xmin></xmin>", b"<xmin/>", b"<b/>",
              b"<name>" + B.encode() + b"</name>", b"<width>0</width>", b"<height> 9 </height>",
              b"<b><ymax>3.5</ymax></b>", b"<filename></filename>", b"text", b"\n\t", b" ",
              b"<xmin a='1'>2</xmin>", b"<", b"&amp;", b"<!-- c -->"]
    sources = [d for d in QUIRKS.values() if d.startswith(b"<annotation>")]
    answered = 0
    for _ in range(3000):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 3)):
            ends = [i + 1 for i, c in enumerate(data) if c == ord(">")]
            at = rng.choice(ends)
            if rng.random() < 0.8:
                data[at:at] = rng.choice(pieces)
            else:
                del data[at:at + rng.randint(1, 30)]
        fast = boxes._scan_fields(bytes(data))
        if fast is not None:
            answered += 1
            assert fast == _tree_or_error(bytes(data)), bytes(data)
    assert answered > 1000  # the scanner is exercised, not bypassed
