"""Download the official archives: resumable, parallel, checked, from any mirror.

`download_archives` is what `imagenet-prep download` and `prepare --download`
call; the pieces are `sources` (HTTP or a local folder), `transfer` (one file:
ranged parallel fetch into NAME.part with a side file, MD5, rename), `ranges`
(what is done) and `auth` (credentials kept out of messages).  The names below
load on first use, so the CLI does not import requests for other commands.
"""

from __future__ import annotations

import importlib
from typing import Any

DEFAULT_BASE_URL = "https://image-net.org/data/ILSVRC/2012/"

_HOMES = {
    "Credentials": "auth", "RetryPolicy": "sources", "TransferOptions": "transfer",
    "download_archives": "job", "resolve_roles": "job",
}
__all__ = ["DEFAULT_BASE_URL", *_HOMES]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
