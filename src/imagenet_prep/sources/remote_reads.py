"""Ranged reads of one object in a bucket, many in flight, at little client CPU each.

A shard of a shuffled split reads one range per image (~110 kB; its neighbours in the
archive belong to other shards), so at 1.33 M images the client's cost per request
counts.  Through the protocol's SDK (botocore for s3://) a ranged GET costs ~1.2 ms of
client CPU: events, parameter checks, signing, response parsing.  The same GET of a
signed URL (one signature per object, made locally, no request) through plain
aiohttp costs ~0.3 ms, and a signed URL covers any range of its object, since the
Range header is not part of the signature.  So where the filesystem can sign a URL
(`fs.sign`: s3fs; gcsfs and adlfs with signing credentials), the ranges are read
through it; a URL that fails once (expired, refused, a server that ignores Range) sends
that range and every later one of the object back through the SDK, which retries and
names the error as usual.  A signed URL is a credential: it never appears in an error
(every failure of the signed path is retried through the SDK, whose errors name the
bucket URL only) nor in fsspec's DEBUG log.  IMAGENET_PREP_SIGNED_READS=0 turns signed reads off.

All requests of a process share fsspec's event loop and connection pool: a request is
a coroutine on that loop, not a thread.  See docs/storage.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from imagenet_prep.runtime.storage import RemotePath

SIGNED_ENV = "IMAGENET_PREP_SIGNED_READS"
URL_LIFETIME = 3600  # seconds a signed URL is asked to stay valid
RESIGN_AFTER = URL_LIFETIME // 2  # a URL older than this is signed again before use


def signed_reads_enabled() -> bool:
    return os.environ.get(SIGNED_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


_QUERY = re.compile(r"\?\S*")


class _WithoutQueries(logging.Filter):
    """fsspec's HTTP filesystem logs each URL it reads at DEBUG: the query of a signed
    URL (key ID, signature) is cut from the message before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "?" in text:
            record.msg, record.args = _QUERY.sub("?(query not logged)", text), None
        return True


def _quiet_about_signatures() -> None:
    logger = logging.getLogger("fsspec.http")
    if not any(isinstance(f, _WithoutQueries) for f in logger.filters):
        logger.addFilter(_WithoutQueries())


def _http_filesystem() -> Any:
    """fsspec's HTTP filesystem (one per process, shared by every reader): the signature's
    percent-escapes sent as they are; proxies from the environment, as botocore takes
    them; botocore's default timeouts (60 s to connect, 60 s between reads), so a URL that
    cannot be reached falls back to the SDK in bounded time."""
    import aiohttp
    import fsspec

    _quiet_about_signatures()
    return fsspec.filesystem("http", encoded=True, client_kwargs={
        "trust_env": True,
        "timeout": aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=60)})


class RangeReader:
    """`submit(start, end)` -> a Future of those bytes of `loc`; requests run concurrently
    on fsspec's event loop (or, for a filesystem without one, on `threads` threads)."""

    def __init__(self, loc: RemotePath, threads: int = 16) -> None:
        self.loc = loc
        self.fs = loc.fs
        self._threads: ThreadPoolExecutor | None = None
        if not getattr(self.fs, "async_impl", False):
            self._threads = ThreadPoolExecutor(max(1, threads), thread_name_prefix="ranges")
        self._http: Any = None
        self._url: str | None = None
        self._signed_at = 0.0
        self.signed = self._threads is None and signed_reads_enabled() and self._sign()

    def _sign(self) -> bool:
        """A signed http(s) URL of the object, with an HTTP filesystem to read it; False
        when the filesystem cannot sign (no request is made either way)."""
        try:
            url = self.fs.sign(self.loc.path, expiration=URL_LIFETIME)
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                return False
            if self._http is None:
                self._http = _http_filesystem()
        except Exception:  # NotImplementedError, credentials that cannot sign, no aiohttp
            return False
        self._url, self._signed_at = url, time.monotonic()
        return True

    def submit(self, start: int, end: int) -> Future[bytes]:
        if self._threads is not None:
            return self._threads.submit(self.fs.cat_file, self.loc.path, start=start, end=end)
        if self.signed and time.monotonic() - self._signed_at > RESIGN_AFTER:
            self.signed = self._sign()
        coro = self._signed_get(start, end) if self.signed else self._sdk_get(start, end)
        return asyncio.run_coroutine_threadsafe(coro, self.fs.loop)

    async def _sdk_get(self, start: int, end: int) -> bytes:
        return await self.fs._cat_file(self.loc.path, start=start, end=end)

    async def _signed_get(self, start: int, end: int) -> bytes:
        url = self._url
        try:
            data = await self._http._cat_file(url, start=start, end=end)
            if len(data) == end - start:
                return data
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: S110 - retried through the SDK, which names the error
            pass
        self.signed = False  # this object's later ranges go through the SDK too
        return await self._sdk_get(start, end)

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
