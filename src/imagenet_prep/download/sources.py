"""Where the archives come from: an HTTP(S) server, or a local folder (file:// or a path).

A source answers two questions for a file name: `probe` (its size, version tag
and whether byte ranges work) and `read` (a stretch of its bytes, as blocks of
at most CHUNK).  Transient trouble is raised as `Retryable`, and a server that
cannot be reached at all (connection refused, unknown host) as `Unreachable`, which
gets only a few quick attempts; both end as a one-line NetworkError.  A server that
ignores a Range request raises `RangeIgnored`; a file whose ETag or size changed,
`SourceChanged`; everything else is a one-line PrepError.  Messages show URLs
through `redact`, never headers or cookies.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit
from urllib.request import url2pathname

import requests
import urllib3

from imagenet_prep import __version__
from imagenet_prep.download.auth import (
    CREDENTIALS_HINT,
    Credentials,
    netrc_auth,
    redact,
    split_userinfo,
)
from imagenet_prep.errors import NetworkError, PrepError

CHUNK = 1 << 20  # 1 MiB: the most a connection holds in memory before writing it
FLUSH_SECONDS = 0.25  # a slow link still records progress this often
SMALL_LIMIT = 1 << 20  # MD5SUMS and SIZES are a few hundred bytes; refuse anything large
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
QUICK_ATTEMPTS = 3  # for an Unreachable server: a restarting one is back within seconds


class Retryable(Exception):
    """A timeout, reset, early close or 5xx: worth another attempt after a pause."""


class Unreachable(Retryable):
    """Connection refused, unknown host, no route: said at once, not after minutes of
    retries (QUICK_ATTEMPTS at most).  `hint` says what to check."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.hint = hint


class RangeIgnored(Exception):
    """The server answered a Range request with the whole file (200)."""


class SourceChanged(Exception):
    """The file's ETag, Last-Modified or size differs from what the download started with."""


class NotFound(PrepError):
    """The file is not at the source (HTTP 404/410, or no such local file)."""


@dataclass(frozen=True)
class Remote:
    """One file at the source, as probed: what a download (and its resume) relies on."""

    name: str
    url: str  # for messages: no credentials
    size: int | None
    ranges: bool
    etag: str | None = None
    last_modified: str | None = None

    def same_version(self, etag: str | None, last_modified: str | None) -> bool:
        """False only when a validator both sides have differs (ETag first)."""
        if self.etag and etag:
            return self.etag == etag
        if self.last_modified and last_modified:
            return self.last_modified == last_modified
        return True


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: `delay`, 2x`delay`, ... up to `max_delay`; `attempts` in a row."""

    attempts: int = 10
    delay: float = 0.5
    max_delay: float = 30.0

    def pause(self, attempt: int, stop: threading.Event | None = None) -> None:
        seconds = min(self.max_delay, self.delay * 2 ** (attempt - 1))
        if stop is None:
            time.sleep(seconds)
        else:
            stop.wait(seconds)

    def limit(self, e: Retryable) -> int:
        """Attempts in a row allowed for this kind of trouble."""
        return min(self.attempts, QUICK_ATTEMPTS) if isinstance(e, Unreachable) else self.attempts

    def call(self, fn, what: str):
        """fn() until it returns or raises something other than Retryable."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Retryable as e:
                if attempt >= self.limit(e):
                    raise give_up(what, attempt, e) from None
                self.pause(attempt)


def give_up(what: str, attempts: int, e: Retryable, *, pieces: bool = False) -> NetworkError:
    """The one-line error after the last attempt; an unreachable server says why first.
    `pieces`: the attempts of a download's piece (a rerun resumes it)."""
    if isinstance(e, Unreachable):
        tried = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        text = f"{what}: {e} ({tried}){'; ' + e.hint if e.hint else ''}"
    elif pieces:
        text = f"{what}: gave up after {attempts} failed attempts in a row ({e})"
    else:
        text = f"{what}: gave up after {attempts} attempts ({e})"
    return NetworkError(text + ("; run again to resume" if pieces else ""))


class Source(Protocol):
    display: str

    def probe(self, name: str) -> Remote: ...

    def read(self, remote: Remote, start: int, end: int | None, *, ranged: bool
             ) -> Iterator[bytes]: ...

    def fetch_small(self, name: str) -> bytes | None: ...

    def interrupt(self) -> None: ...

    def close(self) -> None: ...


