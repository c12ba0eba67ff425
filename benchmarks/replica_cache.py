"""Benchmark replicas, generated once per parameter set and reused.

A replica of realistic size takes about a minute to render, so it is kept in
`benchmarks/out/replica-<hash>/`, where the hash covers the parameters and the
source of the generator (a changed generator makes a new replica).  `bench.json`
is written last: a folder without it, or whose archive sizes differ from it, is
incomplete and is built again.

Besides the six archives, each replica holds `bbox-scaled/`, a box archive with
the XMLs of all 1000 classes (`bbox_per_class` each), made from the replica's own
XMLs (quirks included) with their WNIDs rewritten: at the replica's ~5,000 XMLs
the interpreter start-up would dominate a `bbox` run, so the XML rate is
measured on this larger archive.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import imagenet_prep.replica.build as replica_mod
import imagenet_prep.replica.images as replica_images_mod
from imagenet_prep.replica.build import make_replica
from imagenet_prep.sources import metadata
from imagenet_prep.sources.archives import BBOX_TRAIN, TRAIN, VAL

FORMAT = 1
BENCH_JSON = "bench.json"
ARCHIVES_DIR = "archives"
BBOX_DIR = "bbox-scaled"


@dataclass(frozen=True)
class ReplicaParams:
    """What fixes a benchmark replica's bytes."""

    classes: int = 100
    train_per_class: int = 130
    val_per_class: int = 50
    test: int = 100
    width: int = 500
    height: int = 375
    seed: int = 0
    bbox_per_class: int = 100  # XMLs per class in bbox-scaled/ (1000 classes)

    @classmethod
    def scaled(cls, scale: float) -> ReplicaParams:
        """The default replica with every count multiplied by `scale` (at least 1)."""
        d = cls()
        return cls(classes=d.classes, train_per_class=max(1, round(d.train_per_class * scale)),
                   val_per_class=max(1, round(d.val_per_class * scale)),
                   test=max(1, round(d.test * scale)),
                   bbox_per_class=max(1, round(d.bbox_per_class * scale)))

    @classmethod
    def for_images(cls, images: int) -> ReplicaParams:
        """About `images` train + val images at the default train:val ratio (scaling study).

        Classes grow first (130 train images each, as the default), up to 1000.
        """
        d = cls()
        per_class = d.train_per_class + d.val_per_class
        classes = int(min(1000, max(1, round(images / per_class))))
        train = max(1, round(images * d.train_per_class / per_class / classes))
        val = max(1, round(images * d.val_per_class / per_class / classes))
        return cls(classes=classes, train_per_class=train, val_per_class=val, test=10,
                   bbox_per_class=1)

    def key(self) -> str:
        h = hashlib.sha256(json.dumps([FORMAT, asdict(self)], sort_keys=True).encode())
        for mod in (replica_mod, replica_images_mod):
            h.update(Path(mod.__file__).read_bytes())  # type: ignore[arg-type]
        return h.hexdigest()[:12]


@dataclass(frozen=True)
class Replica:
    """A complete cached replica and the facts the benchmark needs about it."""

    root: Path
    params: ReplicaParams
    facts: dict[str, Any]

    @property
    def archives(self) -> Path:
        return self.root / ARCHIVES_DIR

    @property
    def bbox_archives(self) -> Path:
        return self.root / BBOX_DIR

    @property
    def train_images(self) -> int:
        return int(self.facts["counts"]["train"])

    @property
    def val_images(self) -> int:
        return int(self.facts["counts"]["val"])

    @property
    def images(self) -> int:
        return int(sum(self.facts["counts"][k] for k in ("train", "val", "test")))

    def archive_bytes(self, *names: str) -> int:
        return int(sum(self.facts["archives"][n] for n in names))

    @property
    def input_bytes(self) -> int:
        """Bytes of the train and val archives: what `tfrecord` reads."""
        return self.archive_bytes(TRAIN, VAL)


