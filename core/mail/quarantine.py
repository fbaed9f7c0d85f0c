"""The quarantine: journaled deliveries that could not be filed, set aside.

Why: the filer (``core.mail.intake``) files the journal in order, and a
message that fails to file every time would otherwise be retried forever
with every later message waiting behind it, across restarts (the journal
replays it), until SMTP answers 451 to everyone. So a message that cannot be
filed is stored whole in the dispersed store (encrypted like any message,
never packed with others) and recorded here in the same transaction that
moves the journal's "filed up to" mark past it: it survives a restart and is
never replayed. The owner lists, retries or deletes it with
``twin mail quarantine list|retry ID|rm ID`` (``MailStore.retry_quarantined``
files it into the Inbox once whatever failed is fixed).

These are the SQL helpers on the ``mail_quarantine`` table (its migration is
with the mail store's); ``MailStore`` runs them in its transactions.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import Any

from core import logsafe
from core.errors import NotFound


@dataclass(frozen=True)
class Quarantined:
    """One delivery set aside: for whom, its stored bytes, when, and why."""

    id: int
    login: str
    ref: str
    size: int
    received: float
    at: float
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def printable(text: str, limit: int = 300) -> str:
    """``text`` safe for one log or terminal line: control characters escaped, bounded."""
    return logsafe.printable(text, limit)


def insert(c: sqlite3.Connection, login: str, ref: str, size: int, received: float,
           reason: str) -> int:
    row = c.execute("INSERT INTO mail_quarantine (login, ref, size, received, at, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    (login, ref, size, received, time.time(), reason)).fetchone()
    return int(row[0])


_COLS = "id, login, ref, size, received, at, reason"


def listed(c: sqlite3.Connection) -> list[Quarantined]:
    return [Quarantined(*r) for r in c.execute(
        f"SELECT {_COLS} FROM mail_quarantine ORDER BY id")]  # noqa: S608


def get(c: sqlite3.Connection, qid: int) -> Quarantined:
    row = c.execute(f"SELECT {_COLS} FROM mail_quarantine WHERE id = ?",  # noqa: S608
                    (qid,)).fetchone()
    if row is None:
        raise NotFound(f"no quarantined message #{qid}")
    return Quarantined(*row)


def delete(c: sqlite3.Connection, qid: int) -> None:
    c.execute("DELETE FROM mail_quarantine WHERE id = ?", (qid,))
