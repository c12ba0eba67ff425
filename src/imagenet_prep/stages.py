"""The stages of `prepare`, each declared once: what it runs, what it writes, what it reads.

A `Stage` holds a stage's name, its run function, its disk estimate, its summary
line and the archive roles it reads.  `prepare` loops over the stages a target
names (TARGETS) and knows no stage by name; `get` is the only lookup, and an
unknown name is refused, never taken for another stage.

The writers are imported inside the run functions, so importing this module (as
`imagenet-prep prepare --help` does, for TARGETS) loads none of them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagenet_prep.errors import PrepError
from imagenet_prep.layout import (
    EXTRACT_SPLITS,
    MDS_DIR,
    PARQUET_DIR,
    WDS_DIR,
    extract_record,
)
from imagenet_prep.runtime import stage_state
from imagenet_prep.runtime.pool import Workers
from imagenet_prep.runtime.storage import open_input
from imagenet_prep.sources.archives import ROLES, find_archive

if TYPE_CHECKING:
    from imagenet_prep.sources.subset import Subset


@dataclass(frozen=True)
class PrepareOptions:
    """Everything `prepare` is told besides where the archives and the dataset are."""

    only: str = "pytorch"  # a key of TARGETS
    force: bool = False  # run even if the disk plan says the space is short
    flatten_mode: str = "hardlink"
    labels: str = "auto"  # validation label source
    train_shards: int = 1024
    val_shards: int = 128
    seed: int = 0
    dali_index: bool = False
    on_bad_image: str = "fail"
    verify: str = "quick"  # quick, full or none
    wds: bool = False  # also the wds stage, after the target's stages
    wds_shard_size: int | None = None
    wds_shard_samples: int | None = None
    write_report: bool = True  # end with the report stage
    parquet: bool = False  # also the parquet stage (Hugging Face), after the target's stages
    mds: bool = False  # also the mds stage (MosaicML streaming)
    subset: Subset | None = None  # which classes / training images (None: the dataset's own)
    resize: Any = None  # a formats.resize.ResizeSpec: the dataset is that resized variant
    tfds: bool = False  # also the tfds stage (DATASET/tfds, train and validation), after wds


Result = dict[str, Any]
# (archives, dataset, options, workers) -> the stage's result, or None when it does not apply
Run = Callable[[Path, Path, PrepareOptions, Workers], Result | None]
# (archives, dataset, options) -> bytes the stage still has to write
Disk = Callable[[Path, Path, PrepareOptions], int]
# (result, seconds) -> the detail of the stage's line in the summary
Summary = Callable[[Result, float], str]


@dataclass(frozen=True)
class Stage:
    """One stage of `prepare`.

    `run` is None for a stage whose work the caller supplies (download: it holds the
    credentials).  A stage without `disk` has no line in the disk plan.  `preflight`
    runs before any stage does, to refuse early what would fail after hours of work.
    A `closing` stage runs after the run's stage timings are recorded (so what it
    writes can show them) and its result is the report's `name` entry, not one of
    its `stages`.
    """

    name: str
    run: Run | None
    summary: Summary
    disk: Disk | None = None
    roles: tuple[str, ...] = ()  # archive roles read (what `prepare --download` fetches)
    preflight: Callable[[Path, PrepareOptions], None] | None = None
    closing: bool = False
    needs: tuple[str, ...] = ()  # archive roles it cannot do without: missing stops the run
    # what the dataset's expectation records of this output before any work (check proves it)
    asks: Callable[[PrepareOptions], dict[str, Any]] | None = None


# --- disk estimates ------------------------------------------------------------------------

def _gz_size(path: Path) -> int:
    """Uncompressed size from the gzip trailer (exact below 4 GiB, which box archives are)."""
    with open_input(path) as f:
        f.seek(-4, 2)
        return struct.unpack("<I", f.read(4))[0]


def archive_bytes(archives: Path, role: str) -> int:
    """The bytes an archive's members take on disk (0 when it is absent)."""
    path = find_archive(archives, role)
    if path is None:
        return 0
    return _gz_size(path) if role.startswith("bbox") else path.stat().st_size


def _nothing(archives: Path, dataset: Path, options: PrepareOptions) -> int:
    return 0


def _images(archives: Path, dataset: Path, options: PrepareOptions) -> int:
    return sum(archive_bytes(archives, s) for s in ("train", "val"))


def _extract_disk(archives: Path, dataset: Path, options: PrepareOptions) -> int:
    return sum(archive_bytes(archives, s) for s in EXTRACT_SPLITS
               if stage_state.load(dataset, extract_record(s)) is None)


