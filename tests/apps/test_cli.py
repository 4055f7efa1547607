"""The `alscout` entry point: every registered command loads, errors end in one line."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from alscout.apps import cli
from alscout.errors import AlscoutError, DataError, InvalidInputError


def test_every_registered_command_builds_its_parser():
    help_text = cli.build_parser().format_help()
    for name in cli.COMMANDS:
        assert name in help_text
        parser = cli.build_parser(name)
        (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert commands.choices[name].get_default("_module") is not None, name


def test_help_imports_no_command_module():
    code = (
        "import sys; from alscout.apps import cli; cli.build_parser().format_help();"
        "loaded = [m for n in cli.COMMANDS.values() for m in [n[0]] if m in sys.modules];"
        "assert not loaded, loaded; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert "alscout" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_alscout_errors_end_in_one_line_and_status_2(monkeypatch, capsys):
    class FailingCommand:
        @staticmethod
        def configure(parser):
            parser.add_argument("--path", default="x.json")

        @staticmethod
        def run(args):
            raise DataError(f"{args.path}: empty annotation file")

    monkeypatch.setitem(cli.COMMANDS, "fail", ("failing", "fails"))
    monkeypatch.setitem(sys.modules, "failing", FailingCommand)
    assert cli.main(["fail"]) == 2
    err = capsys.readouterr().err
    assert err == "alscout fail: x.json: empty annotation file\n"


def test_error_hierarchy_keeps_value_error_for_bad_input():
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(InvalidInputError, AlscoutError)


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "alscout.apps.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "COMMAND" in result.stdout
