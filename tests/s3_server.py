"""A real S3 protocol server for the tests: moto's server mode on loopback, with dummy
credentials and the EC2 metadata lookup off, so nothing leaves this machine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

KEY = SECRET = "testing"


@contextlib.contextmanager
def moto_s3(**extra_env: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(endpoint URL, environment for the CLI: ours without AWS_*, plus the server's)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
               AWS_ENDPOINT_URL=endpoint, **extra_env)
    try:
        yield endpoint, env
    finally:
        server.stop()


def s3_filesystem(endpoint: str) -> Any:
    """An s3fs filesystem of the server (not fsspec's cached one: each test module has its
    own server)."""
    import fsspec

    return fsspec.filesystem("s3", key=KEY, secret=SECRET,
                             client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
