"""Which archives to fetch, against which reference, and the report of what happened.

The reference is the rule `verify` applies: the official table, overridden for
the files they list by `MD5SUMS` / `SIZES` in the archives folder.  A mirror that
serves those two files (a replica made by `imagenet-prep fake` does) has them
copied into the folder first, so its own values apply here and in a later
`verify`.  Everything is probed before anything is downloaded, smallest archive
first, so a wrong URL or missing credentials shows within seconds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagenet_prep.download import DEFAULT_BASE_URL
from imagenet_prep.download.auth import Credentials
from imagenet_prep.download.sources import NotFound, Remote, Source, open_source
from imagenet_prep.download.transfer import (
    TransferOptions,
    bad_path,
    bytes_done,
    fetch_file,
)
from imagenet_prep.errors import NoSpaceError, PrepError
from imagenet_prep.runtime.files import check_writable, ensure_dir, os_error, write_atomic
from imagenet_prep.runtime.progress import bar
from imagenet_prep.runtime.storage import RemotePath
from imagenet_prep.sources.archives import (
    MD5SUMS,
    OFFICIAL,
    ROLES,
    SIZES,
    human_size,
    md5_file,
    names_for_role,
    reference,
)

ORDER = ("devkit", "bbox_val", "bbox_train", "val", "test", "train")  # smallest first


@dataclass
class _Item:
    role: str
    name: str
    remote: Remote
    want_size: int | None
    want_md5: str | None


def resolve_roles(items: Iterable[str]) -> tuple[str, ...]:
    """Roles (or official file names) -> roles in download order; an error names a typo."""
    roles = set()
    for item in items:
        if item == "all":
            roles.update(ROLES)
        elif item in ROLES:
            roles.add(item)
        elif item in OFFICIAL:
            roles.add(OFFICIAL[item].role)
        else:
            raise PrepError(f"--only {item!r}: expected some of {', '.join(ROLES)} (or all)")
    return tuple(r for r in ORDER if r in roles)


def _fetch_manifests(source: Source, to: Path | RemotePath, log: Callable[[str], None]
                     ) -> list[str]:
    """Copy the mirror's MD5SUMS and SIZES into `to` (a folder or a bucket prefix) if they
    parse; returns the names copied.

    They are checked with verify's own parser in a temporary folder first, so a
    mirror's broken list never lands in `to` (it is reported and left out); each is then
    written whole (renamed into place, or uploaded as one object).
    """
    got = {name: data for name in (MD5SUMS, SIZES)
           if (data := source.fetch_small(name)) is not None}
    if not got:
        return []
    with tempfile.TemporaryDirectory(prefix="imagenet-prep-manifests-") as tmp:
        for name, data in got.items():
            (Path(tmp) / name).write_bytes(data)
        try:
            reference(Path(tmp))
        except PrepError as e:
            where = f"{source.display.rstrip('/')}/"
            log(f"ignoring {' and '.join(got)} from {source.display}: "
                f"{str(e).replace(tmp + os.sep, where)}")
            return []
    for name, data in got.items():
        write_atomic(to / name, data)
    return list(got)


def _reference_line(to: Path, fetched: list[str], source: Source) -> str:
    if fetched:
        return (f"reference: {' and '.join(fetched)} from {source.display} (they override the "
                "official table for the files they list)")
    local = [n for n in (MD5SUMS, SIZES) if (to / n).is_file()]
    if local:
        return f"reference: {' and '.join(local)} in {to}, then the official ILSVRC2012 table"
    return "reference: the official ILSVRC2012 table (sizes and MD5s from image-net.org)"


def _origin(name: str, ref: dict[str, tuple[int | None, str | None]]) -> str:
    a = OFFICIAL.get(name)
    return "official" if a is not None and ref.get(name) == (a.size, a.md5) else "MD5SUMS/SIZES"


def _candidates(role: str, ref: dict[str, tuple[int | None, str | None]]) -> list[str]:
    """The role's file names (test has two): one a manifest lists first, then one with a
    known MD5 (image-net.org's v10102019 test archive before the unchecked original)."""
    names = list(names_for_role(role))
    return sorted(names, key=lambda n: (_origin(n, ref) != "MD5SUMS/SIZES",
                                        (ref.get(n) or (None, None))[1] is None))


def download_archives(
    to: Path | RemotePath, *, base_url: str = DEFAULT_BASE_URL, roles: Iterable[str] = ROLES,
    credentials: Credentials | None = None, options: TransferOptions | None = None,
    timeout: tuple[float, float] = (15.0, 60.0), verify_existing: bool = False,
    progress: bool = True, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Download the archives of `roles` into `to`; returns the report (see cli/download.py).

    Resumes any NAME.part left by an earlier run; an archive already here with the
    reference size is skipped (MD5-checked too with `verify_existing`).  An s3:// `to`
    streams each archive into a multipart upload instead (download/bucket_job.py).
    """
    opts = options or TransferOptions()
    roles = resolve_roles(roles)  # an unknown role is said before anything is made
    if isinstance(to, RemotePath):
        from imagenet_prep.download.bucket_job import download_to_bucket

        return download_to_bucket(to, base_url=base_url, roles=roles, credentials=credentials,
                                  options=opts, timeout=timeout,
                                  verify_existing=verify_existing, progress=progress, log=log)
    to = ensure_dir(Path(to))
    check_writable(to)  # an unwritable folder is said now, not after the probes
    return run_job(to, DestinationSteps(_already_here, _check_space, _download_items),
                   base_url=base_url, roles=roles, credentials=credentials, opts=opts,
                   timeout=timeout, verify_existing=verify_existing, progress=progress, log=log)


@dataclass(frozen=True)
class DestinationSteps:
    """What differs between a download into a folder and one into a bucket
    (download/bucket_job.py); `run_job` is the rest, shared."""

    already_here: Callable[..., dict[str, Any] | None]  # (role, to, ref, verify, progress, log)
    before_transfer: Callable[[Any, list[_Item]], None]  # e.g. the free-space check
    transfer: Callable[..., list[dict[str, Any]]]  # (items, source, to, ref, opts, progress, log)


def run_job(to: Path | RemotePath, steps: DestinationSteps, *, base_url: str,
            roles: Iterable[str], credentials: Credentials | None, opts: TransferOptions,
            timeout: tuple[float, float], verify_existing: bool, progress: bool,
            log: Callable[[str], None]) -> dict[str, Any]:
    """Manifests, then what is already there, then every missing archive probed before any
    is fetched, then the transfers; returns the report (see cli/download.py)."""
    wanted = resolve_roles(roles)
    t0 = time.monotonic()
    source = open_source(base_url, credentials, timeout=timeout)
    try:
        fetched = opts.retry.call(lambda: _fetch_manifests(source, to, log),
                                  source.display)
        ref = reference(to)  # type: ignore[arg-type]
        ref_line = _reference_line(to, fetched, source)  # type: ignore[arg-type]
        log(ref_line)
        files: list[dict[str, Any]] = []
        items: list[_Item] = []
        for role in wanted:
            here = steps.already_here(role, to, ref, verify_existing, progress, log)
            if here is not None:
                files.append(here)
                log(f"{'HERE':<8} {here['name']}  {human_size(here['bytes'])}, already here")
            else:
                items.append(_probe_role(role, source, to, ref, opts))  # type: ignore[arg-type]
        steps.before_transfer(to, items)
        files += steps.transfer(items, source, to, ref, opts, progress, log)
    finally:
        source.close()
    order = {r: i for i, r in enumerate(wanted)}
    files.sort(key=lambda f: order[f["role"]])
    fetched_files = [f for f in files if f["status"] == "downloaded"]
    moved = sum(f["downloaded_bytes"] for f in fetched_files)
    seconds = time.monotonic() - t0
    report = {
        "to": str(to), "base_url": source.display,
        "reference": ref_line.removeprefix("reference: "), "manifests_fetched": fetched,
        "files": files, "downloaded_files": len(fetched_files),
        "already_here": len(files) - len(fetched_files), "bytes": moved,
        "seconds": round(seconds, 3), "mb_per_s": round(moved / 1e6 / seconds, 1) if seconds else 0,
    }
    if any("parts_uploaded" in f for f in files):  # a bucket: multipart parts
        report["parts_uploaded"] = sum(f["parts_uploaded"] for f in files)
    return report


def _already_here(role: str, to: Path, ref: dict, verify_existing: bool, progress: bool,
                  log: Callable[[str], None]) -> dict[str, Any] | None:
    """The report entry of an archive of `role` already complete in `to`, else None."""
    for name in _candidates(role, ref):
        path = to / name
        if not path.is_file():
            continue
        size = path.stat().st_size
        # Without a reference size (the official table has none for the box archives) the
        # file is taken as it is, as `verify` does: no request, so a complete folder needs
        # neither network nor credentials.
        want_size, want_md5 = ref.get(name, (None, None))
        if want_size is not None and size != want_size:
            raise PrepError(f"{path}: already here but {size:,} bytes, expected {want_size:,}; "
                            "move it away to download it again")
        md5 = None
        if verify_existing and want_md5 is not None:
            pbar = bar(size, f"verify {name}", bytes_=True) if progress else None
            try:
                md5 = md5_file(path, pbar.update if pbar is not None else None)
            except OSError as e:
                raise PrepError(f"{path}: cannot read ({e.strerror or e})") from None
            finally:
                if pbar is not None:
                    pbar.close()
            if md5 != want_md5:
                try:
                    os.replace(path, bad_path(path))
                except OSError as e:
                    raise os_error(path, e) from None
                log(f"{name}: MD5 {md5}, expected {want_md5}; renamed to "
                    f"{bad_path(path).name}, downloading it again")
                return None
        return {"role": role, "name": name, "status": "already here", "bytes": size,
                "downloaded_bytes": 0, "md5": md5,
                "md5_check": "OK" if md5 else ("UNKNOWN" if want_md5 is None else "not checked"),
                "reference": _origin(name, ref)}
    return None


def _probe_role(role: str, source: Source, to: Path, ref: dict, opts: TransferOptions) -> _Item:
    """Find the role's archive at the source (the other test name on 404) and check its size."""
    missing: list[NotFound] = []
    for name in _candidates(role, ref):
        try:
            remote = opts.retry.call(lambda n=name: source.probe(n), source.display)
        except NotFound as e:
            missing.append(e)
            continue
        want_size, want_md5 = ref.get(name, (None, None))
        if want_size is not None and remote.size is not None and remote.size != want_size:
            raise PrepError(f"{remote.url}: the server has {remote.size:,} bytes, the reference "
                            f"says {want_size:,}; wrong --base-url, or another version of "
                            "the file")
        return _Item(role, name, remote, want_size if want_size is not None else remote.size,
                     want_md5)
    also = "; ".join(str(e) for e in missing[1:])
    raise NotFound(str(missing[0]) + (f" (also {also})" if also else ""))


def _check_space(to: Path, items: list[_Item]) -> None:
    """Refuse before downloading when the folder's disk cannot hold what is left."""
    need = sum(max(0, (i.remote.size or 0) - bytes_done(to / i.name, i.remote)) for i in items)
    free = shutil.disk_usage(to).free
    if need > free:
        raise NoSpaceError(f"{to}: cannot write: no space left on device (the downloads "
                           f"need {human_size(need)} more, {human_size(free)} is free)")


def _download_items(items: list[_Item], source: Source, to: Path, ref: dict,
                    opts: TransferOptions, progress: bool, log: Callable[[str], None]
                    ) -> list[dict[str, Any]]:
    def fetch(item: _Item, advance: Callable[[int], None]) -> Any:
        final = to / item.name
        advance(bytes_done(final, item.remote))  # what a resume keeps
        return fetch_file(source, item.remote, final, want_size=item.want_size,
                          want_md5=item.want_md5, opts=opts, log=log, advance=advance)

    def extra(item: _Item, result: Any) -> tuple[dict[str, Any], str]:
        return {"md5_seconds_after": round(result.md5_seconds_after, 3)}, ""

    return transfer_each(items, ref, progress, log, fetch, extra)


def transfer_each(items: list[_Item], ref: dict, progress: bool, log: Callable[[str], None],
                  fetch: Callable[[_Item, Callable[[int], None]], Any],
                  extra: Callable[[_Item, Any], tuple[dict[str, Any], str]]
                  ) -> list[dict[str, Any]]:
    """Each item fetched in turn under a file bar and an overall bar; a report entry and a
    line for each (`extra`: the destination's own fields and the end of its line)."""
    out = []
    total = sum(i.remote.size or 0 for i in items)
    lock = threading.Lock()
    all_bar = bar(total, "download", bytes_=True) if progress and len(items) > 1 else None
    try:
        for item in items:
            file_bar = bar(item.remote.size, item.name, bytes_=True) if progress else None

            def advance(n: int, fb=file_bar) -> None:
                with lock:
                    for b in (fb, all_bar):
                        if b is not None:
                            b.update(n)

            try:
                result = fetch(item, advance)
            finally:
                if file_bar is not None:
                    file_bar.close()
            rate = result.downloaded / 1e6 / result.seconds if result.seconds else 0.0
            fields, tail = extra(item, result)
            entry = {
                "role": item.role, "name": item.name, "url": item.remote.url,
                "status": "downloaded", "bytes": result.size,
                "downloaded_bytes": result.downloaded, "seconds": round(result.seconds, 3),
                "mb_per_s": round(rate, 1), "connections": result.connections,
                "resumed": result.resumed_from > 0, "resumed_from": result.resumed_from,
                "restarted": bool(result.restarts), "restart_reasons": result.restarts,
                "retries": result.retries,
                "md5": result.md5, "md5_check": "OK" if item.want_md5 else "UNKNOWN",
                "reference": _origin(item.name, ref), **fields,
            }
            out.append(entry)
            log(_file_line(entry) + tail)
    finally:
        if all_bar is not None:
            all_bar.close()
    return out


def _file_line(f: dict[str, Any]) -> str:
    conns = f"{f['connections']} connection{'s' if f['connections'] != 1 else ''}"
    extra = ", resumed" if f["resumed"] else ""
    extra += ", restarted" if f["restarted"] else ""
    extra += f", {f['retries']} retries" if f["retries"] else ""
    check = ("size and MD5 match" if f["md5_check"] == "OK"
             else f"size matches, no reference MD5 (MD5 {f['md5']})")
    size = human_size(f["bytes"])
    if f["downloaded_bytes"] != f["bytes"]:
        size += f" ({human_size(f['downloaded_bytes'])} this run)"
    return (f"{f['md5_check']:<8} {f['name']}  {size} in {f['seconds']:.1f} s "
            f"({f['mb_per_s']:.1f} MB/s, {conns}{extra}); {check}")
