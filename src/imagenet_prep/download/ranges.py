"""Which bytes of a file are on disk: a small set of disjoint [start, end) ranges.

A download over N connections finishes pieces out of order, so progress is not
one number.  The set stays tiny (merged ranges: one per piece in flight at most),
is what the `NAME.part.json` side file records, and tells the MD5 how far the
contiguous prefix reaches.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable


class RangeSet:
    """Sorted, disjoint, merged half-open byte ranges."""

    def __init__(self, ranges: Iterable[Iterable[int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(int(start), int(end))

    def add(self, start: int, end: int) -> None:
        """Mark [start, end) as done, merging with touching or overlapping ranges."""
        if start < 0 or end < start:
            raise ValueError(f"bad range [{start}, {end})")
        if start == end:
            return
        # Every range that overlaps or touches [start, end) is merged into one.
        lo = bisect.bisect_left(self._ends, start)
        hi = bisect.bisect_right(self._starts, end)
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def prefix(self) -> int:
        """End of the range that starts at byte 0 (0 if byte 0 is not done)."""
        return self._ends[0] if self._starts and self._starts[0] == 0 else 0

    def done(self) -> int:
        """Number of bytes done."""
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def missing(self, total: int) -> list[tuple[int, int]]:
        """The ranges of [0, total) not done yet, in order."""
        out: list[tuple[int, int]] = []
        pos = 0
        for s, e in zip(self._starts, self._ends, strict=True):
            if s >= total:
                break
            if s > pos:
                out.append((pos, s))
            pos = max(pos, e)
        if pos < total:
            out.append((pos, total))
        return out

    def as_list(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self._starts, self._ends, strict=True)]

    def __len__(self) -> int:
        return len(self._starts)
