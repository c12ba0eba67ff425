"""The S3 multipart-upload calls a download into a bucket needs, through s3fs.

s3fs (the `[s3]` extra, already what reads archives from a bucket) is used for its
client: the same credentials, `--storage-option` values and endpoint as every
other bucket access, its retries of throttling and transient errors, and its
translation of S3 error codes into Python exceptions, which `storage.errors` turns
into one line naming the URL.  Only the raw API calls are used (`call_s3`):
s3fs's own file writer cannot resume an upload another process started.
Facts relied on (part sizes and counts, ETags of parts): docs/storage.md.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from imagenet_prep.errors import OptionError
from imagenet_prep.runtime.storage import RemotePath, errors
from imagenet_prep.runtime.window import Window

MIN_PART = 5 << 20  # S3: every part but the last is at least 5 MiB ...
MAX_PART = 5 << 30  # ... and at most 5 GiB
MAX_PARTS = 10_000  # ... and an upload has at most 10,000 parts


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str  # without quotes; the part's MD5 in hex unless the bucket encrypts with KMS


class PartBody(Window):
    """A part's buffer as a seekable file, so the client reads it in small pieces.

    Handed a bytes-like Body, botocore and aiohttp make whole copies of it (three
    measured, 96 MiB for a 32 MiB part); handed a file, they read it in chunks.
    """

    def __init__(self, buf: bytes | bytearray) -> None:
        view = memoryview(buf).cast("B")
        super().__init__(lambda n, at: view[at:at + n], 0, len(view))


def part_size_for(size: int, wanted: int) -> int:
    """`wanted`, raised (to whole MiB) when `size` would need more than MAX_PARTS parts."""
    if not MIN_PART <= wanted <= MAX_PART:
        raise OptionError(f"--part-size {wanted:,}: S3 takes parts of 5 MiB to 5 GiB")
    need = -(-size // MAX_PARTS)
    if need > wanted:
        wanted = -(-need // (1 << 20)) << 20
    return wanted


class MultipartObject:
    """One object key and the multipart uploads of it."""

    def __init__(self, target: RemotePath) -> None:
        if target.protocol not in ("s3", "s3a"):
            raise OptionError(f"{target}: downloading into a bucket works with s3:// only "
                              "(multipart uploads); download to a folder and copy it")
        self.target = target
        self.fs = target.fs
        self.bucket, self.key = target.path.split("/", 1)

    def _call(self, method: str, action: str, **kw: Any) -> Any:
        with errors(self.target.url, action, self.target.options):
            return self.fs.call_s3(method, Bucket=self.bucket, **kw)

    def head(self) -> dict[str, Any] | None:
        """The object's size and user metadata, None when there is no object."""
        try:
            r = self._call("head_object", "read", Key=self.key)
        except FileNotFoundError as e:
            if "bucket does not exist" in str(e):
                raise
            return None
        return {"size": int(r["ContentLength"]), "metadata": dict(r.get("Metadata") or {})}

    def uploads(self) -> list[str]:
        """IDs of the unfinished multipart uploads of this key, oldest first."""
        found: list[tuple[str, str]] = []
        kw: dict[str, Any] = {"Prefix": self.key}
        while True:
            r = self._call("list_multipart_uploads", "list uploads in", **kw)
            found += [(str(u.get("Initiated", "")), u["UploadId"]) for u in r.get("Uploads", [])
                      if u.get("Key") == self.key]
            if not r.get("IsTruncated"):
                break
            kw.update(KeyMarker=r.get("NextKeyMarker", ""),
                      UploadIdMarker=r.get("NextUploadIdMarker", ""))
        return [upload for _, upload in sorted(found)]

    def parts(self, upload: str) -> dict[int, Part] | None:
        """The parts uploaded so far, None when the upload no longer exists."""
        out: dict[int, Part] = {}
        kw: dict[str, Any] = {"Key": self.key, "UploadId": upload}
        while True:
            try:
                r = self._call("list_parts", "list the parts of", **kw)
            except FileNotFoundError as e:
                if "bucket does not exist" in str(e):
                    raise
                return None
            for p in r.get("Parts", []):
                n = int(p["PartNumber"])
                out[n] = Part(n, int(p["Size"]), str(p["ETag"]).strip('"'))
            if not r.get("IsTruncated"):
                return out
            kw["PartNumberMarker"] = r["NextPartNumberMarker"]

    def create(self, metadata: dict[str, str]) -> str:
        r = self._call("create_multipart_upload", "write", Key=self.key, Metadata=metadata,
                       ContentType="application/octet-stream")
        return str(r["UploadId"])

    def upload_part(self, upload: str, number: int, data: bytes | bytearray, md5: bytes) -> str:
        """Upload one part; the server checks it against `md5` (Content-MD5). Its ETag."""
        r = self._call("upload_part", "write", Key=self.key, UploadId=upload,
                       PartNumber=number, Body=PartBody(data),
                       ContentMD5=base64.b64encode(md5).decode("ascii"))
        return str(r["ETag"]).strip('"')

    def complete(self, upload: str, parts: list[Part]) -> None:
        self._call("complete_multipart_upload", "write", Key=self.key, UploadId=upload,
                   MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"'}
                                              for p in parts]})

    def abort(self, upload: str) -> None:
        try:
            self._call("abort_multipart_upload", "delete", Key=self.key, UploadId=upload)
        except FileNotFoundError:
            pass  # already gone
