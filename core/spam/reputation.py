"""Per-sender reputation learnt from the owner's moves, for the built-in filter.

A sender (the From address, lowercased) whose mail the owner moved into Junk
is ``JUNK``: its next mail goes to Junk. One whose mail was moved out of Junk
is ``TRUSTED``: its next mail is delivered whatever the other built-in checks
say (GTUBE excepted). The latest move wins. The reputation is the twin's, not
a recipient's: a twin is one person's server.

Bounded: at most ``max_entries`` senders, the least recently judged forgotten
first, in memory (a dict read on every inbound message, no database trip) and
in twin.db (table ``spam_reputation``, so it survives restarts).
"""

from __future__ import annotations

import sqlite3
import time

from core.db import Database

MIGRATIONS = [
    """
    CREATE TABLE spam_reputation (
        sender   TEXT PRIMARY KEY,
        verdict  INTEGER NOT NULL,
        updated  REAL NOT NULL
    );
    """,
]
JUNK, UNKNOWN, TRUSTED = -1, 0, 1
MAX_SENDER = 320  # RFC 5321 §4.5.3.1: 64 local part + @ + 255 domain


class Reputation:
    def __init__(self, db: Database, max_entries: int = 10_000) -> None:
        db.migrate("spam", MIGRATIONS)
        self._db, self.max_entries = db, max_entries
        rows = db.run_sync(lambda c: c.execute(
            "SELECT sender, verdict FROM spam_reputation ORDER BY updated DESC LIMIT ?",
            (max_entries,)).fetchall())
        self._known: dict[str, int] = {str(s): int(v) for s, v in reversed(rows)}

    def of(self, sender: str) -> int:
        return self._known.get(sender.lower(), UNKNOWN)

    def __len__(self) -> int:
        return len(self._known)

    async def judge(self, sender: str, verdict: int) -> None:
        sender = sender.lower()
        if not sender or len(sender) > MAX_SENDER or verdict not in (JUNK, TRUSTED):
            return
        self._known.pop(sender, None)
        self._known[sender] = verdict  # newest last: the dict's order is the age
        while len(self._known) > self.max_entries:
            del self._known[next(iter(self._known))]
        limit = self.max_entries

        def write(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO spam_reputation VALUES (?, ?, ?)",
                      (sender, verdict, time.time()))
            c.execute("DELETE FROM spam_reputation WHERE sender NOT IN (SELECT sender FROM "
                      "spam_reputation ORDER BY updated DESC LIMIT ?)", (limit,))
        await self._db.run(write)
