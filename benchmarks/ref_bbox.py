"""Baseline: the method of TensorFlow's process_bounding_boxes.py (inception copy), one core.

    python ref_bbox.py BBOX_TRAIN_DIR SYNSETS_FILE > unsorted.csv

Globs `DIR/*/*.xml`, parses each file with ElementTree and, as the reference
does, looks every value up by walking the tree again (`root.iter(tag)` counted up
to the wanted index), then prints `%.4f` lines; the reference's wrapper sorts
them afterwards (the benchmark pipes through `LC_ALL=C sort`).  Written for the
benchmark from the rules in docs/boxes.md, so its cost model is the reference's.
"""

from __future__ import annotations

import glob
import os
import sys
import xml.etree.ElementTree as ET


def get_item(name, root, index=0):
    for count, item in enumerate(root.iter(name)):
        if count == index:
            return item.text
    return -1


def get_int(name, root, index=0):
    return int(float(get_item(name, root, index)))


def boxes_of(path):
    root = ET.parse(path).getroot()
    count = 0
    while get_int("xmin", root, count) != -1:
        count += 1
    out = []
    for i in range(count):
        xmin, ymin = get_int("xmin", root, i), get_int("ymin", root, i)
        xmax, ymax = get_int("xmax", root, i), get_int("ymax", root, i)
        width, height = get_int("width", root), get_int("height", root)
        _ = get_item("filename", root) + ".JPEG"
        label = get_item("name", root)
        x0, x1 = float(xmin) / float(width), float(xmax) / float(width)
        y0, y1 = float(ymin) / float(height), float(ymax) / float(height)
        clamp = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
        out.append((label, clamp(min(x0, x1)), clamp(min(y0, y1)),
                    clamp(max(x0, x1)), clamp(max(y0, y1))))
    return out


def main() -> None:
    folder, synsets = sys.argv[1], sys.argv[2]
    files = glob.glob(folder + "/*/*.xml")
    with open(synsets) as f:
        labels = {line.strip() for line in f}
    write = sys.stdout.write
    for path in files:
        label = os.path.basename(os.path.dirname(path))
        if label not in labels:
            continue
        image = os.path.splitext(os.path.basename(path))[0]
        for blabel, x0, y0, x1, y1 in boxes_of(path):
            if blabel != label and blabel in labels:
                continue
            if x0 >= x1 or y0 >= y1:
                continue
            write("%s.JPEG,%.4f,%.4f,%.4f,%.4f\n" % (image, x0, y0, x1, y1))  # noqa: UP031
    print(f"Finished processing {len(files)} XML files.", file=sys.stderr)


if __name__ == "__main__":
    main()
