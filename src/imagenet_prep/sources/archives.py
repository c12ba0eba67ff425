"""The official ILSVRC2012 archives and a check that the downloaded copies are intact.

A truncated or corrupt 138 GB download only shows itself hours into a run, so
`verify_archives` checks exact sizes (instant) and MD5s (one parallel pass)
against the published values before anything is extracted.  A synthetic replica
carries its own reference as `MD5SUMS` (md5sum -c format) and `SIZES` files,
which take precedence over the official table for the files they list.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import threading
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from imagenet_prep.errors import PrepError
from imagenet_prep.runtime.pool import default_workers
from imagenet_prep.runtime.progress import bar
from imagenet_prep.runtime.storage import RemotePath, open_input

TRAIN = "ILSVRC2012_img_train.tar"
VAL = "ILSVRC2012_img_val.tar"
TEST = "ILSVRC2012_img_test.tar"
TEST_V10102019 = "ILSVRC2012_img_test_v10102019.tar"
BBOX_TRAIN = "ILSVRC2012_bbox_train_v2.tar.gz"
BBOX_VAL = "ILSVRC2012_bbox_val_v3.tgz"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"

MD5SUMS = "MD5SUMS"
SIZES = "SIZES"
CHUNK = 8 << 20  # 8 MiB reads: large enough for full disk throughput, small in memory

V = TypeVar("V")
Status = Literal["OK", "MISMATCH", "MISSING", "UNKNOWN"]


@dataclass(frozen=True)
class Archive:
    """One official archive: its file name, role, and published size/MD5 (None if unknown)."""

    name: str
    role: str
    size: int | None
    md5: str | None


# Published values (image-net.org downloads page, torchvision ARCHIVE_META); docs/archives.md.
OFFICIAL: dict[str, Archive] = {
    a.name: a
    for a in (
        Archive(TRAIN, "train", 147_897_477_120, "1d675b47d978889d74fa0da5fadfb00e"),
        Archive(VAL, "val", 6_744_924_160, "29b22e2961454d5413ddabcf34fc5622"),
        Archive(TEST, "test", None, None),
        Archive(TEST_V10102019, "test", None, "e1b8681fff3d63731c599df9b4b6fc02"),
        Archive(BBOX_TRAIN, "bbox_train", None, "9271167e2176350e65cfe4e546f14b17"),
        Archive(BBOX_VAL, "bbox_val", None, "f4cd18b5ea29fe6bbea62ec9c20d80f0"),
        Archive(DEVKIT, "devkit", 2_568_634, "fa75699e90414af021442c21a62c3abf"),
    )
}

ROLES = ("train", "val", "test", "bbox_train", "bbox_val", "devkit")


def names_for_role(role: str) -> tuple[str, ...]:
    """File names an archive of `role` may have, preferred first (test has two)."""
    names = tuple(a.name for a in OFFICIAL.values() if a.role == role)
    if not names:
        raise PrepError(f"unknown archive role {role!r}; expected one of {', '.join(ROLES)}")
    return names


def _folder(archives_dir: Path | str | RemotePath) -> Path | RemotePath:
    """The archives folder: a bucket prefix as it is, anything else as a Path."""
    return archives_dir if isinstance(archives_dir, RemotePath) else Path(archives_dir)


def find_archive(archives_dir: Path, role: str) -> Path | None:
    """The archive of `role` in `archives_dir` (either test name counts), None if absent."""
    for name in names_for_role(role):
        path = _folder(archives_dir) / name
        if path.is_file():
            return path
    return None


def _near_miss(archives_dir: Path, name: str) -> str | None:
    """A file in the folder that was probably meant to be `name`, described."""
    try:
        listed = archives_dir.listdir() if isinstance(archives_dir, RemotePath) else \
            [e.name for e in os.scandir(archives_dir) if e.is_file()]
        present = [n for n in listed if n not in OFFICIAL]  # a known archive is not a miss
    except OSError:
        return None
    for other in present:
        if other.lower() == name.lower():
            return f"{other} differs only in case; rename it to {name}"
    close = difflib.get_close_matches(name, present, n=1, cutoff=0.85)
    return f"{close[0]} looks like a misnamed copy; rename it to {name}" if close else None


def require_archives(archives_dir: Path, roles: Iterable[str], why: str) -> dict[str, Path]:
    """role -> path of every archive `why` needs; the first one missing stops the run before
    any work, with a near-miss name pointed out."""
    if not _folder(archives_dir).is_dir():
        raise PrepError(f"{archives_dir}: archives folder not found")
    found: dict[str, Path] = {}
    for role in roles:
        path = find_archive(archives_dir, role)
        if path is None:
            name = names_for_role(role)[0]
            hint = _near_miss(archives_dir, name)
            raise PrepError(f"{_folder(archives_dir) / name}: missing, and {why} needs it"
                            + (f" ({hint})" if hint else ""))
        found[role] = path
    return found


def fingerprint(path: Path, span: int = 1 << 16) -> str:
    """A cheap identity of an archive: its size and the SHA-256 of its first and last 64 KiB.

    Recorded with what was made from it, so that a rerun on another archive of the same
    name (and even the same size) is refused rather than mixed in; a full MD5 is `verify`'s.
    """
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    if isinstance(path, RemotePath):  # two ranged reads, not a stream
        h.update(path.read_bytes(0, min(span, size)))
        h.update(path.read_bytes(max(0, size - span), size))
        return h.hexdigest()[:32]
    with open(path, "rb") as f:
        h.update(f.read(span))
        f.seek(max(0, size - span))
        h.update(f.read(span))
    return h.hexdigest()[:32]


@dataclass
class ArchiveStatus:
    """Result for one archive; `required` marks archives the caller cannot do without."""

    name: str
    status: Status
    detail: str
    size: int | None
    required: bool = False


def human_size(n: int) -> str:
    """Decimal units, as the official downloads page shows them (6.7 GB)."""
    if n < 1000:
        return f"{n} bytes"
    x = float(n)
    for unit in ("kB", "MB", "GB"):
        x /= 1000
        if x < 1000 or unit == "GB":
            break
    return f"{x:.1f} {unit}"


def md5_file(
    path: Path, on_chunk: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> str:
    """Hex MD5 of a file read in 8 MiB chunks; `on_chunk(n)` reports progress, `stop` aborts."""
    h = hashlib.md5(usedforsecurity=False)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open_input(path, buffering=0) as f:
        while n := f.readinto(buf):
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            h.update(view[:n])
            if on_chunk is not None:
                on_chunk(n)
    return h.hexdigest()


def _read_manifest(path: Path, parse: Callable[[str], V]) -> dict[str, V]:
    """`<value>  <name>` lines (md5sum/sha-style); a `*` before the name marks binary mode."""
    out: dict[str, V] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    except (OSError, UnicodeDecodeError) as e:
        raise PrepError(f"{path}: cannot read ({e})") from e
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            raise PrepError(f"{path}:{lineno}: expected '<value>  <name>', got {line!r}")
        value, name = parts
        name = name.strip().removeprefix("*").removeprefix("./")
        try:
            out[name] = parse(value)
        except ValueError as e:
            raise PrepError(f"{path}:{lineno}: bad value {value!r}") from e
    return out


def _parse_md5(value: str) -> str:
    value = value.lower()
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(value)
    return value


def reference(archives_dir: Path) -> dict[str, tuple[int | None, str | None]]:
    """Name -> (size, md5) to check against: MD5SUMS/SIZES entries override the official ones."""
    md5s = _read_manifest(archives_dir / MD5SUMS, _parse_md5)
    sizes = _read_manifest(archives_dir / SIZES, int)
    ref: dict[str, tuple[int | None, str | None]] = {
        name: (a.size, a.md5) for name, a in OFFICIAL.items()
    }
    for name in {*md5s, *sizes}:
        # A listed file is checked against the manifest only: official values would
        # never match a synthetic replica.
        ref[name] = (sizes.get(name), md5s.get(name))
    return ref


def _resolve_required(require: Iterable[str]) -> tuple[set[str], set[str]]:
    """Split `require` into roles and file names (anything that is not a role is a name)."""
    roles: set[str] = set()
    names: set[str] = set()
    for item in require:
        if item in ROLES:
            roles.add(item)
        elif item in OFFICIAL:
            roles.add(OFFICIAL[item].role)  # either test name satisfies the test role
        else:
            names.add(item)
    return roles, names


def _size_status(name: str, size: int, want: int | None) -> ArchiveStatus | None:
    """MISMATCH when the size is known and differs (the cheap test for a truncated download)."""
    if want is not None and size != want:
        hint = "truncated download?" if size < want else "wrong file?"
        return ArchiveStatus(
            name, "MISMATCH", f"size {size:,} bytes, expected {want:,} ({hint})", size,
        )
    return None


def verify_archives(
    archives_dir: Path, *, quick: bool = False, workers: int | None = None,
    require: Collection[str] = (), progress: bool = True,
) -> list[ArchiveStatus]:
    """Check each archive present against its reference size and (unless quick) MD5.

    Returns one status per official archive role (MISSING if absent) and per other
    file the folder's MD5SUMS/SIZES list; use `verify_passed` for the verdict.
    """
    archives_dir = _folder(archives_dir)
    if not archives_dir.is_dir():
        raise PrepError(f"{archives_dir}: no such folder")
    ref = reference(archives_dir)
    req_roles, req_names = _resolve_required(require)

    # Candidates in a stable order: official table order, then extra listed names sorted.
    extra = sorted((set(ref) | req_names) - set(OFFICIAL))
    present: dict[str, int] = {}
    results: dict[str, ArchiveStatus] = {}
    for name in [*OFFICIAL, *extra]:
        path = archives_dir / name
        if path.is_file():
            present[name] = path.stat().st_size
    for role in ROLES:
        names = names_for_role(role)
        if not any(n in present for n in names):
            also = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
            results[names[0]] = ArchiveStatus(
                names[0], "MISSING", "not found" + also, None, required=role in req_roles,
            )
    for name in extra:
        if name not in present:
            results[name] = ArchiveStatus(name, "MISSING", "not found", None,
                                          required=name in req_names)

    to_hash: list[str] = []
    for name, size in present.items():
        want_size, want_md5 = ref.get(name, (None, None))
        bad = _size_status(name, size, want_size)
        if bad is not None:
            results[name] = bad
        elif quick:
            results[name] = (
                ArchiveStatus(name, "OK", f"{human_size(size)} (size only)", size)
                if want_size is not None
                else ArchiveStatus(name, "UNKNOWN", f"{human_size(size)}; no reference size",
                                   size)
            )
        elif want_md5 is None:
            note = "size matches" if want_size is not None else "no reference size"
            results[name] = ArchiveStatus(
                name, "UNKNOWN", f"{human_size(size)}; {note}, no reference MD5", size,
            )
        else:
            to_hash.append(name)

    for name, got in _hash_all(archives_dir, to_hash, present, workers, progress).items():
        size, want = present[name], ref[name][1]
        results[name] = (
            ArchiveStatus(name, "OK", human_size(size), size) if got == want
            else ArchiveStatus(name, "MISMATCH", f"MD5 {got}, expected {want}", size)
        )

    order = {name: i for i, name in enumerate([*OFFICIAL, *extra])}
    out = sorted(results.values(), key=lambda s: order[s.name])
    for s in out:
        role = OFFICIAL[s.name].role if s.name in OFFICIAL else None
        s.required = s.required or s.name in req_names or role in req_roles
    return out


def _hash_all(
    archives_dir: Path, names: list[str], sizes: dict[str, int], workers: int | None,
    progress: bool,
) -> dict[str, str]:
    """MD5 of each named file, several at once (hashlib releases the GIL); one byte bar."""
    if not names:
        return {}
    workers = max(1, min(workers or default_workers(), len(names)))
    total = sum(sizes[n] for n in names)
    pbar = bar(total, "verify", bytes_=True) if progress else None
    lock = threading.Lock()
    stop = threading.Event()

    def advance(n: int) -> None:
        if pbar is not None:
            with lock:
                pbar.update(n)

    def one(name: str) -> str:
        try:
            return md5_file(archives_dir / name, advance, stop)
        except OSError as e:
            raise PrepError(f"{archives_dir / name}: cannot read ({e.strerror or e})") from e

    out: dict[str, str] = {}
    # Largest first, so the 138 GB train archive is not left running alone at the end.
    ordered = sorted(names, key=lambda n: -sizes[n])
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="md5")
    try:
        futures = {pool.submit(one, n): n for n in ordered}
        for f in as_completed(futures):
            out[futures[f]] = f.result()
    except BaseException:
        stop.set()  # running hashes end at their next chunk instead of reading on
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if pbar is not None:
            pbar.close()
    return out


def verify_passed(statuses: Iterable[ArchiveStatus]) -> bool:
    """True when every archive present is OK and no required archive is missing."""
    return all(
        s.status == "OK" or (s.status == "MISSING" and not s.required) for s in statuses
    )
