"""`imagenet-prep tfrecord` (not built yet)."""

import argparse

HELP = "tfrecord (not built yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("not built yet")
    return 2