def open_source(base_url: str, credentials: Credentials | None = None, *,
                timeout: tuple[float, float] = (15.0, 60.0)) -> Source:
    """An HttpSource for http(s)://, a LocalSource for file:// or a plain folder path."""
    credentials = credentials or Credentials()
    scheme = urlsplit(base_url).scheme.lower() if "://" in base_url else ""
    if scheme in ("http", "https"):
        return HttpSource(base_url, credentials, timeout=timeout)
    if scheme == "file":
        parts = urlsplit(base_url)
        if parts.netloc not in ("", "localhost"):
            raise PrepError(f"--base-url {redact(base_url)}: a file:// URL must name a local "
                            "folder (file:///path/to/folder/)")
        return LocalSource(Path(url2pathname(parts.path)))
    if scheme:
        raise PrepError(f"--base-url {redact(base_url)}: unsupported scheme {scheme!r} "
                        "(use http://, https://, file:// or a folder path)")
    return LocalSource(Path(base_url))


def _walk(e: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (cause, context, urllib3 `reason`, args)."""
    seen: set[int] = set()
    todo = [e]
    while todo:
        x = todo.pop(0)
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        todo += [y for y in (x.__cause__, x.__context__, getattr(x, "reason", None), *x.args)
                 if isinstance(y, BaseException)]


def _reason(e: BaseException) -> str:
    """A short, credential-free description of a network error."""
    for x in _walk(e):
        if isinstance(x, requests.exceptions.ConnectTimeout) or (
                isinstance(x, urllib3.exceptions.ConnectTimeoutError)
                and not isinstance(x, urllib3.exceptions.NewConnectionError)):
            return "connection timed out"  # (urllib3's NewConnectionError is a subclass)
        if isinstance(x, requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError
                      | TimeoutError):
            return "read timed out"
        if isinstance(x, http.client.IncompleteRead | urllib3.exceptions.IncompleteRead):
            return "connection closed early"
        if isinstance(x, ConnectionResetError):
            return "connection reset"
        if isinstance(x, OSError) and x.strerror:
            return x.strerror.lower()
    return type(e).__name__


_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}


def network_error(e: BaseException, url: str) -> Retryable:
    """What a failed request means: Unreachable (said at once) or Retryable (retried)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = "?"
    for x in _walk(e):
        if isinstance(x, socket.gaierror | urllib3.exceptions.NameResolutionError):
            return Unreachable(f"host name {host} not found",
                               "check the host name in --base-url, and the network")
        if isinstance(x, ConnectionRefusedError):
            return Unreachable(f"connection refused by {host} port {port}",
                               "is the server running, and is the port right?")
        if isinstance(x, OSError) and x.errno in _UNREACHABLE:
            return Unreachable(f"{host}: {(x.strerror or 'unreachable').lower()}",
                               "check the network")
    return Retryable(_reason(e))


class _Session(requests.Session):
    """A Session that drops the user's headers (and Authorization) on a redirect to another
    host, and uses ~/.netrc only when asked (requests would otherwise read it unasked)."""

    def __init__(self, private: frozenset[str], use_netrc: bool) -> None:
        super().__init__()
        self._private = private
        self._use_netrc = use_netrc

    def rebuild_auth(self, prepared_request, response) -> None:
        headers = prepared_request.headers
        if self.should_strip_auth(response.request.url, prepared_request.url):
            for name in ("Authorization", *self._private):
                headers.pop(name, None)
            host = urlsplit(prepared_request.url).hostname
            if self._use_netrc and host:
                try:
                    prepared_request.prepare_auth(netrc_auth(host))
                except PrepError:
                    pass  # no entry for the new host: go on without credentials


class _NoAuth(requests.auth.AuthBase):
    """Truthy placeholder so requests never falls back to ~/.netrc by itself."""

    def __call__(self, r):
        return r


class HttpSource:
    """Files under an http(s):// folder URL; one requests.Session (connection) per request
    in flight, kept alive in a pool for the next request."""

    def __init__(self, base_url: str, credentials: Credentials, *,
                 timeout: tuple[float, float]) -> None:
        url, userinfo = split_userinfo(base_url)
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise PrepError(f"--base-url {redact(url)}: give the folder URL without '?' or '#'")
        if not parts.hostname:
            raise PrepError(f"--base-url {redact(url)}: no host name")
        self.base = url if url.endswith("/") else url + "/"
        self.display = redact(self.base)
        self.timeout = timeout
        host = parts.hostname
        basic = userinfo or credentials.basic
        if basic is None and credentials.netrc:
            basic = netrc_auth(host)
        self._auth: requests.auth.AuthBase = (
            requests.auth.HTTPBasicAuth(*basic) if basic else _NoAuth())
        self._headers = {
            "User-Agent": f"imagenet-prep/{__version__}",
            "Accept-Encoding": "identity",  # the bytes as stored: ranges and MD5 refer to them
            **credentials.headers,
        }
        self._private = frozenset(credentials.headers)
        self._netrc = credentials.netrc
        self._jar = requests.cookies.RequestsCookieJar()
        for c in credentials.cookies:
            self._jar.set_cookie(c)
        if credentials.cookie_header:
            # A --header 'Cookie: ...' binds to the base URL's host, so it survives a
            # same-host redirect (requests drops Cookie headers there) and no other host sees it.
            for pair in credentials.cookie_header.split(";"):
                name, sep, value = pair.strip().partition("=")
                if sep and name:
                    self._jar.set_cookie(requests.cookies.create_cookie(
                        name, value, domain=host, path="/"))
        self._idle: list[requests.Session] = []  # keep-alive connections, reused across files
        self._all: list[requests.Session] = []
        self._reading: set[requests.Response] = set()  # what `interrupt` cuts
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _session(self) -> Iterator[requests.Session]:
        """A session (one connection) for the caller alone, returned to the pool after."""
        with self._lock:
            s = self._idle.pop() if self._idle else None
        if s is None:
            s = _Session(self._private, self._netrc)
            s.headers.update(self._headers)
            s.auth = self._auth
            s.cookies.update(self._jar)
            with self._lock:
                self._all.append(s)
        try:
            yield s
        finally:
            with self._lock:
                self._idle.append(s)

    def url(self, name: str) -> str:
        return self.base + quote(name)

    def _get(self, session: requests.Session, name: str,
             headers: dict[str, str] | None = None) -> requests.Response:
        try:
            return session.get(self.url(name), headers=headers, stream=True,
                               timeout=self.timeout)
        except requests.exceptions.SSLError:
            raise PrepError(f"{redact(self.url(name))}: TLS error (certificate or protocol); "
                            "check the URL") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema):
            raise PrepError(f"--base-url {self.display}: not a valid URL") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            raise network_error(e, self.url(name)) from None

    @staticmethod
    def _check(resp: requests.Response, shown: str) -> None:
        code = resp.status_code
        if code < 400:
            return
        what = f"HTTP {code} {resp.reason or ''}".rstrip()
        if code in (401, 403):
            raise PrepError(f"{shown}: {what}: credentials missing or refused; {CREDENTIALS_HINT}")
        if code in (404, 410):
            raise NotFound(f"{shown}: not found ({what}); check --base-url")
        if code in RETRY_STATUS or code >= 500:
            raise Retryable(what)
        raise PrepError(f"{shown}: {what}")

    @staticmethod
    def _is_html(resp: requests.Response) -> bool:
        return resp.headers.get("Content-Type", "").lower().startswith("text/html")

    def probe(self, name: str) -> Remote:
        shown = redact(self.url(name))
        with self._session() as session, self._get(session, name, {"Range": "bytes=0-0"}) as resp:
            self._check(resp, shown)
            if self._is_html(resp):
                raise PrepError(f"{shown}: the server sent a web page, not the archive (a login "
                                f"page?); {CREDENTIALS_HINT}")
            if resp.status_code == 206:
                size = _content_range(resp.headers.get("Content-Range", ""), shown)[2]
                ranges = True
                resp.content  # noqa: B018 - one byte; reading it lets the connection be reused
            elif resp.status_code == 200:
                length = resp.headers.get("Content-Length")
                size = int(length) if length and length.isdigit() else None
                ranges = False
            else:
                raise PrepError(f"{shown}: unexpected HTTP {resp.status_code}")
            return Remote(name, shown, size, ranges, resp.headers.get("ETag"),
                          resp.headers.get("Last-Modified"))

    def read(self, remote: Remote, start: int, end: int | None, *, ranged: bool
             ) -> Iterator[bytes]:
        headers = {}
        if ranged:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with (self._session() as session, self._get(session, remote.name, headers) as resp,
              self._registered(resp)):
            self._check(resp, remote.url)
            if not remote.same_version(resp.headers.get("ETag"), resp.headers.get("Last-Modified")):
                raise SourceChanged("its ETag or Last-Modified changed")
            if resp.status_code == 206 and ranged:
                first, _, total = _content_range(resp.headers.get("Content-Range", ""), remote.url)
                if total != remote.size:
                    raise SourceChanged(f"its size changed ({total} bytes, was {remote.size})")
                if first != start:
                    raise PrepError(f"{remote.url}: the server sent bytes from {first}, "
                                    f"not {start} as asked")
            elif resp.status_code == 200:
                whole = start == 0 and (end is None or end == remote.size)
                if ranged and not whole:
                    raise RangeIgnored
            else:
                raise PrepError(f"{remote.url}: unexpected HTTP {resp.status_code}")
            try:
                yield from _coalesce(resp.raw)
            except (requests.RequestException, urllib3.exceptions.HTTPError,
                    http.client.HTTPException, OSError) as e:
                raise Retryable(_reason(e)) from None

    def fetch_small(self, name: str) -> bytes | None:
        """A small optional file (MD5SUMS, SIZES); None when the server does not have it."""
        shown = redact(self.url(name))
        with self._session() as session, self._get(session, name) as resp:
            if resp.status_code in (401, 403, 404, 410) or self._is_html(resp):
                return None  # absent (a login page or refusal is reported by the archives)
            self._check(resp, shown)
            data = bytearray()
            try:
                for block in _coalesce(resp.raw):
                    data += block
                    if len(data) > SMALL_LIMIT:
                        raise PrepError(f"{shown}: larger than {SMALL_LIMIT:,} bytes; "
                                        "not a checksum list")
            except (requests.RequestException, urllib3.exceptions.HTTPError,
                    http.client.HTTPException, OSError) as e:
                raise Retryable(_reason(e)) from None
            return bytes(data)

    @contextlib.contextmanager
    def _registered(self, resp: requests.Response) -> Iterator[None]:
        with self._lock:
            self._reading.add(resp)
        try:
            yield
        finally:
            with self._lock:
                self._reading.discard(resp)

    def interrupt(self) -> None:
        """Cut the connections being read, so threads waiting on a stalled server stop now
        (a socket shutdown wakes a blocked recv; closing it from another thread would not)."""
        with self._lock:
            reading = list(self._reading)
        for resp in reading:
            sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            for s in self._all:
                s.close()
            self._all.clear()
            self._idle.clear()