def _flatten_disk(archives: Path, dataset: Path, options: PrepareOptions) -> int:
    return _images(archives, dataset, options) if options.flatten_mode == "copy" else 0


def _bbox_disk(archives: Path, dataset: Path, options: PrepareOptions) -> int:
    return archive_bytes(archives, "bbox_train") // 8


# --- run functions -------------------------------------------------------------------------

def _verify(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers
            ) -> Result | None:
    from imagenet_prep.sources.archives import verify_archives

    if options.verify == "none":
        return None
    statuses = verify_archives(archives, quick=options.verify == "quick")
    bad = [s for s in statuses if s.status == "MISMATCH"]
    if bad:
        raise PrepError(f"{archives / bad[0].name}: damaged ({bad[0].detail}); download it again")
    if options.verify == "full":  # the MD5s now proven join the archives' identities
        _record_md5s(archives, dataset, [s.name for s in statuses if s.status == "OK"])
    return {s.name: s.status for s in statuses}


def _record_md5s(archives: Path, dataset: Path, names: list[str]) -> None:
    from imagenet_prep.runtime import expectation
    from imagenet_prep.sources.archives import OFFICIAL, reference

    md5s = reference(archives)
    roles = {OFFICIAL[n].role: archives / n for n in names if n in OFFICIAL}
    identities = expectation.identify(dataset, roles)
    for role, path in roles.items():
        if (md5 := md5s.get(path.name, (None, None))[1]) is not None:
            identities[role]["md5"] = md5
    expectation.expect(dataset, {}, identities)


def _extract(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers
             ) -> Result:
    from imagenet_prep.folders.extract import extract

    return extract(archives, dataset, workers=workers, subset=options.subset,
                   labels=options.labels, resize=options.resize)


def _valtree(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers
             ) -> Result | None:
    from imagenet_prep.folders.valtree import valtree

    if stage_state.load(dataset, extract_record("val")) is None:
        return None
    return valtree(dataset, archives, options.labels, options.subset)


def _flatten(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers
             ) -> Result:
    from imagenet_prep.folders.flatten import flatten

    splits = tuple(s for s in ("train", "val") if (dataset / s).is_dir())
    return flatten(dataset, splits, options.flatten_mode, options.subset)


def _synsets(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers
             ) -> Result:
    from imagenet_prep.folders.synsets import write_synsets

    return write_synsets(dataset, archives, options.subset)


def _bbox(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers
          ) -> Result | None:
    from imagenet_prep.folders.bbox_csv import have_box_xmls, write_bbox_csv

    if not have_box_xmls(dataset, archives):
        return None
    return write_bbox_csv(dataset, archives=archives, workers=workers, subset=options.subset)


def _boxes_csv(archives: Path, dataset: Path, workers: Workers) -> Callable[[], Path | None]:
    """What makes the box CSV a shard stage reads, once its inputs are proven."""
    from imagenet_prep.folders.bbox_csv import ensure_csv

    return partial(ensure_csv, dataset, archives, workers)


def _tfrecord(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers
              ) -> Result:
    from imagenet_prep.shards.tfrecord import write_tfrecords

    return write_tfrecords(
        dataset, archives=archives, train_shards=options.train_shards,
        val_shards=options.val_shards, seed=options.seed, workers=workers,
        dali_index=options.dali_index, on_bad_image=options.on_bad_image,
        labels=options.labels, boxes_csv=_boxes_csv(archives, dataset, workers),
        subset=options.subset, resize=options.resize,
    )


def _wds(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers) -> Result:
    from imagenet_prep.shards.wds import write_wds

    return write_wds(
        dataset / WDS_DIR, dataset=dataset, archives=archives,
        shard_size=options.wds_shard_size, shard_samples=options.wds_shard_samples,
        seed=options.seed, workers=workers, on_bad_image=options.on_bad_image,
        labels=options.labels, boxes_csv=_boxes_csv(archives, dataset, workers),
        subset=options.subset, resize=options.resize,
    )


def _card(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers
          ) -> Result | None:
    from imagenet_prep.shards.cards import record_root_card

    return record_root_card(dataset)


def _parquet(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers
             ) -> Result:
    from imagenet_prep.shards.parquet import write_parquet

    return write_parquet(dataset, archives=archives, seed=options.seed, workers=workers,
                         on_bad_image=options.on_bad_image, labels=options.labels,
                         subset=options.subset, resize=options.resize)


