"""Print the top of a dataset folder with file counts (used by `make demo`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from imagenet_prep.runtime.files import STATE_DIR


def describe(dataset: Path) -> list[str]:
    """One line per top-level entry; folders show their sub-folders and file count."""
    lines = [f"{dataset}/"]
    for entry in sorted(os.scandir(dataset), key=lambda e: e.name):
        if entry.name == STATE_DIR:
            continue
        if entry.is_dir():
            subdirs = files = 0
            for _, dirs, names in os.walk(entry.path):
                subdirs += len(dirs)
                files += len(names)
            sub = f"{subdirs} folders, " if subdirs else ""
            lines.append(f"  |_{entry.name + '/':<18} {sub}{files} files")
        else:
            lines.append(f"  |_{entry.name:<18} {entry.stat().st_size} bytes")
    return lines


if __name__ == "__main__":
    print("\n".join(describe(Path(sys.argv[1]))))
