"""Box XML -> CSV lines, by the rules of TensorFlow's process_bounding_boxes.py (inception copy).

The rules are the reference's, quirks included (docs/boxes.md), because the
CSV must equal what the reference prints for the same XMLs:

- the class of a file is its parent directory; files of other directories are
  skipped unparsed;
- items are found anywhere in the document, in document order (`root.iter`):
  the number of boxes is the number of `xmin` elements, counted until one reads
  as -1 (`int(float(text))`, so a literal `-1` or `-1.5` ends the count); box i
  takes the i-th `xmin`/`ymin`/`xmax`/`ymax`, a missing one reads as -1;
- the size is the first `width`/`height`, the label the first `name` (-1 when
  absent); coordinates and size are truncated to integers (`int(float(text))`);
- per box: divide by the XML size, (min, max) per axis, clamp to [0, 1]; skip a
  box whose label differs from the directory WNID and is itself a challenge
  WNID, then a degenerate one (min >= max); print `%.4f`;
- the image name is the XML file name with `.xml` replaced by `.JPEG`.

Where the reference crashes (unparsable XML, a missing `filename` element, text
that is not a number, a zero width), this raises a PrepError naming the file.
"""

from __future__ import annotations

import io
import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.parsers import expat

import numpy as np

from imagenet_prep.errors import PrepError
from imagenet_prep.runtime.storage import RemotePath, open_input

_MISSING = -1  # what the reference's GetItem returns for an absent element


class BoxXMLError(PrepError):
    """A box XML the reference script would stop on."""


@dataclass
class BoxCounts:
    """The reference's four counters, plus the number of XML files seen."""

    files: int = 0
    boxes_written: int = 0
    boxes_skipped: int = 0
    files_skipped: int = 0
    files_written: int = 0

    def add(self, other: BoxCounts) -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


def is_box_xml_path(rel: str) -> bool:
    """True for `WNID/NAME.xml`, exactly what the reference's glob `<dir>/*/*.xml` matches."""
    parts = rel.split("/")
    return (len(parts) == 2 and parts[0][:1] not in ("", ".") and parts[1][:1] not in ("", ".")
            and parts[1].endswith(".xml"))


_FIELDS = ("xmin", "ymin", "xmax", "ymax", "width", "height", "name", "filename")
_INDEX_B = {name.encode(): i for i, name in enumerate(_FIELDS)}
_INDEX = {name: i for i, name in enumerate(_FIELDS)}
Fields = tuple[list, list, list, list, list, list, list, list]  # texts per _FIELDS entry

# 1. The layout of the ILSVRC box files, matched whole.  Character data here is ASCII
#    without markup, references, `]` (so no `]]>`), CR (which XML would normalise) or
#    control characters, and whitespace between elements is XML whitespace, so a
#    document that matches is well-formed by construction and each element's text
#    (ElementTree's `.text`) is exactly the captured bytes (None when empty).
_TEXT = rb"([^<&\]\x00-\x08\x0b\x0c\x0e-\x1f\r]*)"
_WS = rb"[ \t\n]*"


def _leaf(tag: bytes, capture: bool = False, optional: bool = False) -> bytes:
    text = _TEXT if capture else _TEXT.replace(b"(", b"(?:", 1)
    leaf = b"<" + tag + b">" + text + b"</" + tag + b">" + _WS
    return b"(?:" + leaf + b")?" if optional else leaf


def _object(capture: bool) -> bytes:
    return (b"<object>" + _WS + _leaf(b"name", capture)
            + b"".join(_leaf(t, optional=True) for t in (b"pose", b"truncated", b"difficult"))
            + b"<bndbox>" + _WS + b"".join(_leaf(t, capture) for t in _COORDS)
            + b"</bndbox>" + _WS + b"</object>" + _WS)


_COORDS = (b"xmin", b"ymin", b"xmax", b"ymax")
_LAYOUT = re.compile(
    _WS + b"<annotation>" + _WS + _leaf(b"folder", optional=True) + _leaf(b"filename", True)
    + b"(?:<source>" + _WS + _leaf(b"database") + b"</source>" + _WS + b")?"
    + b"<size>" + _WS + _leaf(b"width", True) + _leaf(b"height", True)
    + _leaf(b"depth", optional=True) + b"</size>" + _WS + _leaf(b"segmented", optional=True)
    + b"((?:" + _object(False) + b")*)</annotation>" + _WS)
_OBJECT = re.compile(_object(True))

# 2. Any other ASCII document: the field tags found by a pattern, once expat (the parser
#    under ElementTree, with its namespace setting) has accepted the document.  A start
#    tag `<xmin>` is followed by its text up to the next `<`; `<xmin` followed by an
#    attribute, a space or `/>` goes to ElementTree.
_FIELD_TAG = re.compile(rb"<(xmin|ymin|xmax|ymax|width|height|name|filename)(>([^<]*)|[\s/])")
# What this pattern does not model: entities, CDATA, comments, PIs and declarations,
# namespaces, carriage returns (normalised by XML), NUL (a UTF-16 signature).
_UNUSUAL = (b"&", b"<!", b"<?", b"xmlns", b"\r", b"\x00")


