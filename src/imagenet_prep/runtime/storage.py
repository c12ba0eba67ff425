"""Where archives and datasets live: a local path, or an fsspec URL (s3://, gs://, az://, ...).

Local paths stay `pathlib.Path` and every local code path is untouched; only a URL
becomes a `RemotePath`, which knows its filesystem, carries the `--storage-option`
values to whichever process uses it (a Dask worker included) and answers the few
pathlib questions the archive code asks (name, /, is_file, stat, read_text, open).
Errors from a protocol library become one line naming the URL and never show a
credential.  Facts relied on: docs/storage.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

from imagenet_prep.errors import AccessError, OptionError, PrepError

# protocol -> the extra that installs its fsspec implementation
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
          "abfss": "azure", "adl": "azure"}
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")
_MANGLED_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+:/[^/]")
_SECRET_WORDS = ("secret", "key", "token", "password", "credential", "sas", "signature")


def is_url(text: str) -> bool:
    """A `scheme://...` string other than a plain local file:// path."""
    m = _URL.match(text)
    return m is not None and m.group(1).lower() != "file"


def is_remote(where: object) -> bool:
    return isinstance(where, RemotePath)


def parse_storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """`KEY=VALUE` pairs as fsspec keyword arguments.

    A dotted key nests (`client_kwargs.endpoint_url=URL` gives
    {"client_kwargs": {"endpoint_url": URL}}); a value that reads as JSON (true, 3,
    null, {...}) is that value, anything else a string.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, text = pair.partition("=")
        if not eq or not key.strip():
            raise OptionError(f"--storage-option {key.strip() or pair!r}: expected KEY=VALUE")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise OptionError(f"--storage-option {key}: {p} is given a value and keys")
        node[leaf] = value
    return out


def filesystem(protocol: str, options: dict[str, Any], url: str) -> Any:
    """The fsspec filesystem of `protocol`; a missing package is one line naming the extra."""
    extra = EXTRAS.get(protocol)
    hint = f"pip install 'imagenet-prep[{extra}]'" if extra else "pip install fsspec"
    try:
        import fsspec
    except ImportError:
        raise PrepError(f"{url}: reading or writing {protocol}:// needs fsspec: {hint}") from None
    try:
        return fsspec.filesystem(protocol, **options)
    except ImportError:
        what = f"the {extra} extra" if extra else f"the fsspec package for {protocol}://"
        raise PrepError(f"{url}: {protocol}:// needs {what}: {hint}") from None
    except ValueError as e:
        if "Protocol not known" in str(e):
            raise PrepError(f"{url}: unknown storage protocol {protocol}://") from None
        raise PrepError(f"{url}: bad storage options for {protocol}:// "
                        f"({type(e).__name__})") from None
    except TypeError as e:
        raise OptionError(f"{url}: a --storage-option is not one {protocol}:// takes "
                          f"({_scrub(str(e), options)})") from None


def _scrub(text: str, options: dict[str, Any]) -> str:
    """`text` with every storage option value that looks secret replaced by ***."""
    stack = [options]
    while stack:
        node = stack.pop()
        for k, v in node.items():
            if isinstance(v, dict):
                stack.append(v)
            elif isinstance(v, str) and v and any(w in k.lower() for w in _SECRET_WORDS):
                text = text.replace(v, "***")
    return text


@contextlib.contextmanager
def errors(url: str, action: str = "read", options: dict[str, Any] | None = None
           ) -> Iterator[None]:
    """Turn what a protocol library raises into one line naming `url` (no credentials)."""
    try:
        yield
    except PrepError:
        raise
    except FileNotFoundError as e:
        text = str(e)
        if "bucket does not exist" in text or "NoSuchBucket" in text:
            raise NotFound(f"{url}: the bucket does not exist") from None
        raise NotFound(f"{url}: not found") from None
    except PermissionError as e:
        raise AccessError(f"{url}: cannot {action}: access denied "
                          f"({_scrub(str(e), options or {})})") from None
    except Exception as e:  # botocore and others: only the classes are known here
        name = type(e).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"):
            raise AccessError(f"{url}: cannot {action}: no credentials found (set them in the "
                              "environment, a profile, or --storage-option)") from None
        if name in ("ClientError", "EndpointConnectionError", "ConnectTimeoutError",
                    "ClientConnectorError", "ServerDisconnectedError", "ReadTimeoutError"):
            raise PrepError(f"{url}: cannot {action}: "
                            f"{_scrub(str(e), options or {})}") from None
        raise


class NotFound(PrepError, FileNotFoundError):
    """An object or bucket that is not there: a PrepError that pathlib-style callers can
    also catch as FileNotFoundError."""


class RemotePath:
    """An object or prefix in an fsspec filesystem, named by its URL.

    Pickles as (url, options): the filesystem is made again where it is used.  It has
    no `__fspath__`, so a local-only function handed one fails instead of writing a
    folder named `s3:`.
    """

    __slots__ = ("url", "options", "_fs")

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        m = _URL.match(url)
        if m is None:
            raise PrepError(f"{url}: not a storage URL")
        self.url = f"{m.group(1).lower()}://{m.group(2).rstrip('/')}"
        self.options = dict(options or {})
        self._fs: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemotePath, (self.url, self.options))

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __str__(self) -> str:
        return self.url

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other: RemotePath) -> bool:  # sorted() of objects, by URL
        return self.url < other.url

    @property
    def parent(self) -> RemotePath:
        return self / ".."

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def path(self) -> str:
        """The path the filesystem takes (bucket/key, no scheme)."""
        return self.url.split("://", 1)[1]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs = filesystem(self.protocol, self.options, self.url)
        return self._fs

    def resolve(self) -> RemotePath:
        """A URL is already absolute (what a Dask worker elsewhere needs)."""
        return self

    def with_options(self, options: dict[str, Any]) -> RemotePath:
        return RemotePath(self.url, options)

    def __truediv__(self, name: str) -> RemotePath:
        import posixpath

        # "." and "a/../b" as pathlib would take them: an object key has no such parts
        child = RemotePath(f"{self.protocol}://{posixpath.normpath(f'{self.path}/{name}')}",
                           self.options)
        child._fs = self._fs
        return child

    def info(self) -> dict[str, Any]:
        with errors(self.url, options=self.options):
            return self.fs.info(self.path)

    def exists(self) -> bool:
        with errors(self.url, options=self.options):
            return bool(self.fs.exists(self.path))

    def is_file(self) -> bool:
        try:
            return self.info().get("type") == "file"
        except NotFound as e:
            if "bucket does not exist" in str(e):
                raise
            return False

    def is_dir(self) -> bool:
        """A prefix is a folder when objects are under it (object stores have no empty
        folders), a bucket when it exists; a missing bucket is an error, not False."""
        with errors(self.url, options=self.options):
            if self.fs.isdir(self.path):
                return True
            bucket = self.path.split("/", 1)[0]
            self.fs.ls(bucket)  # raises for a missing bucket or missing credentials
            return "/" not in self.path

    def is_relative_to(self, other: object) -> bool:
        return isinstance(other, RemotePath) and self.url.startswith(other.url + "/")

    def relative_to(self, other: RemotePath) -> PurePosixPath:
        if not self.is_relative_to(other):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.url[len(other.url) + 1:])

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to make: a prefix exists once an object is written under it."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            with errors(self.url, "delete", self.options):
                self.fs.rm_file(self.path)
        except NotFound:
            if not missing_ok:
                raise

    @contextlib.contextmanager
    def upload(self) -> Iterator[Any]:
        """A local temporary file for this object, uploaded in one piece (a single PUT, or
        a multipart upload completed at the end) only if the block succeeds: the object
        appears complete or not at all."""
        import tempfile

        with tempfile.NamedTemporaryFile(prefix=".imagenet-prep-", suffix=".upload") as f:
            yield f
            f.flush()
            with errors(self.url, "write", self.options):
                self.fs.put_file(f.name, self.path)

    @contextlib.contextmanager
    def download(self) -> Iterator[Path]:
        """This object in a local temporary file (one streamed GET), removed after the
        block: for readers that seek and pread, such as a shard check."""
        import tempfile

        with tempfile.NamedTemporaryFile(prefix=".imagenet-prep-", suffix=".download") as f:
            with errors(self.url, options=self.options):
                self.fs.get_file(self.path, f.name)
            yield Path(f.name)

    def stat(self) -> SimpleNamespace:
        return SimpleNamespace(st_size=int(self.info()["size"]))

    def etag(self) -> str:
        """What changes when the object changes: its ETag, MD5 or, failing those, mtime."""
        info = self.info()
        for key in ("ETag", "etag", "md5Hash", "content_md5", "mtime", "LastModified",
                    "last_modified"):
            if info.get(key):
                return str(info[key]).strip('"')
        return ""

    def read_bytes(self, start: int | None = None, end: int | None = None) -> bytes:
        with errors(self.url, options=self.options):
            return self.fs.cat_file(self.path, start=start, end=end)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def open(self, mode: str = "rb", **kw: Any) -> Any:
        with errors(self.url, options=self.options):
            return self.fs.open(self.path, mode, **kw)

    def iterdir(self) -> Iterator[RemotePath]:
        return (self / name for name in self.listdir())

    def listdir(self) -> list[str]:
        with errors(self.url, options=self.options):
            return sorted(p.rstrip("/").rsplit("/", 1)[-1]
                          for p in self.fs.ls(self.path, detail=False))


Location = Path | RemotePath


def location(text: str) -> Path | RemotePath:
    """An argparse type: a local path as `Path` (as before), a URL as `RemotePath`."""
    if is_url(text):
        return RemotePath(text)
    if text.lower().startswith("file://"):
        return Path(text[len("file://"):])
    return Path(text)


# command-line attributes that may name a bucket today; every other one refuses a URL
REMOTE_OK = ("archives",)
# commands whose DATASET may be a bucket: their outputs are whole objects (shards, indexes,
# the box CSV, state records); the others need a POSIX folder (class trees, links)
REMOTE_DATASET = ("tfrecord", "check", "wds", "prepare", "parquet", "mds", "tfds", "synsets",
                  "report")
# `download --to s3://...` streams each archive into a multipart upload (download/to_bucket.py)
REMOTE_DOWNLOAD = ("download",)


def bind(args: Any, options: dict[str, Any]) -> None:
    """Give every URL on the command line the storage options; refuse a URL where only a
    local folder works yet."""
    if getattr(args, "download", False) is True and isinstance(getattr(args, "archives", None),
                                                               RemotePath) \
            and args.archives.protocol not in ("s3", "s3a"):  # s3: download/to_bucket.py
        raise OptionError(f"{args.archives}: --download writes into s3:// buckets only; "
                          "download to a folder, copy it to the bucket, then use --archives")
    for key, value in vars(args).items():
        if isinstance(value, RemotePath):
            if key in ("dataset", "out") and args.command in REMOTE_DATASET:
                setattr(args, key, value.with_options(options))
                continue
            if key == "to" and args.command in REMOTE_DOWNLOAD:
                setattr(args, key, value.with_options(options))
                continue
            if key not in REMOTE_OK:
                raise _local_only(str(value), key, args.command)
            setattr(args, key, value.with_options(options))
        elif isinstance(value, Path) and _MANGLED_URL.match(str(value)):
            # a URL that an option still parses as a Path (s3://b/x became s3:/b/x):
            # refused rather than made into a local folder named `s3:`
            raise _local_only(str(value).replace(":/", "://", 1), key, args.command)


def _local_only(url: str, key: str, command: str) -> OptionError:
    """The one-line refusal of a bucket URL where a folder is needed, with what takes one."""
    return OptionError(
        f"{url}: {key.replace('_', '-')} must be a local or shared folder for {command} "
        f"(class trees and links need one); a bucket URL is taken by --archives, by the "
        f"DATASET of {', '.join(REMOTE_DATASET)}, and by download --to")


def open_input(path: Path | RemotePath, buffering: int = -1) -> Any:
    """A binary file to read, local (`open`, as before) or remote (buffered, seekable)."""
    if isinstance(path, RemotePath):
        import io

        return io.BufferedReader(path.open("rb", block_size=BLOCK_READ), BLOCK_READ)
    return open(path, "rb", buffering=buffering)


BLOCK_READ = 8 << 20  # bytes per request when a remote file is read front to back


@contextlib.contextmanager
def local_file(path: Path | RemotePath) -> Iterator[Path]:
    """A local path to read `path` from: itself, or a temporary copy of an object."""
    if isinstance(path, RemotePath):
        with path.download() as local:
            yield local
    else:
        yield path


def listdir(folder: Path | RemotePath) -> list[str]:
    """Names in a folder or under a prefix (none for a prefix with no objects)."""
    if isinstance(folder, RemotePath):
        try:
            return folder.listdir()
        except NotFound:
            return []
    return os.listdir(folder)


def relpath(where: Path | RemotePath, start: Path | RemotePath) -> str:
    """`os.path.relpath`, also between two prefixes of one bucket (`../wds`)."""
    if isinstance(where, RemotePath) or isinstance(start, RemotePath):
        if not (isinstance(where, RemotePath) and isinstance(start, RemotePath)
                and where.protocol == start.protocol):
            return str(where)
        import posixpath

        return posixpath.relpath("/" + where.path, "/" + start.path)
    return os.path.relpath(where, start)


def as_path(where: str | os.PathLike[str] | RemotePath) -> Path | RemotePath:
    """`Path(where)`, except that an object-storage location stays one."""
    return where if isinstance(where, RemotePath) else Path(where)
