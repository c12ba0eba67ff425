"""SIGTERM stops a command the way Ctrl-C does.

`kill PID`, `timeout`, systemd and container runtimes end a process with SIGTERM,
whose default action ends it on the spot: no message, exit 143, and whatever the
main process was writing left as it was.  Inside `sigterm_as_interrupt` it raises
`Terminated` (a KeyboardInterrupt) in the main thread instead, so the same cleanup
runs as for Ctrl-C: temporary files are removed, the pool's workers finish their
task and stop, a download keeps what arrived, and the CLI prints the same
"interrupted" line, with exit code 143.  Pool workers keep the default action
(runtime.pool): a SIGTERM sent to the main process alone lets them finish their task
as Ctrl-C does; one sent to the whole process group ends them at once, and the pool
removes what they left.  A second SIGTERM while the first is being handled ends the
process at once.

An exception raised by a signal handler lands wherever the main thread happens to
be.  Two places would lose it or worse, so the handler guards against both:

* inside the machinery that forks the pool's workers (multiprocessing, the pool's
  own submit, logging's at-fork lock) or makes temporary files (tempfile): an
  exception there can leave a lock held, a pipe open (the process hangs) or an
  object half made.  The handler then does not raise; it asks again RETRY_SECONDS
  later (SIGALRM), until the main thread is back in ordinary code;
* in a finaliser or an at-fork callback, where Python prints an exception and drops
  it ("Exception ignored in ..."): the command would go on as if nothing had
  happened.  `sys.unraisablehook` catches that and raises it again soon after.
  Once the command is stopping, what finalisers of objects it interrupted print is
  left out too: the one "interrupted" line is the message.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from imagenet_prep.errors import Terminated

RETRY_SECONDS = 0.02
# Code that must not be interrupted by an exception: it forks the pool's workers.
_DEFER_IN = tuple(f"{os.sep}{p}" for p in (
    os.path.join("multiprocessing", ""), os.path.join("logging", ""),
    os.path.join("concurrent", "futures", "process.py"), "tempfile.py"))


def _in_fork_machinery(frame: FrameType | None) -> bool:
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _DEFER_IN):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread (see the module)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    pid = os.getpid()

    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if os.getpid() != pid:  # a forked child that kept this handler: the default action
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if _in_fork_machinery(frame):
            signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)  # SIGALRM: ask again soon
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second one ends the process at once
        stopping = True
        raise Terminated

    previous_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if os.getpid() == pid and isinstance(info.exc_value, Terminated):
            signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)  # dropped: raise it again
        elif not (stopping and os.getpid() == pid):
            previous_hook(info)

    previous = signal.signal(signal.SIGTERM, handler)
    previous_alarm = signal.signal(signal.SIGALRM, handler)
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGALRM, previous_alarm)
        signal.signal(signal.SIGTERM, previous)
