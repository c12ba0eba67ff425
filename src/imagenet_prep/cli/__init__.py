"""Command-line entry point: one module per command under imagenet_prep.cli.

Each command module defines HELP (a short line for --help), DESCRIPTION (its own
--help), add_arguments(parser) and run(args) -> int.
Library errors (PrepError, and any OSError) become a one-line message and a non-zero
exit (the table in imagenet_prep.errors); Ctrl-C exits 130 and SIGTERM 143, both with
a note that a rerun resumes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from imagenet_prep import __version__
from imagenet_prep.errors import PrepError, as_prep_error

COMMANDS = (
    "prepare", "fake", "download", "verify", "extract", "valtree", "flatten", "synsets",
    "bbox", "tfrecord", "wds", "check", "report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagenet-prep",
        description="Turn the official ILSVRC2012 archives into TensorFlow and PyTorch datasets.",
    )
    parser.add_argument("--version", action="version", version=f"imagenet-prep {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"imagenet_prep.cli.{name}")
        p = sub.add_parser(name, help=module.HELP,
                           description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from imagenet_prep.runtime.signals import sigterm_as_interrupt

    args = build_parser().parse_args(argv)
    try:
        with sigterm_as_interrupt():  # SIGTERM stops as Ctrl-C does (exit 143)
            if getattr(args, "workers", None) is not None:  # 0, -1, 10000: refused at once
                from imagenet_prep.runtime.pool import check_workers

                check_workers(args.workers)
            return int(args.run(args) or 0)
    except (PrepError, OSError) as e:  # an OSError no edge mapped: one line too
        if args.debug:
            raise
        e = as_prep_error(e)
        print(f"imagenet-prep: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print("imagenet-prep: interrupted; run the same command again to resume", file=sys.stderr)
        return getattr(e, "exit_code", 130)  # errors.Terminated: 143
