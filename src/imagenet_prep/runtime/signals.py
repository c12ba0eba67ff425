"""SIGTERM stops a command the way Ctrl-C does.

`kill PID`, `timeout`, systemd and container runtimes end a process with SIGTERM,
whose default action ends it on the spot: no message, exit 143, and whatever the
main process was writing left as it was.  Inside `sigterm_as_interrupt` it raises
`Terminated` (a KeyboardInterrupt) in the main thread instead, so the same cleanup
runs as for Ctrl-C: temporary files are removed, the pool's workers finish their
task and stop, a download keeps what arrived, and the CLI prints the same
"interrupted" line, with exit code 143.  Pool workers ignore SIGTERM (runtime.pool):
stopping is the main process's job, and they die with it.  A second SIGTERM while
the first is being handled ends the process at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from imagenet_prep.errors import Terminated


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread (see the module)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    pid = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one ends the process at once
        if os.getpid() != pid:  # a forked child that kept this handler: the default action
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
