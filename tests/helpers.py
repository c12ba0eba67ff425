"""Helpers shared by several test modules (fixtures stay in conftest.py).

- running the CLI and digesting folders;
- a small tmpfs for full-disk and read-only cases;
- the reference's box script (process_bounding_boxes.py, inception copy, docs/boxes.md),
  transcribed to work on in-memory files: the oracle for every box CSV test;
- small synthetic archives with real WNIDs and every odd image kind, and the truth
  about them, for the shard sinks (TFRecord, WebDataset).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from importlib.resources import files as resource_files
from pathlib import Path

import numpy as np
import pytest
from expected import devkit_truth, seed_extraction
from PIL import Image
from tarutil import add_file, tar_bytes, write_tar

# --- the CLI and folders -----------------------------------------------------------------

def tree_digest(root: Path, skip_state: bool = True) -> dict[str, str]:
    """Relative path -> sha256 of every file under root (links followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_state:
            dirnames[:] = [d for d in dirnames if d != ".imagenet-prep"]
        for name in filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_cli(*args: str | Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run imagenet-prep in a subprocess, as a user would."""
    cmd = [sys.executable, "-m", "imagenet_prep", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}: {proc.stderr}")
    return proc


def one_line(proc: subprocess.CompletedProcess, code: int | None, *parts: str,
             secret: str | None = None) -> str:
    """The single stderr line of a failed run (`imagenet-prep: error: ...`), after checking
    its exit code (None: any but 0), its `parts`, and that `secret` is not in it."""
    assert proc.returncode != 0 if code is None else proc.returncode == code, \
        (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("imagenet-prep: error: "), proc.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert secret is None or secret not in lines[0]  # no credential in any message
    return lines[0]


@contextlib.contextmanager
def tmpfs(where: Path, opts: str):
    """A small tmpfs mounted at `where` for the test, or a visible skip where not permitted."""
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not permitted'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)


# --- the reference's box script, transcribed ---------------------------------------

def _get_item(name, root, index=0):
    count = 0
    for item in root.iter(name):
        if count == index:
            return item.text
        count += 1
    return -1


def _get_int(name, root, index=0):
    return int(float(_get_item(name, root, index)))


def reference_boxes(data: bytes):
    """(label, xmin, ymin, xmax, ymax) per box of one XML, as the script computes them."""
    root = ET.parse(io.BytesIO(data)).getroot()
    index = 0
    while _get_int("xmin", root, index) != -1:
        index += 1
    boxes = []
    for i in range(index):
        xmin, ymin = _get_int("xmin", root, i), _get_int("ymin", root, i)
        xmax, ymax = _get_int("xmax", root, i), _get_int("ymax", root, i)
        width, height = _get_int("width", root), _get_int("height", root)
        _ = _get_item("filename", root) + ".JPEG"
        label = _get_item("name", root)
        x0, x1 = float(xmin) / float(width), float(xmax) / float(width)
        y0, y1 = float(ymin) / float(height), float(ymax) / float(height)
        boxes.append((label,
                      min(max(min(x0, x1), 0.0), 1.0), min(max(min(y0, y1), 0.0), 1.0),
                      min(max(max(x0, x1), 0.0), 1.0), min(max(max(y0, y1), 0.0), 1.0)))
    return boxes


def reference_run(files: dict[str, bytes], labels: set[str]):
    """(lines, counters) the reference prints for the glob matches among `files`."""
    out, skipped_boxes, skipped_files, saved_boxes, saved_files = [], 0, 0, 0, 0
    matched = [r for r in files if len(r.split("/")) == 2 and r.endswith(".xml")
               and not any(p.startswith(".") for p in r.split("/"))]
    for rel in matched:
        label = rel.split("/")[0]
        if label not in labels:
            skipped_files += 1
            continue
        found = False
        for blabel, xmin, ymin, xmax, ymax in reference_boxes(files[rel]):
            if blabel != label and blabel in labels:
                skipped_boxes += 1
                continue
            if xmin >= xmax or ymin >= ymax:
                skipped_boxes += 1
                continue
            name = os.path.splitext(os.path.basename(rel))[0]
            out.append("%s.JPEG,%.4f,%.4f,%.4f,%.4f\n"  # noqa: UP031 (the reference's format)
                       % (name, xmin, ymin, xmax, ymax))
            saved_boxes += 1
            found = True
        if found:
            saved_files += 1
        else:
            skipped_files += 1
    return out, {"xml_files": len(matched), "files_skipped": skipped_files,
                 "boxes_skipped": skipped_boxes, "boxes_written": saved_boxes,
                 "images": saved_files}


# --- synthetic archives for the shard sinks ------------------------------------------

DATA = resource_files("imagenet_prep.sources.metadata").joinpath("data")
SORTED_WNIDS = sorted(DATA.joinpath("synsets.txt").read_text().split())
CLASSES = [SORTED_WNIDS[0], SORTED_WNIDS[1], SORTED_WNIDS[999]]
SPECIAL_TRAIN = {  # (class index, number) -> kind
    (0, 3): "cmyk", (0, 4): "ycck", (1, 2): "png", (1, 5): "gray", (2, 1): "rgba-png",
    (2, 4): "gzip",
}


def sample_image(kind: str, seed: int) -> bytes:
    """A small image of `kind` (rgb, gray, cmyk, ycck, png, rgba-png, gzip), fixed by `seed`."""
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(40, 90)), int(rng.integers(30, 70))
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 255 // w), (yy * 255 // h), rng.integers(0, 255, (h, w))], -1)
    im = Image.fromarray(arr.astype(np.uint8), "RGB")
    out = io.BytesIO()
    if kind in ("cmyk", "ycck"):
        im.convert("CMYK").save(out, "JPEG", quality=90)
        data = out.getvalue()
        if kind == "ycck":  # Adobe APP14 transform byte 0 -> 2: the same data read as YCCK
            i = data.index(b"Adobe") + 11
            data = data[:i] + b"\x02" + data[i + 1:]
        return data
    if kind == "png":
        im.save(out, "PNG")
    elif kind == "rgba-png":
        im.putalpha(128)
        im.save(out, "PNG")
    elif kind == "gray":
        im.convert("L").save(out, "JPEG", quality=90)
    elif kind == "gzip":
        im.save(out, "JPEG", quality=90)
        return gzip.compress(out.getvalue(), mtime=0)
    else:
        im.save(out, "JPEG", quality=int(rng.integers(70, 96)))
    return out.getvalue()


def _xml(folder: str, stem: str, size: tuple[int, int], objects) -> bytes:
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
                   f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
                   for n, (a, b, c, d) in objects)
    return (f"<annotation><folder>{folder}</folder><filename>{stem}</filename><size>"
            f"<width>{size[0]}</width><height>{size[1]}</height></size>{objs}"
            "</annotation>").encode()


def build_inputs(root: Path, per_class: int = 7, val_images: int = 8,
                 bad: str | None = None) -> dict:
    """Write the archives into root; returns the truth: name -> (wnid, bytes, kind)."""
    root.mkdir(parents=True, exist_ok=True)
    truth: dict[str, tuple[str, bytes, str]] = {}
    inner = {}
    for c, wnid in enumerate(CLASSES):
        members = {}
        for n in range(1, per_class + 1):
            kind = SPECIAL_TRAIN.get((c, n), "rgb")
            name = f"{wnid}_{n}.JPEG"
            members[name] = data = sample_image(kind, seed=c * 1000 + n)
            truth[name] = (wnid, data, kind)
        if bad is not None and c == 1:
            members[bad] = b"this is not an image"
        inner[f"{wnid}.tar"] = tar_bytes(members)
    write_tar(root / "ILSVRC2012_img_train.tar", inner)
    val, val_xml = {}, {}
    for i in range(1, val_images + 1):
        wnid = CLASSES[(i * 7) % 3]
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        kind = "cmyk" if i == 5 else "rgb"
        val[name] = data = sample_image(kind, seed=50_000 + i)
        truth[name] = (wnid, data, kind)
        val_xml[f"val/{name[:-5]}.xml"] = _xml("val", name[:-5], (100, 100),
                                               [(wnid, (1, 2, 50, 60))])
    write_tar(root / "ILSVRC2012_img_val.tar", dict(sorted(val.items(), reverse=True)))
    _write_gz(root / "ILSVRC2012_bbox_val_v3.tgz", val_xml)
    _write_gz(root / "ILSVRC2012_bbox_train_v2.tar.gz", box_xmls())
    return truth


def box_xmls() -> dict[str, bytes]:
    """Training box XMLs of CLASSES with the reference's quirks (%s, a word label, a decimal,
    another class, a degenerate box, an XML without its image)."""
    a, b, c = CLASSES
    return {
        f"{a}/{a}_1.xml": _xml(a, f"{a}_1", (500, 375), [(a, (10, 20, 300, 200)),
                                                         (a, (400, 300, 100, 30))]),
        f"{a}/{a}_3.xml": _xml(a, "%s", (64, 48), [(a, (-5, 0, 70, 47))]),
        f"{b}/{b}_2.xml": _xml(b, f"{b}_2", (333, 500), [("Scottish_deerhound", (1, 2, 3, 4)),
                                                         (b, ("12.7", 30, 200, 499))]),
        f"{b}/{b}_4.xml": _xml(b, f"{b}_4", (333, 500), [(a, (1, 2, 30, 40))]),  # rejected
        f"{c}/{c}_6.xml": _xml(c, f"{c}_6", (100, 100), [(c, (10, 10, 10, 20)),  # degenerate
                                                         (c, (5, 5, 95, 95))]),
        f"{c}/{c}_99.xml": _xml(c, f"{c}_99", (100, 100), [(c, (5, 5, 95, 95))]),  # no image
    }


def _write_gz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            add_file(tf, name, data)


def folders_from(truth: dict, ds: Path, archives: Path) -> Path:
    """DATASET/train/WNID/*, DATASET/val/WNID/* and bbox_train/ with the same bytes."""
    for name, (wnid, data, _) in truth.items():
        split = "val" if name.startswith("ILSVRC2012_val_") else "train"
        (ds / split / wnid).mkdir(parents=True, exist_ok=True)
        (ds / split / wnid / name).write_bytes(data)
    with tarfile.open(archives / "ILSVRC2012_bbox_train_v2.tar.gz") as tf:
        tf.extractall(ds / "bbox_train", filter="data")
    return ds


# --- the small replica, read without the code under test -----------------------------

def replica_truth(arch: Path) -> dict[str, tuple[str, bytes, str]]:
    """name -> (WNID, bytes, kind) from tarfile, the devkit and replica.json's quirk lists."""
    quirks = json.loads((arch / "replica.json").read_text())["quirks"]
    kind_of = {n: k for k in ("cmyk", "ycck", "png") for n in quirks.get(k, [])}
    kind_of.update({n: "gray" for n in quirks.get("grayscale", [])})
    val = devkit_truth(arch)
    truth = {}
    for rel, data in seed_extraction(arch).items():
        parts = rel.split("/")
        if parts[0] == "train":
            truth[parts[2]] = (parts[1], data, kind_of.get(parts[2], "rgb"))
        elif parts[0] == "val":
            truth[parts[1]] = (val[parts[1]], data, kind_of.get(parts[1], "rgb"))
    return truth


def replica_box_lines(arch: Path) -> list[str]:
    """The reference's lines for the replica's train XMLs, sorted (docs/boxes.md)."""
    with tarfile.open(arch / "ILSVRC2012_bbox_train_v2.tar.gz") as tf:
        files = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}
    lines, _ = reference_run(files, set(SORTED_WNIDS))
    return sorted(lines)


def boxes_of(lines: list[str]) -> dict[str, list[tuple[float, ...]]]:
    out: dict[str, list] = {}
    for line in lines:
        name, *vals = line.strip().split(",")
        out.setdefault(name, []).append(tuple(float(v) for v in vals))
    return out


def assert_only_complete_files(ds: Path, truth: dict[str, bytes]) -> None:
    """Every file under a final name holds exactly its archive member's bytes."""
    for p in ds.rglob("*"):
        if p.is_file() and ".imagenet-prep" not in p.parts:
            rel = str(p.relative_to(ds))
            assert not p.name.endswith(".ipart"), rel
            assert truth[rel] == p.read_bytes(), rel


def reseal(record: Path) -> None:
    """A state record edited by a test, sealed again (runtime/stage_state.py): it then reads
    as one a run wrote with those fields, not as a damaged one."""
    from imagenet_prep.runtime.stage_state import sealed_text

    record.write_text(sealed_text(json.loads(record.read_text())))
