"""Typed errors: the library raises them, the CLI prints them as one line and exits non-zero."""


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
