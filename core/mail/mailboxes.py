"""Mailbox rows on a connection (inside a ``GroupCommit`` transaction or a read).

Reading one (``get_mailbox``), adding one with its never-repeating
UIDVALIDITY (``add_mailbox``), and the per-mailbox modseq every change takes
(``bump_modseq``). ``MailStore`` composes these into create, delete, rename
and subscribe; the tables are ``core.mail.schema``'s.
"""

from __future__ import annotations

import sqlite3
import time

from core.errors import NotFound, Unavailable
from core.mail.model import Mailbox

MB_COLS = "id, login, name, uidvalidity, uidnext, modseq, special, subscribed"
# a mail_mailboxes row as ``SELECT {MB_COLS}`` reads it
MailboxRow = tuple[int, str, str, int, int, int, str | None, int]


def to_mailbox(row: MailboxRow) -> Mailbox:
    return Mailbox(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))


def get_mailbox(c: sqlite3.Connection, login: str, name: str) -> Mailbox:
    row = c.execute(f"SELECT {MB_COLS} FROM mail_mailboxes WHERE login = ? AND name = ?",  # noqa: S608
                    (login, name)).fetchone()
    if row is None:
        raise NotFound(f"no mailbox {name}")
    return to_mailbox(row)


def new_uidvalidity(c: sqlite3.Connection) -> int:
    """The next UIDVALIDITY: above every one issued before, on this twin, for any name."""
    row = c.execute("UPDATE mail_uidvalidity SET last = MAX(last + 1, ?) WHERE id = 0 "
                    "RETURNING last", (int(time.time()),)).fetchone()
    value = int(row[0])
    if value > 0xFFFFFFFF:
        raise Unavailable("UIDVALIDITY space exhausted")
    return value


def add_mailbox(c: sqlite3.Connection, login: str, name: str, special: str | None) -> None:
    c.execute("INSERT INTO mail_mailboxes (login, name, uidvalidity, special) VALUES (?, ?, ?, ?)",
              (login, name, new_uidvalidity(c), special))


def bump_modseq(c: sqlite3.Connection, mailbox_id: int) -> int:
    """Next modseq of a mailbox (every change has its own)."""
    row = c.execute("UPDATE mail_mailboxes SET modseq = modseq + 1 WHERE id = ? RETURNING modseq",
                    (mailbox_id,)).fetchone()
    if row is None:
        raise NotFound("mailbox was deleted")
    return int(row[0])


def like_prefix(prefix: str) -> str:
    return prefix.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
