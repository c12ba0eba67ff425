"""An HTTP proxy that adds a fixed delay to every request, for benchmarks/object_storage.py.

It runs in its own process (a proxy thread in the client's process would compete with it
for the GIL) on asyncio, so thousands of requests can wait out their delay at once
without a thread each: what it adds is the delay, not a queue.  The Host header is
passed through unchanged, so a server that checks SigV4 signatures (s3rver) accepts the
requests the client signed for the proxy's address.

    python benchmarks/latency_proxy.py --target http://127.0.0.1:PORT --delay-ms 20 --port N
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

from s3_servers import free_port, wait_for_port

# hop-by-hop headers, and Expect (aiohttp's server answers 100-continue itself)
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authorization", "proxy-authenticate", "expect"}


def serve(target: str, delay: float, port: int) -> None:
    from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

    async def handle(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(delay)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        session: ClientSession = request.app["session"]
        async with session.request(request.method, target + request.path_qs, headers=headers,
                                   data=body or None, allow_redirects=False) as up:
            out = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() not in _HOP:
                    out.headers[k] = v
            await out.prepare(request)
            if request.method != "HEAD":
                async for chunk in up.content.iter_chunked(1 << 20):
                    await out.write(chunk)
            await out.write_eof()
            return out

    async def start(app: web.Application) -> None:
        app["session"] = ClientSession(connector=TCPConnector(limit=0),
                                       auto_decompress=False,
                                       timeout=ClientTimeout(total=600),
                                       skip_auto_headers=("User-Agent", "Content-Type"))

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    app = web.Application(client_max_size=1 << 30)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def start_proxy(target: str, delay_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    """This proxy in a child process in front of `target`; returns it and its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--target", target,
                             "--delay-ms", str(delay_ms), "--port", str(port)])
    wait_for_port(port, proc, "latency proxy")
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="the server's URL, http://host:port")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    serve(a.target.rstrip("/"), a.delay_ms / 1000, a.port)


if __name__ == "__main__":
    main()