def _text(raw: bytes) -> str | None:
    return raw.decode("ascii") if raw else None


def _scan_fields(data: bytes) -> Fields | None:
    """The texts of every field element in document order, or None to use ElementTree.

    Equal to `_tree_fields` whenever it answers (tests/test_boxes.py checks tricky
    documents and thousands of random edits); any doubt returns None.
    """
    if not data.isascii():
        return None
    m = _LAYOUT.fullmatch(data)
    if m is not None:
        objects = _OBJECT.findall(data, m.start(4), m.end(4))
        return ([_text(o[1]) for o in objects], [_text(o[2]) for o in objects],
                [_text(o[3]) for o in objects], [_text(o[4]) for o in objects],
                [_text(m[2])], [_text(m[3])], [_text(o[0]) for o in objects], [_text(m[1])])
    if any(u in data for u in _UNUSUAL):
        return None
    try:
        expat.ParserCreate(None, "}").Parse(data, True)
    except expat.ExpatError:
        return None
    fields: Fields = ([], [], [], [], [], [], [], [])
    index = _INDEX_B
    for tag, sep, text in _FIELD_TAG.findall(data):
        if sep[:1] != b">":
            return None
        fields[index[tag]].append(_text(text))
    return fields


def _tree_fields(data: bytes, where: str) -> Fields:
    """The same texts through ElementTree (`root.iter()`, as the reference walks it)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise BoxXMLError(f"{where}: not a readable XML file ({e})") from None
    fields: Fields = ([], [], [], [], [], [], [], [])
    index = _INDEX
    for e in root.iter():
        i = index.get(e.tag)  # type: ignore[call-overload]
        if i is not None:
            fields[i].append(e.text)
    return fields


def _int(text: str | None | int, what: str, where: str) -> int:
    """The reference's GetInt: int(float(text)), -1 for a missing element."""
    if isinstance(text, int):
        return text
    try:
        return int(float(text))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise BoxXMLError(f"{where}: <{what}> is not a number: {text!r}") from None


def _nth(items: list[str | None], i: int) -> str | None | int:
    return items[i] if i < len(items) else _MISSING


def parse_boxes(data: bytes, where: str) -> tuple[Any, list[tuple[float, float, float, float]]]:
    """(label, boxes) of one XML: label is the first `name` text (or -1), boxes are
    (xmin, ymin, xmax, ymax) normalised, ordered and clamped as the reference does."""
    fields = _scan_fields(data) or _tree_fields(data, where)
    xmins, ymins, xmaxs, ymaxs, widths, heights, names, filenames = fields
    xs = []
    for text in xmins:  # boxes are counted up to the first xmin that reads as -1
        x = _int(text, "xmin", where)
        if x == _MISSING:
            break
        xs.append(x)
    label = _nth(names, 0)
    if not xs:
        return label, []
    width = _int(_nth(widths, 0), "width", where)
    height = _int(_nth(heights, 0), "height", where)
    if not isinstance(_nth(filenames, 0), str):  # the reference computes filename + '.JPEG'
        raise BoxXMLError(f"{where}: no <filename> text")
    if width == 0 or height == 0:
        raise BoxXMLError(f"{where}: image size is {width}x{height}")
    fw, fh = float(width), float(height)
    boxes = []
    for i, x in enumerate(xs):
        xmin = float(x) / fw
        ymin = float(_int(_nth(ymins, i), "ymin", where)) / fh
        xmax = float(_int(_nth(xmaxs, i), "xmax", where)) / fw
        ymax = float(_int(_nth(ymaxs, i), "ymax", where)) / fh
        x0, x1 = (xmin, xmax) if xmin <= xmax else (xmax, xmin)
        y0, y1 = (ymin, ymax) if ymin <= ymax else (ymax, ymin)
        boxes.append((min(max(x0, 0.0), 1.0), min(max(y0, 0.0), 1.0),
                      min(max(x1, 0.0), 1.0), min(max(y1, 0.0), 1.0)))
    return label, boxes


def _lines(rel: str, data: bytes, challenge: frozenset[str] | set[str] | None, where: str
           ) -> tuple[list[str], int]:
    """(the reference's lines, boxes it skips) for a file of a class it reads."""
    wnid, base = rel.split("/")
    label, boxes = parse_boxes(data, where)
    image = (base[:-4] if base.endswith(".xml") else posixpath.splitext(base)[0]) + ".JPEG"
    if challenge is not None and label != wnid and label in challenge:
        return [], len(boxes)  # every box of the file carries the same (other) label
    lines = [f"{image},{x0:.4f},{y0:.4f},{x1:.4f},{y1:.4f}\n"
             for x0, y0, x1, y1 in boxes if x0 < x1 and y0 < y1]
    return lines, len(boxes) - len(lines)


