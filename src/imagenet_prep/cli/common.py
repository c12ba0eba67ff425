"""Options and output shared by several commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: the number of cores)")


def add_archives(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--archives", type=Path, required=required, metavar="DIR",
                   help="folder holding the official ILSVRC2012 archives")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a machine-readable report")


def split_list(text: str) -> tuple[str, ...]:
    return tuple(s for s in text.replace(" ", ",").split(",") if s)


def emit(report: Any, as_json: bool, lines: list[str]) -> None:
    """Print the report as JSON, or the human lines."""
    if as_json:
        json.dump(report, sys.stdout, indent=1, sort_keys=True, default=str)
        print()
    else:
        for line in lines:
            print(line)