def _mds(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers) -> Result:
    from imagenet_prep.shards.mds import write_mds

    return write_mds(dataset, archives=archives, seed=options.seed, workers=workers,
                     on_bad_image=options.on_bad_image, labels=options.labels,
                     subset=options.subset, resize=options.resize)


def _torchvision(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers
                 ) -> Result | None:
    from imagenet_prep.folders.torchvision_meta import write_meta_bin

    return write_meta_bin(dataset) if (dataset / "train").is_dir() else None


def _tfds(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers) -> Result:
    from imagenet_prep.shards.tfds import write_tfds

    return write_tfds(dataset, archives=archives, workers=workers,
                      on_bad_image=options.on_bad_image, labels=options.labels,
                      subset=options.subset, resize=options.resize)


def _report(archives: Path, dataset: Path, options: PrepareOptions, workers: Workers
            ) -> Result:
    from imagenet_prep.report import build_report

    return build_report(dataset, workers=workers)


def _report_preflight(dataset: Path, options: PrepareOptions) -> None:
    from imagenet_prep.report import check_target, default_path

    check_target(default_path(dataset))  # refuse before hours of work, not after


# --- summary lines -------------------------------------------------------------------------

def _download_line(r: Result, seconds: float) -> str:
    return (f"{r['downloaded_files']} files, {r['bytes'] / 1e6:.1f} MB, "
            f"{r['mb_per_s']:.0f} MB/s; {r['already_here']} already here")


def _verify_line(r: Result, seconds: float) -> str:
    statuses = list(r.values())
    return ", ".join(f"{statuses.count(v)} {v}" for v in sorted(set(statuses)))


def _extract_line(r: Result, seconds: float) -> str:
    files = sum(v["files"] for v in r.values())
    size = sum(v["bytes"] for v in r.values())
    rate = size / 1e6 / seconds if seconds else 0.0
    return f"{files} files, {size / 1e6:.1f} MB, {rate:.0f} MB/s"


def _valtree_line(r: Result, seconds: float) -> str:
    return f"{r['files']} images in {len(r['classes'])} classes"


def _flatten_line(r: Result, seconds: float) -> str:
    return ", ".join(f"{k}: {v['files']} ({v['mode']})" for k, v in r.items())


def _synsets_line(r: Result, seconds: float) -> str:
    return f"{r['classes']} classes ({r['source']})"


def _bbox_line(r: Result, seconds: float) -> str:
    return (f"{r['boxes_written']} boxes from {r['images']} images "
            f"({r['files_skipped']} files, {r['boxes_skipped']} boxes skipped)")


def _tfrecord_line(r: Result, seconds: float) -> str:
    run = r["run"]
    return (", ".join(f"{k}: {v['records']} records in {v['shards']} shards"
                      for k, v in r["splits"].items())
            + f"; {run['images_per_s']:.0f} img/s, {run['mb_per_s']:.0f} MB/s, "
              f"{len(r['converted'])} converted to RGB JPEG")


def _wds_line(r: Result, seconds: float) -> str:
    run = r["run"]
    return (", ".join(f"{k}: {v['samples']} samples in {v['shards']} shards"
                      for k, v in r["splits"].items())
            + f"; {run['images_per_s']:.0f} img/s, {run['mb_per_s']:.0f} MB/s")


def _card_line(r: Result, seconds: float) -> str:
    return r.get("path") or r.get("skipped", "")


def _torchvision_line(r: Result, seconds: float) -> str:
    return f"meta.bin: {r['classes']} classes, {r['val_images']} validation WNIDs"


def _tfds_line(r: Result, seconds: float) -> str:
    return _tfrecord_line(r, seconds)


def _report_line(r: Result, seconds: float) -> str:
    return f"{r['path']} ({r['bytes'] / 1e6:.2f} MB)"


# --- the registry --------------------------------------------------------------------------

_SHARD_ROLES = ("train", "val", "bbox_train", "bbox_val", "devkit")  # images, boxes, labels
_IMAGES = ("train", "val")  # what every image output is made of
_HF_ROLES = ("train", "val", "test", "bbox_val", "devkit")  # the Hub has a test split

