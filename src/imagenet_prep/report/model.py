"""What the page shows, gathered once: plain data the renderer turns into HTML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Thumb:
    """One embedded image and what it is (the page writes these as data attributes)."""

    section: str  # "contact" or "converted"
    split: str  # "train" or "val"
    wnid: str | None  # the class it is filed under (folder or record label)
    file: str  # its file name
    uri: str | None  # data:image/jpeg;base64,... or None when it does not decode
    box_wnid: str | None = None  # validation only: the class its box XML names, if known
    error: str | None = None


@dataclass
class Sample:
    """Header facts of a seeded random sample of one split's images."""

    split: str
    total: int  # images in the split
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # bytes of each sampled file
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (name, error)

    @property
    def count(self) -> int:
        return len(self.widths)


@dataclass(frozen=True)
class Special:
    """A file the TFRecord writer converts to RGB JPEG (or left out), and how we know."""

    split: str
    name: str
    reason: str  # cmyk, ycck, png, gzip+..., or "skipped"
    found_by: str  # "tfrecord" (its run recorded it) or "content" (found by the report)
    thumb: Thumb | None = None
    error: str | None = None  # why a skipped file was left out


@dataclass
class SplitView:
    """One split as the report reads it: from class folders, from shards, or absent."""

    split: str
    source: str  # "folders", "shards"
    counts: dict[str, int]  # WNID -> images
    counts_from: str  # where the counts come from (a record, a listing, a shard scan)
    sample: Sample
    picks: dict[str, list[Thumb]]  # contact-sheet rows by WNID
    specials: list[Special] = field(default_factory=list)  # found by content in this split
    problems: list[str] = field(default_factory=list)  # damaged records met while reading

    @property
    def images(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Row:
    """A line of the summary table."""

    key: str  # stable id for tests: train, val, test, bbox_train, tfrecord_train, ...
    what: str
    count: int | None
    classes: int | None = None
    bytes: int | None = None
    detail: str = ""


@dataclass
class ContactClass:
    wnid: str
    description: str
    counts: dict[str, int]  # split -> images of the class
    train: list[Thumb]
    val: list[Thumb]


@dataclass
class Report:
    dataset: str
    version: str
    rows: list[Row]
    timings: dict[str, Any] | None
    check: dict[str, Any] | None  # None: not run
    views: dict[str, SplitView]
    specials: list[Special]
    specials_total: int
    specials_basis: str
    contact: list[ContactClass]
    seed: int
    problems: list[str] = field(default_factory=list)  # what the report itself met
