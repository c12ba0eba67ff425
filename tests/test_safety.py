"""Archives that try to write outside the dataset, or hold links and devices, are refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from helpers import run_cli
from tarutil import add_file, tar_bytes

WNID = "n01440764"


def _inner_with(kind: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        add_file(tf, f"{WNID}_1.JPEG", b"\xff\xd8 fine")
        if kind in ("dotdot", "absolute"):
            name = "../../../escaped.JPEG" if kind == "dotdot" else "/tmp/escaped-abs.JPEG"
            add_file(tf, name, b"evil")
        else:
            info = tarfile.TarInfo(f"{WNID}_2.JPEG")
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "/etc/passwd" if kind == "symlink" else f"{WNID}_1.JPEG"
            tf.addfile(info)
    return buf.getvalue()


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("command", ["extract", "tfrecord"])
@pytest.mark.parametrize("where", ["inner", "outer"])
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_unsafe_train_archive_refused(tmp_path, kind, where, command):
    arch = tmp_path / "archives"
    arch.mkdir()
    if where == "inner":
        outer = tar_bytes({f"{WNID}.tar": _inner_with(kind)})
    else:
        outer_inner = tarfile.open(fileobj=io.BytesIO(_inner_with(kind)))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
            for m in outer_inner.getmembers():
                f = outer_inner.extractfile(m) if m.isfile() else None
                m.name = m.name.replace(f"{WNID}_1.JPEG", f"{WNID}.tar") if m.isfile() and \
                    m.name.endswith("_1.JPEG") else m.name
                tf.addfile(m, f)
        outer = buf.getvalue()
    (arch / "ILSVRC2012_img_train.tar").write_bytes(outer)
    before = _snapshot(tmp_path)
    ds = tmp_path / "work" / "ds"
    if command == "extract":
        proc = run_cli("extract", "--archives", arch, "--out", ds, check=False)
    else:
        proc = run_cli("tfrecord", ds, "--archives", arch, "--splits", "train", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "refused" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "ILSVRC2012_img_train.tar" in proc.stderr
    created = _snapshot(tmp_path) - before
    assert all(c.startswith("work") for c in created), created
    assert not (tmp_path / "escaped.JPEG").exists() and not Path("/tmp/escaped-abs.JPEG").exists()
    assert not [p for p in ds.rglob("*.JPEG")]  # the class was refused before any write


def test_unsafe_box_archive_refused(tmp_path):
    import gzip

    arch = tmp_path / "archives"
    arch.mkdir()
    data = tar_bytes({"val/ILSVRC2012_val_00000001.xml": b"<a/>", "../evil.xml": b"<a/>"})
    (arch / "ILSVRC2012_bbox_val_v3.tgz").write_bytes(gzip.compress(data, mtime=0))
    proc = run_cli("extract", "--archives", arch, "--out", tmp_path / "ds", check=False)
    assert proc.returncode == 1 and "../evil.xml" in proc.stderr
    assert not (tmp_path / "evil.xml").exists()


@pytest.mark.parametrize("kind", ["dotdot", "symlink"])
def test_unsafe_box_archive_refused_by_bbox(tmp_path, kind):
    import gzip

    arch = tmp_path / "archives"
    arch.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        add_file(tf, f"{WNID}/{WNID}_1.xml", b"<annotation/>")
        if kind == "dotdot":
            add_file(tf, "../../evil.xml", b"<annotation/>")
        else:
            info = tarfile.TarInfo(f"{WNID}/{WNID}_2.xml")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(info)
    (arch / "ILSVRC2012_bbox_train_v2.tar.gz").write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    before = _snapshot(tmp_path)
    proc = run_cli("bbox", tmp_path / "work" / "ds", "--archives", arch, check=False)
    assert proc.returncode == 1 and "ILSVRC2012_bbox_train_v2.tar.gz" in proc.stderr
    assert all(c.startswith("work") for c in _snapshot(tmp_path) - before)
    assert not (tmp_path / "evil.xml").exists()