DOWNLOAD = Stage("download", None, _download_line)  # the caller's download function runs it
STAGES: dict[str, Stage] = {s.name: s for s in (
    DOWNLOAD,
    Stage("verify", _verify, _verify_line, _nothing),
    Stage("extract", _extract, _extract_line, _extract_disk, roles=EXTRACT_SPLITS,
          needs=_IMAGES, asks=lambda o: {"splits": list(_IMAGES)}),
    Stage("valtree", _valtree, _valtree_line, _nothing, roles=("devkit", "bbox_val"),
          asks=lambda o: {"labels": o.labels}),
    Stage("flatten", _flatten, _flatten_line, _flatten_disk,
          asks=lambda o: {"mode": o.flatten_mode, "splits": list(_IMAGES)}),
    Stage("synsets", _synsets, _synsets_line, _nothing, roles=("devkit",), asks=lambda o: {}),
    Stage("bbox", _bbox, _bbox_line, _bbox_disk, roles=("bbox_train",), needs=("bbox_train",),
          asks=lambda o: {}),
    Stage("tfrecord", _tfrecord, _tfrecord_line, _images, roles=_SHARD_ROLES, needs=_IMAGES,
          asks=lambda o: {"splits": list(_IMAGES), "dali_index": o.dali_index}),
    Stage("wds", _wds, _wds_line, _images, roles=_SHARD_ROLES, needs=_IMAGES,
          asks=lambda o: {"folder": WDS_DIR, "splits": list(_IMAGES)}),
    Stage("card", _card, _card_line, _nothing, asks=lambda o: {}),
    Stage("parquet", _parquet, _wds_line, _images, roles=_HF_ROLES, needs=_IMAGES,
          asks=lambda o: {"folder": PARQUET_DIR, "splits": list(_IMAGES)}),
    Stage("mds", _mds, _wds_line, _images, roles=_HF_ROLES, needs=_IMAGES,
          asks=lambda o: {"folder": MDS_DIR, "splits": list(_IMAGES)}),
    Stage("report", _report, _report_line, preflight=_report_preflight, closing=True),
    Stage("torchvision", _torchvision, _torchvision_line, _nothing, asks=lambda o: {}),
    Stage("tfds", _tfds, _tfds_line, _images, roles=("train", "val", "devkit", "bbox_val"),
          needs=_IMAGES, asks=lambda o: {"splits": list(_IMAGES)}),
)}

TARGETS: dict[str, tuple[str, ...]] = {
    "pytorch": ("verify", "extract", "valtree", "flatten", "synsets", "torchvision", "card"),
    "tensorflow": ("verify", "bbox", "tfrecord"),
    "all": ("verify", "extract", "valtree", "flatten", "synsets", "torchvision", "card", "bbox",
            "tfrecord"),
}


def get(name: str) -> Stage:
    """The stage called `name`; an unknown name is a PrepError naming the known ones."""
    try:
        return STAGES[name]
    except KeyError:
        raise PrepError(f"unknown stage {name!r}; the stages are {', '.join(STAGES)}") from None


def target(only: str) -> tuple[str, ...]:
    """The stage names of a target; an unknown target is a PrepError naming the known ones."""
    try:
        return TARGETS[only]
    except KeyError:
        raise PrepError(f"unknown target {only!r}; choose from {', '.join(TARGETS)}") from None


def selected(options: PrepareOptions) -> tuple[Stage, ...]:
    """The stages `prepare` runs, in order: the target's, then wds, parquet and mds (with
    those options), then the report (with `write_report`)."""
    names = (target(options.only) + (("wds",) if options.wds else ())
             + tuple(n for n in ("parquet", "mds") if getattr(options, n))
             + (("tfds",) if options.tfds else ())
             + (("report",) if options.write_report else ()))
    return tuple(get(n) for n in names)


def needs(options: PrepareOptions) -> tuple[str, ...]:
    """The archive roles the selected stages cannot do without, in ROLES order."""
    need = {r for stage in selected(options) for r in stage.needs}
    return tuple(r for r in ROLES if r in need)


def asks(options: PrepareOptions) -> dict[str, dict[str, Any]]:
    """The outputs the selected stages make, with what the expectation records of each."""
    return {s.name: s.asks(options) for s in selected(options) if s.asks is not None}


def roles_used(options: PrepareOptions) -> tuple[str, ...]:
    """The archive roles the selected stages read, in ROLES order."""
    read = {r for stage in selected(options) for r in stage.roles}
    return tuple(r for r in ROLES if r in read)


def summary_line(name: str, result: Result, seconds: float) -> str:
    """A stage's line in the summary `prepare` prints (with the read requests per image of
    archives in object storage)."""
    line = f"  {name:<9} {seconds:7.1f} s  {get(name).summary(result, seconds)}"
    run = result.get("run") if isinstance(result, dict) else None
    if isinstance(run, dict) and run.get("requests") and run.get("images"):
        line += (f"; {run['requests']} read requests, {run['requests'] / run['images']:.2f} "
                 f"per image, {run['read_bytes'] / run['images'] / 1e3:.1f} kB per image")
    return line
