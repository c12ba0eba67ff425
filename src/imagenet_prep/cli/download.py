"""`imagenet-prep download`: fetch the official archives, resumably, checked, in parallel."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imagenet_prep.cli.common import add_json, emit, split_list
from imagenet_prep.download import DEFAULT_BASE_URL
from imagenet_prep.errors import PrepError
from imagenet_prep.runtime.storage import location
from imagenet_prep.sources.archives import ROLES, human_size

# The download modules (and requests) load only when a download runs: every other
# command starts without them.

DESCRIPTION = f"""\
Download the official ILSVRC2012 archives into DIR, from image-net.org (log in
first: the files are served to a logged-in session only) or from any mirror with
the same file names: an http(s):// folder URL, a file:// URL or a local folder.

Each file goes to NAME.part with a small NAME.part.json recording what is done;
run the same command again after an interruption and it continues where it
stopped (HTTP Range requests; a server that ignores them restarts that file
from byte 0, with a note). A finished file is checked against the reference
(sizes and MD5s of the official table, or the mirror's MD5SUMS / SIZES files,
which are copied into DIR so `verify` uses them too) and renamed to NAME only
if it matches; otherwise it is kept as NAME.bad. Archives already in DIR with
the right size are skipped.

--to s3://bucket/prefix streams each archive into a multipart upload instead
(no local disk): parts of --part-size, completed only when the MD5 matches;
a rerun continues an unfinished upload at its next part (NAME.part.json beside
the object records it), and an archive already there with its MD5 is skipped.

default base URL: {DEFAULT_BASE_URL}
roles: {', '.join(ROLES)}"""
EPILOG = """\
examples:
  # image-net.org, with the session of a logged-in browser (cookies.txt export)
  imagenet-prep download --to ~/ilsvrc2012 --cookies ~/cookies.txt
  # the same with the browser's Cookie header copied from its developer tools
  imagenet-prep download --to ~/ilsvrc2012 --header 'Cookie: sessionid=...'
  # a mirror with basic auth in ~/.netrc, only what TensorFlow needs
  imagenet-prep download --to ~/ilsvrc2012 --base-url https://mirror.example/ilsvrc2012/ \\
      --netrc --only train,val,bbox_train,bbox_val,devkit
  # a mounted disk or NFS share
  imagenet-prep download --to ~/ilsvrc2012 --base-url /mnt/datasets/ilsvrc2012
  # straight into a bucket (pip install 'imagenet-prep[s3]')
  imagenet-prep download --to s3://my-bucket/ilsvrc2012 --cookies ~/cookies.txt

Header values, cookies and URL passwords never appear in the output or in errors."""


def _connections(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 32:
        raise argparse.ArgumentTypeError("expected 1 to 32 connections")
    return n


def _part_size(text: str) -> int:
    from imagenet_prep.download.s3parts import MAX_PART, MIN_PART
    from imagenet_prep.shards.order import parse_size

    try:
        n = parse_size(text)
    except PrepError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not MIN_PART <= n <= MAX_PART:
        raise argparse.ArgumentTypeError("S3 takes parts of 5MiB to 5GiB")
    return n


def add_source_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Where to download from and how to log in (shared with `prepare --download`)."""
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, metavar="URL",
                   help="folder holding the archives: http(s)://, file:// or a local path "
                        "(default: the image-net.org ILSVRC2012 folder)")
    p.add_argument("--connections", type=_connections, default=4, metavar="N",
                   help="parallel ranged connections per file (default 4)")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="send this HTTP header (repeatable), e.g. 'Cookie: sessionid=...'")
    p.add_argument("--cookies", type=Path, metavar="FILE",
                   help="a Netscape/Mozilla cookies.txt of a logged-in browser session")
    p.add_argument("--netrc", action="store_true",
                   help="send the login and password of ~/.netrc (or $NETRC) for the host")
    p.add_argument("--retries", type=int, default=10, metavar="N",
                   help="attempts in a row without progress before giving up on a file; "
                        "waits double from 0.5 s up to 30 s (default 10)")
    p.add_argument("--part-size", type=_part_size, default=None, metavar="SIZE",
                   help="into a bucket: bytes per multipart part, 5MiB to 5GiB (default 32MiB, "
                        "raised so a file has at most 10,000 parts); --connections parts "
                        "are held in memory")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--to", type=location, required=True, metavar="DIR",
                   help="folder to download into (created if needed), or s3://bucket/prefix "
                        "(streamed into multipart uploads, no local disk); pass it to the "
                        "other commands as --archives DIR")
    p.add_argument("--only", type=split_list, default=ROLES, metavar="ROLES",
                   help="comma-separated archive roles (default: all six)")
    add_source_arguments(p)
    p.add_argument("--verify", action="store_true",
                   help="also MD5-check archives already in DIR (a wrong one is renamed to "
                        "NAME.bad and downloaded again)")
    add_json(p)


def credentials(args: argparse.Namespace):
    """The --header, --cookies and --netrc options as a download.auth.Credentials."""
    from imagenet_prep.download.auth import Credentials, load_cookies, parse_headers

    headers, cookie = parse_headers(args.header)
    cookies = load_cookies(args.cookies) if args.cookies else []
    return Credentials(headers=headers, cookies=cookies, cookie_header=cookie, netrc=args.netrc)


def transfer_options(args: argparse.Namespace):
    """--connections and --retries as a download.transfer.TransferOptions."""
    from imagenet_prep.download.sources import RetryPolicy
    from imagenet_prep.download.transfer import TransferOptions

    extra = {"part_size": args.part_size} if getattr(args, "part_size", None) else {}
    return TransferOptions(connections=args.connections,
                           retry=RetryPolicy(attempts=max(1, args.retries)), **extra)


def summary_lines(report: dict) -> list[str]:
    lines = []
    if report["downloaded_files"]:
        n = report["downloaded_files"]
        lines.append(f"downloaded {n} file{'s' if n != 1 else ''}, "
                     f"{human_size(report['bytes'])} in {report['seconds']:.1f} s "
                     f"({report['mb_per_s']:.1f} MB/s)")
    if report.get("parts_uploaded"):
        lines[-1] += f"; {report['parts_uploaded']} parts uploaded"
    if report["already_here"]:
        lines.append(f"{report['already_here']} already here")
    lines.append(f"archives in {report['to']}; check them any time with "
                 f"`imagenet-prep verify --archives {report['to']}`")
    return lines


def run(args: argparse.Namespace) -> int:
    from imagenet_prep.download.job import download_archives

    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    report = download_archives(
        args.to, base_url=args.base_url, roles=args.only, credentials=credentials(args),
        options=transfer_options(args), verify_existing=args.verify, log=log,
    )
    emit(report, args.json, summary_lines(report))
    return 0
