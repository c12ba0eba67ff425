"""`imagenet-prep synsets` (not built yet)."""

import argparse

HELP = "synsets (not built yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("not built yet")
    return 2
