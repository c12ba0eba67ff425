"""What each extracted file should hold: name, size and CRC32C, one small piece per task.

Extraction writes 1.3 M files; `check` proves them from these pieces and a rerun
trusts a file only when the piece lists it with the size found on disk.  A piece
covers one pool task (a class folder of train, a chunk of val or test, a box
archive), is written atomically when the task ends and holds no timestamps, so a
killed run costs at most the files of the tasks it was running, and no piece
or list of all files is ever held in memory at once.

Piece: DATASET/.imagenet-prep/files/SPLIT/KEY.tsv, one `name<TAB>size<TAB>crc32c`
line per file (crc32c as 8 hex digits), in archive order.
"""

from __future__ import annotations

import os
from pathlib import Path

import google_crc32c

from imagenet_prep.errors import PrepError
from imagenet_prep.layout import DAMAGED_RECORD, FILES_DIR, STATE_DIR
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.files import ensure_dir, is_tmp_name, write_atomic

Entry = tuple[int, int]  # size, crc32c


def piece_dir(dataset: Path, split: str) -> Path:
    return dataset / STATE_DIR / FILES_DIR / split


def piece_path(dataset: Path, split: str, key: str) -> Path:
    """The piece of one task: `key` is a WNID, a chunk's first index, or the archive role."""
    return piece_dir(dataset, split) / f"{key or split}.tsv"


class DamagedPiece(PrepError):
    """A manifest piece with a line that is not `name<TAB>size<TAB>crc32c`."""


def load_piece(path: Path) -> dict[str, Entry]:
    """name -> (size, crc32c) of a piece; {} when absent.  A damaged piece raises
    DamagedPiece (`check` lists it; `load_piece_to_redo` is what a run reads)."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return {}
    out: dict[str, Entry] = {}
    for n, line in enumerate(text.splitlines(), 1):
        try:
            name, size, crc = line.split("\t")
            out[name] = (int(size), int(crc, 16))
        except ValueError:
            raise DamagedPiece(f"{path}: line {n} is damaged (a manifest of extracted "
                               "files); the next run extracts that part again") from None
    return out


def load_piece_to_redo(path: Path) -> dict[str, Entry]:
    """`load_piece` for a run: a damaged piece vouches for nothing, so its task copies
    its files again (as when the piece is missing) and writes it anew."""
    try:
        return load_piece(path)
    except DamagedPiece:
        return {}


def not_extracted(dataset: Path, split: str, key: str, names: list[str]) -> list[str]:
    """The names of one task's folder (train/WNID/, bbox_train/WNID/) that its piece does
    not list: files extraction never wrote there (none when there is no readable piece to
    say: a tree made otherwise, or a piece the next extraction writes again)."""
    try:
        listed = load_piece(piece_path(dataset, split, key))
    except DamagedPiece:
        return []
    return [n for n in names if n not in listed] if listed else []


def extracted_names(dataset: Path, split: str) -> set[str] | None:
    """Every name a split's pieces list (empty: none recorded), or None when a damaged
    piece cannot say (`check` names it; the next extraction writes it again)."""
    listed: set[str] = set()
    try:
        for piece in piece_paths(dataset, split):
            listed.update(load_piece(piece))
    except DamagedPiece:
        return None
    return listed


def piece_text(rows: list[tuple[str, int, int]]) -> str:
    return "".join(f"{name}\t{size}\t{crc:08x}\n" for name, size, crc in rows)


def save_piece(path: Path, rows: list[tuple[str, int, int]]) -> None:
    """Write the piece (no fsync: a lost piece only means the task's files are copied again)."""
    ensure_dir(path.parent)
    write_atomic(path, piece_text(rows).encode("utf-8", "surrogateescape"), fsync=False)


def piece_paths(dataset: Path, split: str) -> list[Path]:
    """Every piece of a split, sorted (the pieces themselves are read by whoever needs them)."""
    folder = piece_dir(dataset, split)
    try:
        return [folder / n for n in sorted(os.listdir(folder)) if not is_tmp_name(n)]
    except FileNotFoundError:
        return []


def file_crc32c(path: str | Path, block: int = 1 << 20) -> int:
    """CRC32C of a whole file, streamed."""
    crc = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(block):
            crc = google_crc32c.extend(crc, chunk)
    return crc


DAMAGED = DAMAGED_RECORD


def damaged_files(dataset: Path) -> list[str]:
    """Paths (relative to DATASET) that the last `check` found damaged.

    A damaged list is not guessed at (the files it named would go unmended): `check`
    writes it anew."""
    rec = stage_state.load(dataset, DAMAGED,
                           f"run `imagenet-prep check {dataset}` to write it again")
    return list(rec.get("files", [])) if isinstance(rec, dict) else []