def _coalesce(raw: urllib3.HTTPResponse) -> Iterator[bytes]:
    """The body as blocks of up to CHUNK bytes, handed on at least every FLUSH_SECONDS.

    A block that arrives whole (the usual case on a fast link) is passed on as is;
    small reads are joined, so the writer sees few large writes.
    """
    parts: list[bytes] = []
    size = 0
    last = time.monotonic()
    try:
        while data := raw.read1(CHUNK - size, decode_content=False):
            parts.append(data)
            size += len(data)
            now = time.monotonic()
            if size >= CHUNK or now - last >= FLUSH_SECONDS:
                block = parts[0] if len(parts) == 1 else b"".join(parts)
                parts, size, last = [], 0, now
                yield block
    except Exception:
        if parts:  # what arrived before a drop is kept: the retry starts after it
            yield b"".join(parts)
        raise
    if parts:
        yield b"".join(parts)


def _content_range(value: str, shown: str) -> tuple[int, int, int | None]:
    """`bytes FIRST-LAST/TOTAL` -> (first, last, total or None for '*')."""
    unit, _, spec = value.strip().partition(" ")
    span, _, total = spec.partition("/")
    first, _, last = span.partition("-")
    try:
        if unit != "bytes":
            raise ValueError
        return int(first), int(last), None if total == "*" else int(total)
    except ValueError:
        raise PrepError(f"{shown}: the server sent a malformed Content-Range") from None


