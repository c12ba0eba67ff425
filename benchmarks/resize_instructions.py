"""Instructions per image of our resize and the straightforward Pillow pipeline.

    python benchmarks/resize_instructions.py [--recipe box=64] [--images 50]

CPU time on a shared VM moves by 5-10 % between runs; instruction counts do not.
Each contender runs in its own process under `valgrind --tool=callgrind` twice,
once over the images and once over none (imports, rendering), and the difference
is divided by the image count.  Comparing the instruction ratio with the time ratio
of `run.py --resize` shows where time goes beyond instructions: libjpeg's Huffman
decoding (branchy, bit by bit) runs at fewer instructions per cycle than the
resample loops, so a pipeline that is mostly Huffman decoding gains less in
seconds than in instructions.  Needs valgrind (Debian's package).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFS = re.compile(r"I\s+refs:\s+([\d,]+)")

CHILD = """
import sys
sys.path.insert(0, {here!r})
from resize_bench import baseline, ours, images_of
from imagenet_prep.formats import resize
spec = resize.parse({recipe!r})
images = images_of("photo", {count})
fn = baseline if {who!r} == "baseline" else ours
for data in images[:{run}]:
    fn(data, spec)
"""


def instructions(who: str, recipe: str, count: int, run: int) -> int:
    """Instructions callgrind counts for one child process (`run` of `count` images)."""
    code = CHILD.format(here=str(HERE), recipe=recipe, count=count, who=who, run=run)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
             sys.executable, "-c", code], capture_output=True, text=True, check=True)
    m = REFS.search(proc.stderr)
    if m is None:
        raise SystemExit(f"valgrind printed no instruction count:\n{proc.stderr[-500:]}")
    return int(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="box=64", help="a --resize value (default box=64)")
    ap.add_argument("--images", type=int, default=50, help="photo-like 500x375 images")
    a = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: apt-get install valgrind")
    per: dict[str, float] = {}
    for who in ("ours", "baseline"):
        whole = instructions(who, a.recipe, a.images, a.images)
        setup = instructions(who, a.recipe, a.images, 0)
        per[who] = (whole - setup) / a.images
    print(f"| recipe | ours, instructions/image | straightforward Pillow | ratio |\n"
          f"|---|---|---|---|\n| {a.recipe} | {per['ours'] / 1e6:.1f} M | "
          f"{per['baseline'] / 1e6:.1f} M | {per['baseline'] / per['ours']:.2f}x |")


if __name__ == "__main__":
    main()
