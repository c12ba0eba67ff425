"""A real HTTP mirror on 127.0.0.1 with switchable faults, for the download tests and benchmark.

Serves the files of a folder (a replica) with Range support that can be turned
off, and on request: drops the connection after N body bytes for the next K
requests, answers 401 unless a header carries an expected value, flips one byte
of a file, or sends slowly.  Every request is logged (path, headers, client
port) so tests can see what the client sent and over how many connections.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

BLOCK = 16 << 10
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class MirrorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root)
        self.ranges: bool | str = True  # honour Range (False: 200, whole file; "probe": only
        #                                 the first-byte probe, then ignore Range)
        self.drops = 0                # the next `drops` archive GETs are cut ...
        self.drop_after = 0           # ... after this many body bytes
        self.required: tuple[str, str] | None = None  # (header, text it must contain) or 401
        self.corrupt: dict[str, int] = {}  # file name -> offset of a flipped byte
        self.rate: float | None = None     # bytes/s per response longer than 16 KiB (slow mode)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.sent: dict[str, int] = {}  # body bytes sent per file in slow mode
        self.served: dict[str, int] = {}  # body bytes sent per file, every mode
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def handle_error(self, request, client_address) -> None:
        pass  # a client closing early (a probe, a drop) is normal here

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def __enter__(self) -> MirrorServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()

    def gets(self, name: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == name]


class _Handler(BaseHTTPRequestHandler):
    server: MirrorServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _plain(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self, body: bool) -> None:
        srv = self.server
        name = unquote(urlsplit(self.path).path).lstrip("/")
        with srv.lock:
            srv.requests.append({"path": name, "headers": dict(self.headers),
                                 "port": self.client_address[1]})
        if srv.required is not None:
            header, text = srv.required
            if text not in self.headers.get(header, ""):
                return self._plain(401, "login required")
        path = srv.root / name
        if "/" in name or not path.is_file():
            return self._plain(404, "not found")
        st = path.stat()
        size = st.st_size
        start, end, status = 0, size, 200
        spec = self.headers.get("Range")
        if srv.ranges == "probe" and spec != "bytes=0-0":
            spec = None
        if spec and srv.ranges:
            m = _RANGE.match(spec.strip())
            if not m or not (m.group(1) or m.group(2)):
                return self._plain(416, "bad range")
            if m.group(1):
                start = int(m.group(1))
                end = min(size, int(m.group(2)) + 1) if m.group(2) else size
            else:
                start = max(0, size - int(m.group(2)))
            if start >= size or end <= start:
                return self._plain(416, "unsatisfiable")
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("ETag", f'"{size:x}-{st.st_mtime_ns:x}"')
        self.send_header("Last-Modified", formatdate(st.st_mtime, usegmt=True))
        if srv.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if not body:
            return
        limit = None
        with srv.lock:
            if srv.drops > 0 and end - start > srv.drop_after:
                srv.drops -= 1
                limit = srv.drop_after
        flip = srv.corrupt.get(name)
        rate = srv.rate if end - start > BLOCK else None
        with open(path, "rb") as f:
            if limit is None and flip is None and rate is None:
                n = self.connection.sendfile(f, start, end - start)  # fast path (benchmark)
                with srv.lock:
                    srv.served[name] = srv.served.get(name, 0) + n
                return
            pos = start
            while pos < end:
                n = min(BLOCK, end - pos)
                if limit is not None:
                    n = min(n, start + limit - pos)
                    if n <= 0:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                data = bytearray(os.pread(f.fileno(), n, pos))
                if flip is not None and pos <= flip < pos + n:
                    data[flip - pos] ^= 0xFF
                try:
                    self.wfile.write(data)
                except OSError:
                    return
                with srv.lock:
                    srv.sent[name] = srv.sent.get(name, 0) + n
                    srv.served[name] = srv.served.get(name, 0) + n
                pos += n
                if rate:
                    time.sleep(n / rate)
