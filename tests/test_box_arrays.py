"""The box CSV read into arrays and joined to a catalog by binary search, as the dict did."""

from __future__ import annotations

import numpy as np
import pytest

from imagenet_prep.errors import PrepError
from imagenet_prep.sources.boxes import boxes_of, read_csv_arrays


def test_boxes_of_matches_a_dict_of_lists(tmp_path):
    rng = np.random.default_rng(3)
    names = [f"n0144{i % 7}_{i}.JPEG" for i in range(60)]
    lines = []
    for name in names[::2]:  # every other image has boxes, some several
        for _ in range(int(rng.integers(1, 4))):
            lines.append(f"{name},{rng.random():.4f},{rng.random():.4f},"
                         f"{rng.random():.4f},{rng.random():.4f}\n")
    csv = tmp_path / "b.csv"
    csv.write_text("".join(sorted(lines)))
    by_name: dict[str, list[tuple[float, ...]]] = {}
    for line in sorted(lines):
        name, *box = line.strip().split(",")
        by_name.setdefault(name, []).append(tuple(map(float, box)))
    csv_names, csv_boxes = read_csv_arrays(csv)
    query = list(reversed(names)) + ["n99999999_1.JPEG"]  # any order, one unknown
    counts, boxes = boxes_of(np.array([n.encode() for n in query]), csv_names, csv_boxes)
    assert counts.tolist() == [len(by_name.get(n, ())) for n in query]
    want = [b for n in query for b in by_name.get(n, ())]
    assert np.array_equal(boxes, np.array(want).reshape(-1, 4))


def test_empty_csv_and_malformed_line(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    names, boxes = read_csv_arrays(empty)
    assert len(names) == 0 and boxes.shape == (0, 4)
    counts, got = boxes_of(np.array([b"a.JPEG"]), names, boxes)
    assert counts.tolist() == [0] and got.shape == (0, 4)
    bad = tmp_path / "bad.csv"
    bad.write_text("a.JPEG,0.1,0.2,0.3,0.4\nb.JPEG,0.1,x,0.3,0.4\n")
    with pytest.raises(PrepError, match=r"bad.csv:2: not a number"):
        read_csv_arrays(bad)
