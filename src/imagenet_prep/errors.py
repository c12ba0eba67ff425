"""Typed errors: the library raises them, the CLI prints them as one line and exits non-zero.

Each class of failure has its own exit code, so a script can tell them apart:

    code  raised as            what went wrong
    ----  -------------------  ----------------------------------------------------------
       0  -                    nothing: the command did what it says
       1  PrepError            the input: archives, labels, images, a URL or a folder that
                               is not what it should be; also UnsafeArchiveError,
                               CorruptArchiveError, LabelError, BadImageError and
                               LockedError (another run holds the dataset)
       2  OptionError          an option's value, such as --workers 0 (argparse's own usage
                               errors exit 2 too)
       3  AccessError          a file or folder cannot be written (or read): permission
                               denied, a read-only file system, owned by another user
       4  NoSpaceError         no space left on the device, or the disk quota is used up
       5  DamagedStateError    a state record in DATASET/.imagenet-prep is damaged
       6  NetworkError         download: connection refused, unknown host, timed out, or
                               given up after retries
       7  WorkerDiedError      a worker process died (killed by the system: out of memory?)
       8  NothingToCheck       check: the folder holds no dataset (no run ever wrote there)
     130  KeyboardInterrupt    Ctrl-C: stopped cleanly; the same command resumes
     143  Terminated           SIGTERM: the same as Ctrl-C (128 + 15)

`os_error` is the one place where an OSError becomes words and one of these classes.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class PrepError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 1


class UnsafeArchiveError(PrepError):
    """An archive member would escape the output folder or is not a plain file."""


class CorruptArchiveError(PrepError):
    """An archive is truncated, of another kind, or otherwise unreadable."""


class LabelError(PrepError):
    """Validation labels are missing, inconsistent or do not match the images."""


class BadImageError(PrepError):
    """An image member cannot be read as an image."""


class LockedError(PrepError):
    """Another imagenet-prep run is working on the same dataset folder."""


class OptionError(PrepError):
    """An option's value is out of its range (the same exit code as argparse's errors)."""

    exit_code = 2


class AccessError(PrepError):
    """A file or folder cannot be written or read: permissions, read-only file system."""

    exit_code = 3


class NoSpaceError(PrepError):
    """The device is full (or the quota used up)."""

    exit_code = 4


class DamagedStateError(PrepError):
    """A state record in DATASET/.imagenet-prep is not valid JSON or not of its shape."""

    exit_code = 5


class NetworkError(PrepError):
    """A download could not reach its server, or gave up after retries."""

    exit_code = 6


class WorkerDiedError(PrepError):
    """A worker process died mid-task (the kernel's OOM killer, a kill -9)."""

    exit_code = 7


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds exactly as Ctrl-C does."""

    exit_code = 128 + 15


_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a file where a folder is expected",
    errno.EISDIR: "is a folder",
    errno.EEXIST: "already exists",
    errno.EIO: "input/output error (a failing disk?)",
    errno.EMFILE: "too many open files",
    errno.ENAMETOOLONG: "file name too long",
}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NO_ACCESS = {errno.EACCES, errno.EPERM, errno.EROFS}


def _owner_note(path: Path | str) -> str:
    """' (owned by another user, NAME)' when the path, or the folder it would go in, is not
    the current user's; '' otherwise."""
    p = Path(path)
    for candidate in (p, *p.parents):
        try:
            uid = candidate.stat().st_uid
        except OSError:
            continue
        if uid == os.geteuid():
            return ""
        try:
            import pwd

            name = pwd.getpwuid(uid).pw_name
        except (ImportError, KeyError):
            name = f"uid {uid}"
        if candidate == p:
            return f" (owned by another user, {name})"
        return f" ({candidate} is owned by another user, {name})"
    return ""


def describe_os_error(e: OSError, path: Path | str | None = None) -> str:
    """The error in a few words: 'no space left on device', 'permission denied (owned by
    another user, alice)'."""
    code = e.errno or 0
    reason = _REASONS.get(code) or (e.strerror or str(e) or type(e).__name__).lower()
    if code in (errno.EACCES, errno.EPERM) and path is not None:
        reason += _owner_note(path)
    return reason


def os_error(path: Path | str, e: OSError, action: str | None = "write") -> PrepError:
    """Turn an OSError into a one-line error naming the file: '{path}: cannot {action}:
    {reason}', as AccessError, NoSpaceError or PrepError by its errno."""
    code = e.errno or 0
    cls = NoSpaceError if code in _NO_SPACE else AccessError if code in _NO_ACCESS else PrepError
    what = f"cannot {action}: " if action else ""
    return cls(f"{path}: {what}{describe_os_error(e, path)}")


def as_prep_error(e: BaseException) -> PrepError:
    """What the CLI prints for an error that reached it: a PrepError as it is, an OSError
    that no edge mapped (naming its file when it has one), anything else as a PrepError."""
    if isinstance(e, PrepError):
        return e
    if isinstance(e, OSError):
        if e.filename is not None:
            return os_error(os.fsdecode(e.filename), e, action=None)
        code = e.errno or 0
        cls = (NoSpaceError if code in _NO_SPACE else AccessError if code in _NO_ACCESS
               else PrepError)
        return cls(describe_os_error(e))
    return PrepError(str(e) or type(e).__name__)


class NothingToCheck(PrepError):
    """`check` was pointed at a folder no imagenet-prep run wrote (empty, the archives)."""

    exit_code = 8
