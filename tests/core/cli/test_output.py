"""What commands print for people: dates not epochs, empty lists that say so,
and no log chatter between a command's lines (#21 item 9)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from tests.twins import twin_cli


def test_resolve_shows_a_date_and_no_info_log_lines(tmp_path: Path) -> None:
    data = tmp_path / "alice"
    twin_cli(data, "init", "--name", "alice", "--json")
    shown = twin_cli(data, "phonebook", "resolve", "alice")
    [line] = [x for x in shown.stdout.splitlines() if x.startswith("valid_until")]
    assert re.fullmatch(r"valid_until +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", line), line
    # the first resolve pins alice's key: logged at info, which a command keeps quiet
    assert "INFO" not in shown.stderr, shown.stderr


def test_an_empty_phonebook_says_so(tmp_path: Path) -> None:
    data = tmp_path / "alice"
    twin_cli(data, "init", "--name", "alice", "--json")
    with sqlite3.connect(data / "phonebook.db") as db:
        db.execute("DELETE FROM twins")
    listed = twin_cli(data, "phonebook", "list")
    assert "the phonebook holds no twins yet" in listed.stdout


def test_storage_get_refuses_to_write_bytes_to_a_terminal(tmp_path: Path) -> None:
    import os
    import pty
    import subprocess

    from tests.twins import TWIN

    data = tmp_path / "alice"
    twin_cli(data, "init", "--name", "alice", "--json")
    source = tmp_path / "blob.bin"
    source.write_bytes(bytes(range(256)) * 64)
    ref = twin_cli(data, "storage", "put", str(source)).stdout.split()[-1]
    assert twin_cli(data, "storage", "get", ref, "-o", str(tmp_path / "out.bin")).returncode == 0
    assert (tmp_path / "out.bin").read_bytes() == source.read_bytes()
    piped = subprocess.run([*TWIN, "--data", str(data), "storage", "get", ref],
                           capture_output=True, timeout=120)
    assert piped.returncode == 0 and piped.stdout == source.read_bytes()
    master, slave = pty.openpty()
    try:
        on_tty = subprocess.run([*TWIN, "--data", str(data), "storage", "get", ref],
                                stdout=slave, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    assert on_tty.returncode == 2
    assert b"refusing to write the file's bytes to a terminal" in on_tty.stderr


def test_every_argument_of_every_command_has_a_help_line() -> None:
    import argparse

    from core.cli import parser

    missing = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(parser(), "twin")
    assert not missing, f"arguments without a help line: {missing}"
