"""Command-line entry point: one module per command under imagenet_prep.cli.

COMMANDS holds every command's one-line help, so `imagenet-prep --help` imports no
command module.  Only the chosen command's module is imported: it defines
DESCRIPTION (its own --help), add_arguments(parser) and run(args) -> int.
Library errors (PrepError, and any OSError) become a one-line message and a non-zero
exit (the table in imagenet_prep.errors); Ctrl-C exits 130 and SIGTERM 143, both with
a note that a rerun resumes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from imagenet_prep import __version__
from imagenet_prep.errors import PrepError, as_prep_error
from imagenet_prep.layout import REPORT_HTML

# command -> its line in `imagenet-prep --help`, in the order shown there
COMMANDS: dict[str, str] = {
    "prepare": "run every stage in order after a disk plan; reruns resume",
    "fake": "write a synthetic replica of the six ILSVRC2012 archives",
    "download": "download the archives (resumable, parallel, size and MD5 checked)",
    "verify": "check the archives' sizes and MD5s",
    "extract": "extract images and box XMLs in one pass",
    "valtree": "group validation images into class folders",
    "flatten": "make train_flatten/ and val_flatten/ (hard links)",
    "synsets": "write synsets.txt",
    "bbox": "write the bounding-box CSV by the reference's rules",
    "tfrecord": "write TFRecord shards in the reference schema",
    "wds": "write WebDataset tar shards for streaming PyTorch training",
    "parquet": "write Parquet shards in the Hugging Face Hub's imagenet-1k schema, with a card",
    "mds": "write MosaicML Streaming (MDS) shards, one streaming dataset per split",
    "tfds": "write a TensorFlow Datasets data directory of imagenet2012",
    "check": "prove a dataset complete, or list its problems",
    "report": f"write DATASET/{REPORT_HTML}: counts, plots, converted files, a contact sheet",
}


def load_command(name: str, parser: argparse.ArgumentParser) -> None:
    """Import command `name`'s module and give its subparser the description, arguments
    and run function."""
    module = importlib.import_module(f"imagenet_prep.cli.{name}")
    parser.description = getattr(module, "DESCRIPTION", COMMANDS[name])
    module.add_arguments(parser)
    parser.add_argument("--storage-option", action="append", default=None, metavar="KEY=VALUE",
                        help="passed to fsspec for URL arguments (s3://, gs://, az://); a "
                             "dotted KEY nests: client_kwargs.endpoint_url=URL")
    parser.set_defaults(run=module.run)


class _Commands(argparse._SubParsersAction):
    """The subcommands, each filled in (by load_command) only once it is chosen."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        load_command(values[0], self.choices[values[0]])  # argparse checked the name
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagenet-prep",
        description="Turn the official ILSVRC2012 archives into TensorFlow and PyTorch datasets.",
    )
    parser.add_argument("--version", action="version", version=f"imagenet-prep {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                action=_Commands)
    for name, help_line in COMMANDS.items():
        sub.add_parser(name, help=help_line)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from imagenet_prep.runtime.signals import sigterm_as_interrupt

    args = build_parser().parse_args(argv)
    try:
        with sigterm_as_interrupt():  # SIGTERM stops as Ctrl-C does (exit 143)
            workers, local = getattr(args, "workers", None), getattr(args, "dask_local", None)
            if workers is not None or local is not None:  # 0, -1, 10000: refused at once
                from imagenet_prep.runtime.pool import check_workers

                check_workers(workers)
                check_workers(local, "--dask-local")  # it starts processes here too
            from imagenet_prep.runtime import storage

            storage.bind(args, storage.parse_storage_options(args.storage_option))
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
