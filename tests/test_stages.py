"""The stage registry (imagenet_prep.stages) and the lazy command line (issue 14, item 3).

Every stage is declared once; `prepare` only loops over the registry, so a name a
target lists must be registered, an unknown name is refused (never run as another
stage), and each stage renders its own summary line.  `imagenet-prep --help`
imports no command module and none of the heavy libraries.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from imagenet_prep import stages
from imagenet_prep.cli import COMMANDS, main
from imagenet_prep.errors import PrepError
from imagenet_prep.prepare import PrepareOptions, prepare, summary_lines
from imagenet_prep.sources.archives import BBOX_TRAIN, DEVKIT, ROLES, TRAIN, VAL

# a representative result of each stage, its seconds and the summary line it gives
EXAMPLES = {
    "download": ({"downloaded_files": 5, "bytes": 12_345_678, "mb_per_s": 40.2,
                  "already_here": 1}, 0.3,
                 "  download      0.3 s  5 files, 12.3 MB, 40 MB/s; 1 already here"),
    "verify": ({"a.tar": "OK", "b.tar": "MISSING", "c.tar": "OK"}, 0.0,
               "  verify        0.0 s  1 MISSING, 2 OK"),
    "extract": ({"train": {"files": 10, "bytes": 2_000_000}, "val": {"files": 5,
                                                                      "bytes": 1_000_000}}, 1.5,
                "  extract       1.5 s  15 files, 3.0 MB, 2 MB/s"),
    "valtree": ({"files": 30, "classes": {"n01440764": 10, "n01443537": 20}}, 0.1,
                "  valtree       0.1 s  30 images in 2 classes"),
    "flatten": ({"train": {"files": 40, "mode": "hardlink"},
                 "val": {"files": 12, "mode": "hardlink"}}, 0.2,
                "  flatten       0.2 s  train: 40 (hardlink), val: 12 (hardlink)"),
    "synsets": ({"classes": 4, "source": "devkit"}, 0.0,
                "  synsets       0.0 s  4 classes (devkit)"),
    "bbox": ({"boxes_written": 7, "images": 5, "files_skipped": 1, "boxes_skipped": 2}, 0.4,
             "  bbox          0.4 s  7 boxes from 5 images (1 files, 2 boxes skipped)"),
    "tfrecord": ({"splits": {"train": {"records": 48, "shards": 4},
                             "val": {"records": 12, "shards": 2}},
                  "run": {"images_per_s": 812.4, "mb_per_s": 30.6}, "converted": [{}, {}]}, 2.25,
                 "  tfrecord      2.2 s  train: 48 records in 4 shards, val: 12 records in 2 "
                 "shards; 812 img/s, 31 MB/s, 2 converted to RGB JPEG"),
    "wds": ({"splits": {"train": {"samples": 48, "shards": 3}},
             "run": {"images_per_s": 700.0, "mb_per_s": 25.0}}, 1.0,
            "  wds           1.0 s  train: 48 samples in 3 shards; 700 img/s, 25 MB/s"),
    "card": ({"path": "/data/README.md", "bytes": 900, "sha256": "0" * 64}, 0.0,
             "  card          0.0 s  /data/README.md"),
    "parquet": ({"splits": {"train": {"samples": 48, "shards": 1}},
                 "run": {"images_per_s": 600.0, "mb_per_s": 20.0}}, 1.0,
                "  parquet       1.0 s  train: 48 samples in 1 shards; 600 img/s, 20 MB/s"),
    "mds": ({"splits": {"val": {"samples": 12, "shards": 2}},
             "run": {"images_per_s": 900.0, "mb_per_s": 30.0}}, 0.5,
            "  mds           0.5 s  val: 12 samples in 2 shards; 900 img/s, 30 MB/s"),
    "torchvision": ({"classes": 1000, "val_images": 12}, 0.0,
                    "  torchvision     0.0 s  meta.bin: 1000 classes, 12 validation WNIDs"),
    "tfds": ({"splits": {"train": {"records": 48, "shards": 1}},
              "run": {"images_per_s": 900.0, "mb_per_s": 40.0}, "converted": []}, 0.5,
             "  tfds          0.5 s  train: 48 records in 1 shards; 900 img/s, 40 MB/s, "
             "0 converted to RGB JPEG"),
    "report": ({"path": "/data/report.html", "bytes": 1_234_567, "seconds": 0.8}, 0.8,
               "  report        0.8 s  /data/report.html (1.23 MB)"),
}
HEAVY = ("numpy", "PIL", "scipy", "requests", "google_crc32c")


def test_every_target_names_registered_stages_that_run():
    for only, names in stages.TARGETS.items():
        assert names, only
        for name in names:
            stage = stages.get(name)
            assert stage.name == name and stage.run is not None and not stage.closing
    # what --wds and the report add are registered too; the report closes the run
    assert stages.get("wds").run is not None
    assert stages.get("report").closing and stages.get("report").preflight is not None


def test_registry_keys_are_the_stage_names():
    assert all(name == stage.name for name, stage in stages.STAGES.items())
    assert set(stages.STAGES) == set(EXAMPLES)


def test_unknown_stage_or_target_is_a_clear_error():
    with pytest.raises(PrepError, match=r"unknown stage 'tfrecords'; the stages are download, "):
        stages.get("tfrecords")
    with pytest.raises(PrepError, match=r"unknown target 'jax'; choose from pytorch, tensorflow"):
        stages.selected(PrepareOptions(only="jax"))


def test_prepare_refuses_an_unknown_target_before_any_work(tmp_path):
    with pytest.raises(PrepError, match="unknown target 'jax'"):
        prepare(tmp_path / "archives", tmp_path / "ds", PrepareOptions(only="jax"),
                log=lambda *a: pytest.fail("logged before refusing"))
    assert not (tmp_path / "ds").exists()


def test_selection_follows_the_options():
    names = [s.name for s in stages.selected(PrepareOptions(only="tensorflow"))]
    assert names == ["verify", "bbox", "tfrecord", "report"]
    names = [s.name for s in stages.selected(
        PrepareOptions(only="all", wds=True, write_report=False))]
    assert names == ["verify", "extract", "valtree", "flatten", "synsets", "torchvision", "card",
                     "bbox", "tfrecord", "wds"]
    names = [s.name for s in stages.selected(PrepareOptions(only="tensorflow", parquet=True,
                                                            mds=True))]
    assert names == ["verify", "bbox", "tfrecord", "parquet", "mds", "report"]
    names = [s.name for s in stages.selected(PrepareOptions(only="tensorflow", tfds=True))]
    assert names == ["verify", "bbox", "tfrecord", "tfds", "report"]


def test_roles_read_are_what_each_target_downloads():
    assert stages.roles_used(PrepareOptions(only="pytorch")) == ROLES
    assert stages.roles_used(PrepareOptions(only="all", wds=True)) == ROLES
    assert stages.roles_used(PrepareOptions(only="tensorflow")) == tuple(
        r for r in ROLES if r != "test")
    assert stages.roles_used(PrepareOptions(only="tensorflow", wds=True)) == tuple(
        r for r in ROLES if r != "test")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_stage_renders_its_summary_line(name):
    result, seconds, line = EXAMPLES[name]
    assert stages.summary_line(name, result, seconds) == line


def test_summary_lines_of_a_whole_run():
    report = {"dataset": "/data", "only": "all", "seconds": 4.56, "plan": {}, "stages": {
        name: {"seconds": seconds, "result": result}
        for name, (result, seconds, _) in EXAMPLES.items() if name != "report"}}
    report["report"] = EXAMPLES["report"][0]
    assert summary_lines(report) == ["", "prepared /data (all) in 4.6 s",
                                     *(line for _, _, line in EXAMPLES.values())]
    with pytest.raises(PrepError, match="unknown stage 'nope'"):
        summary_lines({**report, "stages": {"nope": {"seconds": 0.0, "result": {}}}})


def test_no_boxes_is_noted_once_or_refused(tmp_path, small_replica, capsys):
    """Without box archive or CSV, `tfrecord` notes once that train records get no boxes;
    `prepare --only tensorflow`, whose outputs include the box CSV, refuses before any work."""
    arch = tmp_path / "archives"
    arch.mkdir()
    for name in (TRAIN, VAL, DEVKIT):
        shutil.copy(small_replica / name, arch / name)
    assert main(["tfrecord", str(tmp_path / "ds"), "--archives", str(arch), "--train-shards",
                 "2", "--val-shards", "1", "--workers", "1"]) == 0
    assert capsys.readouterr().err.count("train records get empty box lists") == 1
    assert main(["prepare", "--archives", str(arch), "--out", str(tmp_path / "ds2"), "--only",
                 "tensorflow", "--verify", "none", "--no-report"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"imagenet-prep: error: {arch / BBOX_TRAIN}: missing, and --only "
                   "tensorflow needs it"]
    assert not (tmp_path / "ds2" / "tfrecord_train").exists()


def test_top_level_help_imports_no_command_module_nor_heavy_library():
    code = ("import contextlib, io, json, sys\n"
            "from imagenet_prep.cli import main\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    try:\n"
            "        main(['--help'])\n"
            "    except SystemExit as e:\n"
            "        code = e.code\n"
            "print(json.dumps({'code': code, 'help': out.getvalue(),\n"
            "                  'modules': sorted(sys.modules)}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(proc.stdout)
    assert got["code"] == 0
    for name, help_line in COMMANDS.items():
        assert f"    {name:<9} {help_line.split()[0]}" in got["help"]
    loaded = set(got["modules"])
    assert not [m for m in HEAVY if m in loaded]
    assert not [m for m in loaded if m.startswith("imagenet_prep.cli.")]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_still_works(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: imagenet-prep {command} ")
    assert "options:" in out and "-h, --help" in out


def test_errors_stay_one_line(capsys):
    assert main(["report", "/nonexistent/dataset"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("imagenet-prep: error: ")