def csv_lines(
    rel: str, data: bytes | None, challenge: frozenset[str] | set[str] | None, where: str,
) -> tuple[list[str], BoxCounts]:
    """The reference's output lines and counters for the XML `WNID/NAME.xml` (`rel`).

    `data` may be None for a file outside `challenge` (it is skipped unread).
    """
    counts = BoxCounts(files=1)
    if challenge is not None and rel.split("/")[0] not in challenge:
        counts.files_skipped = 1
        return [], counts
    assert data is not None
    lines, counts.boxes_skipped = _lines(rel, data, challenge, where)
    counts.boxes_written = len(lines)
    if lines:
        counts.files_written = 1
    else:
        counts.files_skipped = 1
    return lines, counts


def parse_batch(
    batch: tuple[Iterable[tuple[str, bytes | None, str]], frozenset[str] | None],
) -> tuple[list[str], BoxCounts]:
    """A pool task: lines and summed counters of (rel, data, where) items.

    When data is None the file is read here, in the worker, from `where`.
    """
    items, challenge = batch
    lines: list[str] = []
    files = files_skipped = boxes_skipped = files_written = 0
    for rel, data, where in items:
        files += 1
        if challenge is not None and rel.split("/", 1)[0] not in challenge:
            files_skipped += 1
            continue
        if data is None:
            try:
                with open(where, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise BoxXMLError(f"{where}: cannot read: {e.strerror}") from None
        more, skipped = _lines(rel, data, challenge, where)
        boxes_skipped += skipped
        if more:
            lines += more
            files_written += 1
        else:
            files_skipped += 1
    return lines, BoxCounts(files=files, boxes_written=len(lines), boxes_skipped=boxes_skipped,
                            files_skipped=files_skipped, files_written=files_written)


def parse_csv(text: str, where: str) -> Iterator[tuple[str, tuple[float, float, float, float]]]:
    """(image name, box) per CSV line, in file order, as build_imagenet_data.py reads them."""
    for n, line in enumerate(text.splitlines(), 1):
        if line:
            yield _csv_row(line, where, n)


def _csv_row(line: str, where: str, n: int) -> tuple[str, tuple[float, float, float, float]]:
    parts = line.split(",")
    if len(parts) != 5:
        raise PrepError(f"{where}:{n}: expected 5 comma-separated fields, got {len(parts)}")
    try:
        box = (float(parts[1]), float(parts[2]), float(parts[3]), float(parts[4]))
    except ValueError:
        raise PrepError(f"{where}:{n}: not a number in {line!r}") from None
    return parts[0], box


def read_csv_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(image name per box line as bytes, boxes as (n, 4) float64) of a box CSV, in file order.

    Arrays rather than a dict of lists: the 615k boxes of ILSVRC2012 cost ~40 MB this way
    and ~250 MB as Python objects.  Read a block of lines at a time.
    """
    names: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    n0 = 0
    with (io.TextIOWrapper(open_input(path), encoding="ascii", errors="replace")
          if isinstance(path, RemotePath) else
          open(path, encoding="ascii", errors="replace")) as f:
        while lines := f.readlines(1 << 22):
            rows = [_csv_row(line.rstrip("\n"), str(path), n)
                    for n, line in enumerate(lines, n0 + 1) if line.strip()]
            n0 += len(lines)
            names.append(np.array([r[0].encode() for r in rows], dtype=bytes))
            boxes.append(np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 4))
    if not names:
        return np.zeros(0, dtype="S1"), np.zeros((0, 4), dtype=np.float64)
    width = max(a.dtype.itemsize for a in names)
    return np.concatenate([a.astype(f"S{width}") for a in names]), np.concatenate(boxes)


def boxes_of(names: np.ndarray, csv_names: np.ndarray, csv_boxes: np.ndarray,
             dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(boxes per image, their boxes in image order, CSV order within an image) for the
    images `names` (bytes array), found by binary search in the CSV's names.

    Temporaries stay a few arrays of one number per image: the CSV (sorted, as `bbox`
    writes it) is searched in place, and only its names are widened to the images'.
    """
    if len(csv_names) > 1 and not np.all(csv_names[:-1] <= csv_names[1:]):
        order = np.argsort(csv_names, kind="stable")  # a CSV not in byte order
        csv_names, csv_boxes = csv_names[order], csv_boxes[order]
    if csv_names.dtype.itemsize < names.dtype.itemsize:
        csv_names = csv_names.astype(names.dtype)
    elif csv_names.dtype.itemsize > names.dtype.itemsize:
        names = names.astype(csv_names.dtype)
    lo = np.searchsorted(csv_names, names, side="left")
    counts = (np.searchsorted(csv_names, names, side="right") - lo).astype(np.int32)
    # the CSV rows of each image's boxes, concatenated: lo[i], ..., lo[i] + counts[i] - 1
    firsts = np.repeat(lo[counts > 0], counts[counts > 0])
    within = np.arange(len(firsts)) - np.repeat(np.cumsum(counts)[counts > 0] -
                                                 counts[counts > 0], counts[counts > 0])
    return counts, csv_boxes.astype(dtype, copy=False)[firsts + within]