def _complete(root: Path, params: ReplicaParams) -> dict[str, Any] | None:
    try:
        facts = json.loads((root / BENCH_JSON).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if facts.get("params") != asdict(params):
        return None
    for folder, sizes in (("archives", facts["archives"]), ("bbox", facts["bbox_archive"])):
        base = root / (ARCHIVES_DIR if folder == "archives" else BBOX_DIR)
        for name, size in sizes.items():
            p = base / name
            if not p.is_file() or p.stat().st_size != size:
                return None
    return facts


def ensure_replica(params: ReplicaParams, cache: Path, workers: int, log=print) -> Replica:
    """The cached replica for `params`, built first if absent or incomplete."""
    root = cache / f"replica-{params.key()}"
    facts = _complete(root, params)
    if facts is not None:
        return Replica(root, params, facts)
    log(f"building replica {root.name}: {params.classes} classes x {params.train_per_class} "
        f"train, {params.val_per_class} val per class, {params.width}x{params.height} "
        "(once; reused by later runs)")
    shutil.rmtree(root, ignore_errors=True)
    info = make_replica(root / ARCHIVES_DIR, classes=params.classes,
                        train_per_class=params.train_per_class,
                        val_per_class=params.val_per_class, test=params.test,
                        size=(params.width, params.height), seed=params.seed, workers=workers)
    xmls = scaled_box_archive(root / ARCHIVES_DIR / BBOX_TRAIN, root / BBOX_DIR / BBOX_TRAIN,
                              params.bbox_per_class, params.seed)
    facts = {
        "params": asdict(params),
        "counts": {"train": info.train_images, "val": info.val_images, "test": info.test_images,
                   "bbox_train": info.bbox_train_files, "bbox_val": info.bbox_val_files,
                   "bbox_scaled": xmls},
        "archives": {n: a.size for n, a in info.archives.items()},
        "bbox_archive": {BBOX_TRAIN: (root / BBOX_DIR / BBOX_TRAIN).stat().st_size},
        "build_seconds": round(info.seconds, 1),
    }
    part = root / (BENCH_JSON + ".part")
    part.write_text(json.dumps(facts, indent=1) + "\n")
    part.replace(root / BENCH_JSON)
    log(f"  built in {info.seconds:.0f} s")
    return Replica(root, params, facts)


def scaled_box_archive(source: Path, out: Path, per_class: int, seed: int) -> int:
    """Write a box archive of all 1000 classes x `per_class` XMLs; returns the XML count.

    Class j takes the XMLs of replica class j mod N, cycled, with that class's WNID
    replaced by its own everywhere (folder, file name, object names), so every
    replica quirk (other-class objects, plain-word names, floats, %s file names,
    reversed and out-of-image boxes) appears in proportion.
    """
    by_class: dict[str, list[tuple[str, bytes]]] = {}
    with tarfile.open(source, "r:gz") as tf:
        for m in tf:
            if m.isfile():
                f = tf.extractfile(m)
                assert f is not None
                wnid, base = m.name.split("/")
                by_class.setdefault(wnid, []).append((base, f.read()))
    sources = sorted(by_class)
    targets = list(metadata.wnids())
    order = np.random.default_rng(seed).permutation(len(targets))
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    count = 0
    with open(part, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for j in order.tolist():
            wnid = targets[j]
            src = sources[j % len(sources)]
            files = by_class[src]
            tar.addfile(_info(f"{wnid}/", 0, directory=True))
            for c in range(per_class):
                base, data = files[c % len(files)]
                number = int(base[:-4].rsplit("_", 1)[1]) + c // len(files) * 10_000_000
                stem = f"{wnid}_{number}"  # a later pass over the class: new image numbers
                data = data.replace(src.encode(), wnid.encode())
                tar.addfile(_info(f"{wnid}/{stem}.xml", len(data)), io.BytesIO(data))
                count += 1
    part.replace(out)
    return count


def _info(name: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.uid, info.gid = size, replica_mod.MTIME, 1000, 1000
    info.uname = info.gname = "ilsvrc"
    if directory:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.mode = 0o644
    return info
