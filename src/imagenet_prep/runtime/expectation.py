"""What a dataset was asked to contain, recorded before any work.

`check` proves a dataset against this record, not against whatever happens to be
on disk: an output that was asked for and is absent, half-made or damaged is a
problem, and a folder with no record is "nothing to check".  Each run adds what it
was asked for (outputs with their options, the archives it reads, identified by
name, size, a content fingerprint and, once verified, the MD5), and refuses
archives other than the ones the dataset was made from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagenet_prep.errors import PrepError
from imagenet_prep.layout import EXPECT_RECORD
from imagenet_prep.runtime import stage_state

EXPECT = EXPECT_RECORD
VERSION = 1


def load(dataset: Path) -> dict[str, Any] | None:
    """The expectation, or None when nothing was ever asked of this folder."""
    rec = stage_state.load(dataset, EXPECT)
    if rec is None:
        return None
    if rec["version"] != VERSION:  # its shape is checked by stage_state's schema
        raise PrepError(f"{stage_state.record_path(dataset, EXPECT)}: not an expectation "
                        f"record of this version ({VERSION}); delete it and rerun")
    return rec


def archive_identity(path: Path, md5: str | None = None) -> dict[str, Any]:
    """How an archive is recognised later: name, size, fingerprint, and the MD5 if known."""
    from imagenet_prep.sources.archives import fingerprint

    ident: dict[str, Any] = {"name": path.name, "size": path.stat().st_size,
                             "fingerprint": fingerprint(path)}
    if md5:
        ident["md5"] = md5
    return ident


def identify(dataset: Path, archives: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """role -> identity of `archives`, refusing any other than the archive of that role the
    dataset was made from (mixing two sets gives wrong labels silently).  Writes nothing."""
    rec = load(dataset)
    out = {}
    for role, path in archives.items():
        ident = out[role] = archive_identity(path)
        before = (rec or {}).get("archives", {}).get(role)
        differs = [k for k in ("size", "fingerprint", "md5")
                   if before and k in before and k in ident and before[k] != ident[k]]
        if differs:
            raise PrepError(
                f"{path}: not the archive this dataset was made from ({differs[0]} differs "
                f"from the recorded {before['name']}); use the same archives, or start over "
                "in an empty folder")
    return out


def _merge(before: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """Options of an output asked again: lists (splits) grow, other values are the latest."""
    out = {**before, **now}
    for key, value in now.items():
        if isinstance(value, list) and isinstance(before.get(key), list):
            out[key] = before[key] + [v for v in value if v not in before[key]]
    return out


def expect(dataset: Path, outputs: dict[str, dict[str, Any]],
           archives: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Add `outputs` (name -> its options) and `archives` (role -> identity, from
    `identify`, which refuses other archives) to the record."""
    rec = load(dataset) or {"version": VERSION, "outputs": {}, "archives": {}}
    for role, ident in archives.items():
        rec["archives"][role] = {**rec["archives"].get(role, {}), **ident}
    for name, options in outputs.items():
        rec["outputs"][name] = _merge(rec["outputs"].get(name, {}), options)
    stage_state.save(dataset, EXPECT, rec)
    return rec
