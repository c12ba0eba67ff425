"""`verify`: sizes and MD5s against a folder's MD5SUMS/SIZES or the official table."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from imagenet_prep.cli import main
from imagenet_prep.errors import PrepError
from imagenet_prep.sources import archives
from imagenet_prep.sources.archives import Archive, find_archive, md5_file, verify_archives

SIX = (archives.TRAIN, archives.VAL, archives.TEST, archives.BBOX_TRAIN, archives.BBOX_VAL,
       archives.DEVKIT)


def _write_manifests(folder: Path, names: tuple[str, ...]) -> None:
    md5s = [f"{hashlib.md5((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in names]
    sizes = [f"{(folder / n).stat().st_size}  {n}\n" for n in names]
    (folder / "MD5SUMS").write_text("".join(md5s))
    (folder / "SIZES").write_text("".join(sizes))


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """Six small files under the official names, with a matching MD5SUMS and SIZES."""
    folder = tmp_path / "archives"
    folder.mkdir()
    for i, name in enumerate(SIX):
        (folder / name).write_bytes(bytes((i * 7 + j) % 251 for j in range(1000 + 100 * i)))
    _write_manifests(folder, SIX)
    return folder


def _flip_byte(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _verify(capsys, *argv: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """Run the CLI; returns exit code and name -> (status, detail) from the --json report."""
    code = main(["verify", *argv, "--json"])
    report = json.loads(capsys.readouterr().out)
    return code, {r["name"]: (r["status"], r["detail"]) for r in report}


def test_all_ok(fake, capsys):
    assert main(["verify", "--archives", str(fake)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6
    for line, name in zip(out, SIX, strict=True):
        status, got_name, *_ = line.split()
        assert (status, got_name) == ("OK", name)


def test_one_byte_changed_is_mismatch(fake, capsys):
    _flip_byte(fake / archives.VAL)
    code, rep = _verify(capsys, "--archives", str(fake))
    assert code == 1
    status, detail = rep[archives.VAL]
    assert status == "MISMATCH"
    assert "MD5" in detail and "expected" in detail
    assert all(s == "OK" for n, (s, _) in rep.items() if n != archives.VAL)


def test_missing_is_reported_but_not_fatal(fake, capsys):
    (fake / archives.BBOX_VAL).unlink()
    code, rep = _verify(capsys, "--archives", str(fake))
    assert code == 0
    assert rep[archives.BBOX_VAL][0] == "MISSING"


@pytest.mark.parametrize("req", [archives.BBOX_VAL, "bbox_val", f"val,{archives.BBOX_VAL}"])
def test_missing_required_fails(fake, capsys, req):
    (fake / archives.BBOX_VAL).unlink()
    assert main(["verify", "--archives", str(fake), "--require", req]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and "(required)" in out


def test_required_and_present_passes(fake, capsys):
    assert main(["verify", "--archives", str(fake), "--require", "train", archives.VAL]) == 0


def test_quick_checks_sizes_only(fake, capsys):
    _flip_byte(fake / archives.TRAIN)
    code, rep = _verify(capsys, "--archives", str(fake), "--quick")
    assert code == 0
    assert rep[archives.TRAIN][0] == "OK"
    with open(fake / archives.TRAIN, "ab") as f:
        f.write(b"x")
    code, rep = _verify(capsys, "--archives", str(fake), "--quick")
    assert code == 1
    status, detail = rep[archives.TRAIN]
    assert status == "MISMATCH" and "size" in detail


def test_test_archive_under_new_name(fake, capsys):
    new = fake / archives.TEST_V10102019
    (fake / archives.TEST).rename(new)
    _write_manifests(fake, tuple(archives.TEST_V10102019 if n == archives.TEST else n
                                 for n in SIX))
    assert find_archive(fake, "test") == new
    code, rep = _verify(capsys, "--archives", str(fake), "--require", "test")
    assert code == 0
    assert rep[archives.TEST_V10102019][0] == "OK"
    assert archives.TEST not in rep


def _official(folder: Path, **override: tuple[int | None, str | None]) -> dict[str, Archive]:
    """An official table whose values are those of the small files in `folder`."""
    table = {}
    for name, a in archives.OFFICIAL.items():
        path = folder / name
        size, md5 = (path.stat().st_size, md5_file(path)) if path.exists() else (None, None)
        size, md5 = override.get(name, (size, md5))
        table[name] = Archive(name, a.role, size, md5)
    return table


def test_official_table_sizes_and_md5s(fake, capsys, monkeypatch):
    (fake / "MD5SUMS").unlink()
    (fake / "SIZES").unlink()
    # Defaults: real sizes, so these small files are all size mismatches (or UNKNOWN).
    code, rep = _verify(capsys, "--archives", str(fake), "--quick")
    assert code == 1
    assert rep[archives.VAL][0] == "MISMATCH" and "6,744,924,160" in rep[archives.VAL][1]
    assert rep[archives.BBOX_VAL][0] == "UNKNOWN"  # no published size

    monkeypatch.setattr(archives, "OFFICIAL", _official(fake))
    code, rep = _verify(capsys, "--archives", str(fake))
    assert code == 0, rep
    assert {s for s, _ in rep.values()} == {"OK"}

    _flip_byte(fake / archives.DEVKIT)
    code, rep = _verify(capsys, "--archives", str(fake))
    assert code == 1
    assert rep[archives.DEVKIT][0] == "MISMATCH" and "MD5" in rep[archives.DEVKIT][1]

    with open(fake / archives.VAL, "ab") as f:
        f.write(b"more")
    code, rep = _verify(capsys, "--archives", str(fake), "--quick")
    assert rep[archives.VAL][0] == "MISMATCH" and "size" in rep[archives.VAL][1]
    assert rep[archives.DEVKIT][0] == "OK"  # same size: quick cannot see the flipped byte


def test_unknown_without_reference(fake, capsys, monkeypatch):
    (fake / "MD5SUMS").unlink()
    (fake / "SIZES").unlink()
    monkeypatch.setattr(archives, "OFFICIAL", _official(fake, **{archives.TEST: (None, None)}))
    code, rep = _verify(capsys, "--archives", str(fake))
    assert code == 1
    status, detail = rep[archives.TEST]
    assert status == "UNKNOWN" and "no reference MD5" in detail
    assert all(s == "OK" for n, (s, _) in rep.items() if n != archives.TEST)


def test_manifest_lists_extra_files(fake, capsys):
    (fake / "extra.bin").write_bytes(b"hello")
    (fake / "MD5SUMS").write_text(
        (fake / "MD5SUMS").read_text()
        + f"{hashlib.md5(b'hello').hexdigest()} *extra.bin\n"
        + f"{'0' * 32}  gone.bin\n"
    )
    code, rep = _verify(capsys, "--archives", str(fake))
    assert code == 0
    assert rep["extra.bin"][0] == "OK"
    assert rep["gone.bin"][0] == "MISSING"
    assert main(["verify", "--archives", str(fake), "--require", "gone.bin"]) == 1


def test_library_parallel_matches_serial(fake):
    big = fake / archives.TRAIN
    big.write_bytes(bytes(range(256)) * (9 * 4096 + 3))  # > 8 MiB: several chunks
    _write_manifests(fake, SIX)
    one = verify_archives(fake, workers=1, progress=False)
    many = verify_archives(fake, workers=4, progress=False)
    assert one == many
    assert {s.status for s in one} == {"OK"}
    assert md5_file(big) == hashlib.md5(big.read_bytes()).hexdigest()


def test_bad_input(tmp_path, fake, capsys):
    assert main(["verify", "--archives", str(tmp_path / "nope")]) == 1
    assert "no such folder" in capsys.readouterr().err
    (fake / "MD5SUMS").write_text("not-a-digest  x\n")
    with pytest.raises(PrepError, match="MD5SUMS:1"):
        verify_archives(fake, progress=False)


def test_replica_verifies_and_damage_is_named(tmp_path, small_replica, capsys):
    """Acceptance: a replica verifies; one changed byte is a MISMATCH; missing is not fatal."""
    import shutil

    arch = tmp_path / "r"
    shutil.copytree(small_replica, arch)
    assert main(["verify", "--archives", str(arch)]) == 0
    val = arch / "ILSVRC2012_img_val.tar"
    data = bytearray(val.read_bytes())
    data[len(data) // 2] ^= 1
    val.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", "--archives", str(arch)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines if "ILSVRC2012_img_val.tar" in ln] == ["MISMATCH"]
    assert all(ln.split()[0] == "OK" for ln in lines if "ILSVRC2012_img_val.tar" not in ln)
    val.unlink()
    assert main(["verify", "--archives", str(arch)]) == 0
    assert "MISSING" in capsys.readouterr().out
    assert main(["verify", "--archives", str(arch), "--require", "ILSVRC2012_img_val.tar"]) == 1
