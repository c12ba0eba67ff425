"""Progress bars with rate and ETA on a terminal, silent otherwise."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: int | None, desc: str, unit: str = "img", *, bytes_: bool = False) -> tqdm:
    """A tqdm bar on stderr; disabled when stderr is not a terminal (logs, CI, tests)."""
    return tqdm(
        total=total, desc=desc, unit="B" if bytes_ else unit, unit_scale=bytes_,
        unit_divisor=1024 if bytes_ else 1000, disable=not sys.stderr.isatty(),
        dynamic_ncols=True, leave=False,
    )
