"""Every output of `prepare --only all --wds --dali-index` on a fixed replica stays byte-identical.

The digests in golden/prepare_all.json were recorded from main before the shard
engine and the new package layout (issue 14) replaced the two shard sinks; any
change to a byte of a class tree, flat folder, synsets.txt, the box CSV, a
TFRecord or DALI index, a WebDataset shard or wids index, or a state record fails
here.  Rerecord (`python tests/test_golden_outputs.py`) only for an intended
change of format, and say so in the commit.

The replica is generated with Pillow's JPEG encoder, so its bytes (and the RGB
re-encodings of CMYK/PNG images) belong to one Pillow version: the recorded
version is part of the golden file, and another version skips with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import PIL
import pytest

from imagenet_prep.replica.build import make_replica
from imagenet_prep.runtime.stage_state import SEAL

GOLDEN = Path(__file__).parent / "golden" / "prepare_all.json"
REPLICA = dict(classes=6, train_per_class=10, val_per_class=3, test=6, size=(64, 48), seed=11)
PREPARE = ("--only", "all", "--wds", "--dali-index", "--train-shards", "4", "--val-shards", "2",
           "--wds-shard-samples", "16", "--no-report", "--workers", "2")
# records that hold timings, absolute paths or run history, not outputs
VOLATILE = {"tfrecord-report.json", "wds-report.json", "prepare.json", "lock"}


def output_digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every output file (links followed), volatile records left out;
    in state records, the run's temporary folder is replaced by a placeholder."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if name in VOLATILE or (".imagenet-prep" in rel and name.startswith("probe-")):
                continue
            data = path.read_bytes()
            if ".imagenet-prep" in rel and name.endswith(".json"):
                # a record's own SHA-256 covers the run's folders: the rest is compared
                record = json.loads(data)
                record.pop(SEAL, None)
                data = (json.dumps(record, indent=1, sort_keys=True) + "\n").encode()
            if ".imagenet-prep" in rel:  # records name the folders of the run
                data = data.replace(str(root.parent).encode(), b"<TMP>")
            out[rel] = hashlib.sha256(data).hexdigest()
    return out


def build(tmp: Path) -> dict[str, str]:
    archives, dataset = tmp / "archives", tmp / "dataset"
    make_replica(archives, workers=2, **REPLICA)
    from imagenet_prep.cli import main

    assert main(["prepare", "--archives", str(archives), "--out", str(dataset), *PREPARE]) == 0
    return output_digests(dataset)


def test_outputs_byte_identical_to_recorded(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    if golden["pillow"] != PIL.__version__:
        pytest.skip(f"digests recorded with Pillow {golden['pillow']}, not {PIL.__version__}")
    got = build(tmp_path)
    want = golden["files"]
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    changed = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    assert not missing, f"{len(missing)} outputs missing, first {missing[:5]}"
    assert not extra, f"{len(extra)} unexpected outputs, first {extra[:5]}"
    assert not changed, f"{len(changed)} outputs changed, first {changed[:5]}"


if __name__ == "__main__":  # rerecord
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        files = build(Path(tmp))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"pillow": PIL.__version__, "replica": REPLICA,
                                  "prepare": PREPARE, "files": files}, indent=1,
                                 sort_keys=True) + "\n")
    print(f"recorded {len(files)} digests in {GOLDEN}", file=sys.stderr)
