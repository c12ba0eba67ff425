"""Header-only tar index: offsets, nesting, safety checks, damaged archives, .tar.gz streams."""

import gzip
import io
import tarfile

import pytest
from tarutil import add_file, tar_bytes, write_tar

from imagenet_prep.errors import CorruptArchiveError, UnsafeArchiveError
from imagenet_prep.sources.tarindex import (
    ArchiveReader,
    iter_gz_members,
    iter_members,
    iter_nested,
    safe_member_name,
)


def test_offsets_point_at_member_bytes(tmp_path):
    files = {f"a_{i}.JPEG": bytes([i]) * (100 + 700 * i) for i in range(5)}
    files["long_" + "x" * 150 + ".JPEG"] = b"long name"  # GNU long-name header
    path = write_tar(tmp_path / "a.tar", files)
    members = list(iter_members(path))
    assert [m.name for m in members] == list(files)
    with ArchiveReader(path) as r:
        for m in members:
            assert r.read(m.offset, m.size) == files[m.name]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_nested_offsets_are_absolute(tmp_path, fmt):
    inner = {
        "n01440764.tar": tar_bytes({"n01440764_10.JPEG": b"A" * 1000, "n01440764_9.JPEG": b"B"}),
        "n01443537.tar": tar_bytes({"n01443537_1.JPEG": b"C" * 3000}),
    }
    path = write_tar(tmp_path / "train.tar", inner, fmt)
    seen = {}
    with ArchiveReader(path) as r:
        for outer, members in iter_nested(path):
            for m in members:
                seen[(outer.name, m.name)] = r.read(m.offset, m.size)
    assert seen == {
        ("n01440764.tar", "n01440764_10.JPEG"): b"A" * 1000,
        ("n01440764.tar", "n01440764_9.JPEG"): b"B",
        ("n01443537.tar", "n01443537_1.JPEG"): b"C" * 3000,
    }


def test_copy_to_writes_member_bytes(tmp_path):
    path = write_tar(tmp_path / "a.tar", {"x.JPEG": b"xyz" * 5000})
    (m,) = iter_members(path)
    out = tmp_path / "out"
    with ArchiveReader(path) as r, open(out, "wb") as f:
        r.copy_to(m.offset, m.size, f.fileno())
    assert out.read_bytes() == b"xyz" * 5000


@pytest.mark.parametrize("name", ["/etc/passwd", "../evil", "a/../../evil", "a\\..\\b", ""])
def test_unsafe_names_refused(name):
    with pytest.raises(UnsafeArchiveError):
        safe_member_name("x.tar", name)


def test_safe_name_normalised():
    assert safe_member_name("x.tar", "./val/a.xml") == "val/a.xml"


def _special(kind: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo("n01440764_1.JPEG")
    if kind == "sym":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hard":
        info.type, info.linkname = tarfile.LNKTYPE, "other"
    elif kind == "dev":
        info.type = tarfile.CHRTYPE
    else:
        info.type = tarfile.FIFOTYPE
    return info


@pytest.mark.parametrize("kind", ["sym", "hard", "dev", "fifo"])
def test_links_and_devices_refused(tmp_path, kind):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        add_file(tf, "other", b"x")
        tf.addfile(_special(kind))
    path = tmp_path / "bad.tar"
    path.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="refused"):
        list(iter_members(path))


@pytest.mark.parametrize("cut", [100, 512 + 300, 2560 + 200, 5120, -1024])
def test_truncated_archive_refused(tmp_path, cut):
    data = tar_bytes({"a.JPEG": b"a" * 2000, "b.JPEG": b"b" * 2000})
    path = tmp_path / "cut.tar"
    path.write_bytes(data[:cut] if cut > 0 else data[: len(data) + cut - 8192])
    with pytest.raises(CorruptArchiveError, match="truncated|corrupt"):
        list(iter_members(path))


def test_inner_truncation_detected(tmp_path):
    inner = tar_bytes({"n01440764_1.JPEG": b"a" * 5000})[:3000]  # cut inside image data
    path = write_tar(tmp_path / "train.tar", {"n01440764.tar": inner})
    with pytest.raises(CorruptArchiveError, match="n01440764.tar"):
        for _, members in iter_nested(path):
            list(members)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\x1f\x8b\x08" + b"\0" * 600, "gzip"), (b"<!DOCTYPE html><html>" + b" " * 600, "HTML"),
     (b"", "empty")],
)
def test_other_kinds_of_file_named(tmp_path, content, message):
    path = tmp_path / "ILSVRC2012_img_val.tar"
    path.write_bytes(content)
    with pytest.raises(CorruptArchiveError, match=message):
        list(iter_members(path))


def test_duplicate_names_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        add_file(tf, "a.JPEG", b"1")
        add_file(tf, "a.JPEG", b"2")
    path = tmp_path / "dup.tar"
    path.write_bytes(buf.getvalue())
    with pytest.raises(CorruptArchiveError, match="duplicate"):
        list(iter_members(path))


def test_missing_archive(tmp_path):
    with pytest.raises(CorruptArchiveError, match="not found"):
        list(iter_members(tmp_path / "nope.tar"))


# --- .tar.gz streams ------------------------------------------------------------------

def _gz_files() -> dict[str, bytes]:
    files = {f"n01440764/n01440764_{i}.xml": bytes([65 + i % 26]) * (i * 37 % 1500)
             for i in range(40)}
    files["n01443537/" + "x" * 120 + ".xml"] = b"long name"  # GNU long name / pax record
    files["n01443537/ünïcode.xml"] = b"non-ascii name"
    return files


def _tarfile_view(path) -> list[tuple[str, bytes]]:
    """What tarfile itself reads from the stream: regular files, in order."""
    with tarfile.open(path, "r|gz") as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf if m.isreg()]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_gz_members_equal_tarfile(tmp_path, fmt):
    files = _gz_files()
    if fmt == tarfile.USTAR_FORMAT:  # ustar splits long names into prefix + name instead
        files = {k.replace("x" * 120, "d" * 60 + "/" + "x" * 60): v for k, v in files.items()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in files.items():
            if name.endswith("_3.xml"):
                d = tarfile.TarInfo(name.rsplit("/", 1)[0] + "/sub")
                d.type = tarfile.DIRTYPE
                tf.addfile(d)
            add_file(tf, name, data)
    path = tmp_path / "a.tar.gz"
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    got = list(iter_gz_members(path))
    assert got == _tarfile_view(path)
    assert dict(got) == files


@pytest.mark.parametrize("damage", ["cut-early", "cut-trailer", "flip", "bad-checksum", "plain"])
def test_damaged_gz_refused(tmp_path, damage):
    raw = bytearray(tar_bytes({f"a/{i}.xml": b"<a/>" * 50 for i in range(20)}))
    if damage == "bad-checksum":
        raw[512 + 512 + 148] ^= 0x01  # the second member's header
    data = bytearray(gzip.compress(bytes(raw), mtime=0))
    if damage == "cut-early":
        data = data[: len(data) // 2]
    elif damage == "cut-trailer":
        data = data[:-3]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "plain":
        data = bytearray(raw)
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptArchiveError, match=r"bad\.tar\.gz: (truncated|not a readable)"):
        list(iter_gz_members(path))


def test_gz_links_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        add_file(tf, "a/1.xml", b"x")
        tf.addfile(_special("sym"))
    path = tmp_path / "link.tar.gz"
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    with pytest.raises(UnsafeArchiveError, match="symbolic link; refused"):
        list(iter_gz_members(path))
