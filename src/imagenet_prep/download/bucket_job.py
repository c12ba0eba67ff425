"""`download --to s3://bucket/prefix`: the archives streamed into a bucket, no local disk.

The same steps as a download into a folder (download/job.py): the mirror's
MD5SUMS / SIZES are checked and copied (as objects), every archive is probed
before any is fetched, smallest first, and the report has the same shape, plus
each archive's part size and parts.  An archive whose object is already in the
bucket with the reference size, and with our `md5` metadata equal to the
reference MD5 when one is known, is skipped without a byte moved (`--verify`
reads an object without that metadata through and checks its MD5).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from imagenet_prep.download.auth import Credentials
from imagenet_prep.download.job import (
    DestinationSteps,
    _candidates,
    _Item,
    _origin,
    run_job,
    transfer_each,
)
from imagenet_prep.download.s3parts import MultipartObject
from imagenet_prep.download.sources import Source
from imagenet_prep.download.to_bucket import MD5_METADATA, fetch_to_bucket, record_path
from imagenet_prep.download.transfer import TransferOptions
from imagenet_prep.errors import PrepError
from imagenet_prep.runtime.progress import bar
from imagenet_prep.runtime.storage import RemotePath
from imagenet_prep.sources.archives import human_size, md5_file


def _already_there(role: str, to: RemotePath, ref: dict, verify_existing: bool,
                   progress: bool, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The report entry of an archive of `role` already complete in the bucket, else None."""
    for name in _candidates(role, ref):
        target = to / name
        head = MultipartObject(target).head()
        if head is None:
            continue
        size, recorded = head["size"], head["metadata"].get(MD5_METADATA)
        want_size, want_md5 = ref.get(name, (None, None))
        if want_size is not None and size != want_size:
            raise PrepError(f"{target}: already there but {size:,} bytes, expected "
                            f"{want_size:,}; delete it to download it again")
        if recorded and want_md5 and recorded != want_md5:
            raise PrepError(f"{target}: already there with MD5 {recorded} recorded, expected "
                            f"{want_md5}; delete it to download it again")
        md5 = recorded if recorded and recorded == want_md5 else None
        if verify_existing and want_md5 is not None and md5 is None:
            md5 = _md5_of_object(target, size, progress)
            if md5 != want_md5:
                log(f"{name}: MD5 {md5}, expected {want_md5}; downloading it again "
                    "(the object is replaced only once the new one is complete)")
                return None
        record_path(target).unlink(missing_ok=True)  # a completed upload's leftover record
        return {"role": role, "name": name, "status": "already here", "bytes": size,
                "downloaded_bytes": 0, "md5": md5, "parts_uploaded": 0,
                "md5_check": "OK" if md5 else ("UNKNOWN" if want_md5 is None else "not checked"),
                "reference": _origin(name, ref)}
    return None


def _md5_of_object(target: RemotePath, size: int, progress: bool) -> str:
    pbar = bar(size, f"verify {target.name}", bytes_=True) if progress else None
    try:
        return md5_file(target, pbar.update if pbar is not None else None)  # type: ignore[arg-type]
    finally:
        if pbar is not None:
            pbar.close()


def download_to_bucket(
    to: RemotePath, *, base_url: str, roles: Iterable[str], credentials: Credentials | None,
    options: TransferOptions, timeout: tuple[float, float], verify_existing: bool,
    progress: bool, log: Callable[[str], None],
) -> dict[str, Any]:
    """Download the archives of `roles` into the bucket prefix `to`; the report (see
    cli/download.py).  Resumes any unfinished upload an earlier run left."""
    MultipartObject(to / "probe")  # an unsupported protocol is said before any request
    to.is_dir()  # a missing bucket or missing credentials: said now, in one line
    return run_job(to, DestinationSteps(_already_there, _nothing, _upload_items),
                   base_url=base_url, roles=roles, credentials=credentials, opts=options,
                   timeout=timeout, verify_existing=verify_existing, progress=progress, log=log)


def _nothing(to: RemotePath, items: list[_Item]) -> None:
    """No free-space check: a bucket has no size to fill."""


def _upload_items(items: list[_Item], source: Source, to: RemotePath, ref: dict,
                  opts: TransferOptions, progress: bool, log: Callable[[str], None]
                  ) -> list[dict[str, Any]]:
    def fetch(item: _Item, advance: Callable[[int], None]) -> Any:
        return fetch_to_bucket(source, item.remote, to / item.name, want_size=item.want_size,
                               want_md5=item.want_md5, opts=opts, log=log, advance=advance)

    def extra(item: _Item, r: Any) -> tuple[dict[str, Any], str]:
        return ({"object": str(to / item.name), "part_size": r.part_size, "parts": r.parts,
                 "parts_uploaded": r.parts_uploaded},
                f"; {r.parts_uploaded} of {r.parts} parts of {human_size(r.part_size)} "
                "uploaded this run")

    return transfer_each(items, ref, progress, log, fetch, extra)
