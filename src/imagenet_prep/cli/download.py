"""`imagenet-prep download`: not built yet (placeholder so the command list is fixed)."""

from __future__ import annotations

import argparse

from imagenet_prep.errors import PrepError

HELP = "(not built yet)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise PrepError("download is not built yet")
