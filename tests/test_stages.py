"""The lazy command line (issue 14, item 3): `imagenet-prep --help` imports no command
module and none of the heavy libraries; each command's help is as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from imagenet_prep.cli import COMMANDS, main

HEAVY = ("numpy", "PIL", "scipy", "requests", "google_crc32c")


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
