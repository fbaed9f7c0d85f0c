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