class LocalSource:
    """Files in a local folder (a mounted mirror, a USB disk): the same resume logic."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise PrepError(f"--base-url {self.folder}: no such folder")
        self.display = str(self.folder)

    def probe(self, name: str) -> Remote:
        path = self.folder / name
        try:
            st = path.stat()
        except FileNotFoundError:
            raise NotFound(f"{path}: not found; check --base-url") from None
        except OSError as e:
            raise PrepError(f"{path}: cannot read ({e.strerror or e})") from None
        if not path.is_file():
            raise PrepError(f"{path}: not a regular file")
        return Remote(name, str(path), st.st_size, True, etag=_stamp(st))

    def read(self, remote: Remote, start: int, end: int | None, *, ranged: bool
             ) -> Iterator[bytes]:
        path = self.folder / remote.name
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise PrepError(f"{path}: cannot read ({e.strerror or e})") from None
        try:
            st = os.fstat(fd)
            if not remote.same_version(_stamp(st), None) or st.st_size != remote.size:
                raise SourceChanged("it was modified")
            stop = st.st_size if end is None else end
            pos = start
            while pos < stop:
                try:
                    data = os.pread(fd, min(CHUNK, stop - pos), pos)
                except OSError as e:
                    raise PrepError(f"{path}: cannot read ({e.strerror or e})") from None
                if not data:
                    raise SourceChanged("it shrank")
                yield data
                pos += len(data)
        finally:
            os.close(fd)

    def fetch_small(self, name: str) -> bytes | None:
        path = self.folder / name
        try:
            if path.stat().st_size > SMALL_LIMIT:
                raise PrepError(f"{path}: larger than {SMALL_LIMIT:,} bytes; not a checksum list")
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise PrepError(f"{path}: cannot read ({e.strerror or e})") from None

    def interrupt(self) -> None:
        pass  # local reads never stall for long

    def close(self) -> None:
        pass


def _stamp(st: os.stat_result) -> str:
    """A local file's version tag: size and modification time."""
    return f"{st.st_size}-{st.st_mtime_ns}"
