"""Box XML -> CSV lines, by the rules of TensorFlow's process_bounding_boxes.py (inception copy).

The rules are the reference's, quirks included (formats.md §7.2), because the
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

import posixpath
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from imagenet_prep.errors import PrepError

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
    return (len(parts) == 2 and all(p and not p.startswith(".") for p in parts)
            and parts[1].endswith(".xml"))


def _items(root: ET.Element, name: str) -> list[str | None]:
    return [e.text for e in root.iter(name)]


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
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise BoxXMLError(f"{where}: not a readable XML file ({e})") from None
    xmins = _items(root, "xmin")
    count = 0
    while count < len(xmins) and _int(xmins[count], "xmin", where) != _MISSING:
        count += 1
    if count == 0:
        return _nth(_items(root, "name"), 0), []
    ymins, xmaxs, ymaxs = (_items(root, k) for k in ("ymin", "xmax", "ymax"))
    width = _int(_nth(_items(root, "width"), 0), "width", where)
    height = _int(_nth(_items(root, "height"), 0), "height", where)
    filename = _nth(_items(root, "filename"), 0)
    if not isinstance(filename, str):  # the reference computes filename + '.JPEG' and dies
        raise BoxXMLError(f"{where}: no <filename> text")
    if width == 0 or height == 0:
        raise BoxXMLError(f"{where}: image size is {width}x{height}")
    boxes = []
    for i in range(count):
        xmin = float(_int(xmins[i], "xmin", where)) / float(width)
        ymin = float(_int(_nth(ymins, i), "ymin", where)) / float(height)
        xmax = float(_int(_nth(xmaxs, i), "xmax", where)) / float(width)
        ymax = float(_int(_nth(ymaxs, i), "ymax", where)) / float(height)
        x0, x1 = min(xmin, xmax), max(xmin, xmax)
        y0, y1 = min(ymin, ymax), max(ymin, ymax)
        boxes.append((_clamp(x0), _clamp(y0), _clamp(x1), _clamp(y1)))
    return _nth(_items(root, "name"), 0), boxes


def _clamp(v: float) -> float:
    return min(max(v, 0.0), 1.0)


def csv_lines(
    rel: str, data: bytes | None, challenge: frozenset[str] | set[str] | None, where: str,
) -> tuple[list[str], BoxCounts]:
    """The reference's output lines and counters for the XML `WNID/NAME.xml` (`rel`).

    `data` may be None for a file outside `challenge` (it is skipped unread).
    """
    wnid, base = rel.split("/")
    counts = BoxCounts(files=1)
    if challenge is not None and wnid not in challenge:
        counts.files_skipped = 1
        return [], counts
    assert data is not None
    label, boxes = parse_boxes(data, where)
    image = posixpath.splitext(base)[0] + ".JPEG"
    lines = []
    for xmin, ymin, xmax, ymax in boxes:
        if challenge is not None and label != wnid and label in challenge:
            counts.boxes_skipped += 1
            continue
        if xmin >= xmax or ymin >= ymax:
            counts.boxes_skipped += 1
            continue
        lines.append(f"{image},{xmin:.4f},{ymin:.4f},{xmax:.4f},{ymax:.4f}\n")
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
    total = BoxCounts()
    for rel, data, where in items:
        if data is None and (challenge is None or rel.split("/")[0] in challenge):
            try:
                with open(where, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise BoxXMLError(f"{where}: cannot read: {e.strerror}") from None
        more, counts = csv_lines(rel, data, challenge, where)
        lines += more
        total.add(counts)
    return lines, total


def parse_csv(text: str, where: str) -> Iterator[tuple[str, tuple[float, float, float, float]]]:
    """(image name, box) per CSV line, in file order, as build_imagenet_data.py reads them."""
    for n, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        parts = line.split(",")
        if len(parts) != 5:
            raise PrepError(f"{where}:{n}: expected 5 comma-separated fields, got {len(parts)}")
        try:
            box = (float(parts[1]), float(parts[2]), float(parts[3]), float(parts[4]))
        except ValueError:
            raise PrepError(f"{where}:{n}: not a number in {line!r}") from None
        yield parts[0], box
