"""The peer inbox: native messages other twins sent this one (``twin inbox``).

Storing is idempotent by ``(sender, uid)``: a message re-delivered after a
crash (ours between storing and marking the uid seen, or the sender's before
it got our ack) is stored once. Bounce notes for messages this twin could not
deliver land here too, from the sender ``-`` (this twin itself).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from core.db import Database, Group, transaction
from core.errors import Invalid

MAX_TEXT = 64 * 1024
MIGRATIONS = [
    """
    CREATE TABLE peer_inbox (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        sender   TEXT NOT NULL,
        uid      BLOB NOT NULL,
        received REAL NOT NULL,
        text     TEXT NOT NULL,
        bounce   INTEGER NOT NULL DEFAULT 0,
        UNIQUE (sender, uid)
    );
    """,
]


@dataclass(frozen=True)
class Message:
    seq: int
    sender: str
    uid: bytes
    received: float
    text: str
    bounce: bool

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "from": self.sender, "uid": self.uid.hex(),
                "received": self.received, "text": self.text, "bounce": self.bounce}


class Inbox:
    """Stores are group-committed (``core.db.Group``): messages arriving together
    share one commit, each caller still answered only once its row is durable."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("peer.inbox", MIGRATIONS)
        self._store = Group(db, _store_many, "peer-inbox-store")

    async def store(self, sender: str, uid: bytes, text: str, *, bounce: bool = False) -> bool:
        """True if new; a duplicate (same sender and uid) is ignored."""
        if not isinstance(text, str) or len(text) > MAX_TEXT:
            raise Invalid(f"a message is text of at most {MAX_TEXT} characters")
        return await self._store((sender, uid, time.time(), text, int(bounce)))

    async def list(self, limit: int = 100) -> list[Message]:
        def run(conn: sqlite3.Connection) -> list[Message]:
            rows = conn.execute("SELECT seq, sender, uid, received, text, bounce FROM peer_inbox "
                                "ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
            return [Message(s, f, bytes(u), r, t, bool(b)) for s, f, u, r, t, b in reversed(rows)]
        return await self.db.run(run)


def _store_many(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[bool]:
    with transaction(conn):
        return [conn.execute("INSERT OR IGNORE INTO peer_inbox (sender, uid, received, text, "
                             "bounce) VALUES (?, ?, ?, ?, ?)", row).rowcount == 1
                for row in rows]
