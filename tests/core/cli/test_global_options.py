"""The global options: ``--version``, and ``--data``/``--set``/``--log-level``
accepted after the command as well as before it."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import cli


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"twin {cli.version()}"
    assert cli.version()[0].isdigit()


def test_global_options_after_the_command_are_moved_in_front() -> None:
    assert cli.hoist_global_options(
        ["config", "show", "--data", "/srv/t", "--set=imap.port=1", "--log-level", "debug"]
    ) == ["--data", "/srv/t", "--set=imap.port=1", "--log-level", "debug", "config", "show"]
    # after "--" everything is the command's own
    assert cli.hoist_global_options(["mail", "send", "--", "--data", "x"]) == [
        "mail", "send", "--", "--data", "x"]


def test_data_after_the_command_is_the_data_dir_used(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    assert cli.main(["config", "show", "--data", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
