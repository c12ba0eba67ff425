"""The class valtree gave each validation image: STATE_DIR/valtree-classes.tsv.

One `name<TAB>WNID` line per grouped image, sorted by name (50,000 lines, 2 MB).
`check` proves every image is in its folder from it (two images swapped between
class folders keep every count and every CRC32C, and the labels' archives may be
gone by then), and `flatten` refuses a file there that valtree never grouped.
"""

from __future__ import annotations

from pathlib import Path

from imagenet_prep.errors import DamagedStateError
from imagenet_prep.layout import STATE_DIR, VALTREE_CLASSES
from imagenet_prep.runtime.files import state_dir, write_if_changed


def path(dataset: Path) -> Path:
    return dataset / STATE_DIR / VALTREE_CLASSES


def save(dataset: Path, names: list[str], wnids: list[str]) -> None:
    state_dir(dataset)
    write_if_changed(path(dataset), "".join(
        f"{n}\t{w}\n" for n, w in zip(names, wnids, strict=True)))


def load(dataset: Path) -> dict[str, str] | None:
    """name -> WNID, or None when valtree has not written the list."""
    where = path(dataset)
    try:
        text = where.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        name, tab, wnid = line.partition("\t")
        if not tab or not wnid or "\t" in wnid:
            raise DamagedStateError(f"{where}: damaged at line {n} (not NAME<TAB>WNID); "
                                    "run valtree (or the same prepare) again to rewrite it")
        out[name] = wnid
    return out
