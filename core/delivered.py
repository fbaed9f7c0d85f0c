"""Which recipients already have a message whose delivery partly failed.

SMTP has one reply per message after DATA (RFC 5321 §4.1.1.4), not one per
recipient. When one branch of a message fails (a full mailbox, the peer
outbox or the legacy spool unavailable) after others succeeded, the twin must
answer 4xx and the client retries the *whole* message (§4.5.4.1), which
would give the recipients that already have it a second copy.

So, only in that case, the router records (message key, recipient) for the
branches that succeeded, durably and before the 4xx goes out; the retry
(same sender, same bytes: the same key) skips them. Nothing is written on the
happy path, so this costs no throughput. Entries expire after
``REMEMBER_SECONDS`` (clients give up after 4-5 days, §4.5.4.1) and at most
``MAX_ENTRIES`` are kept (oldest dropped), so memory and disk stay bounded.
All unexpired entries live in memory too: the check per message is a dict
lookup, not a database round trip.

Limit: a crash between the successful branches and this record, or a client
that changes the bytes on retry, can still duplicate (SMTP is at-least-once).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Iterable

from core.db import Database, transaction

log = logging.getLogger("twin.routing")
REMEMBER_SECONDS = 5 * 86400.0
MAX_ENTRIES = 50_000
MIGRATIONS = [
    """
    CREATE TABLE routing_delivered (
        key   BLOB NOT NULL,
        rcpt  TEXT NOT NULL,
        at    REAL NOT NULL,
        PRIMARY KEY (key, rcpt)
    ) WITHOUT ROWID;
    CREATE INDEX routing_delivered_at ON routing_delivered(at);
    """,
]


def message_key(mail_from: str, raw: bytes) -> bytes:
    """The identity of a message as the client sends it (before we add any header)."""
    h = hashlib.blake2b(digest_size=20, person=b"twin-delivered")
    h.update(mail_from.strip().lower().encode("utf-8", "replace") + b"\0")
    h.update(raw)
    return h.digest()


class DeliveredLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("routing", MIGRATIONS)
        self._seen: dict[bytes, tuple[set[str], float]] = {}
        cutoff = time.time() - REMEMBER_SECONDS

        def load(c: sqlite3.Connection) -> list[tuple[bytes, str, float]]:
            with transaction(c):
                c.execute("DELETE FROM routing_delivered WHERE at < ?", (cutoff,))
            return c.execute("SELECT key, rcpt, at FROM routing_delivered ORDER BY at "
                             "LIMIT ?", (MAX_ENTRIES,)).fetchall()
        for key, rcpt, at in db.run_sync(load):
            self._seen.setdefault(bytes(key), (set(), at))[0].add(rcpt)

    def remembers_any(self) -> bool:
        """Whether any entry is kept (usually not: then no key need be computed)."""
        return bool(self._seen)

    def already(self, key: bytes) -> frozenset[str]:
        """Recipients (lowercased) that have the message with this key already."""
        hit = self._seen.get(key)
        if hit is None:
            return frozenset()
        if hit[1] < time.time() - REMEMBER_SECONDS:
            del self._seen[key]
            return frozenset()
        return frozenset(hit[0])

    async def remember(self, key: bytes, rcpts: Iterable[str]) -> None:
        """Record durably that these recipients have the message (before the 4xx)."""
        now = time.time()
        new = [r.strip().lower() for r in rcpts]
        if not new:
            return
        entry = self._seen.setdefault(key, (set(), now))
        entry[0].update(new)
        while len(self._seen) > MAX_ENTRIES:
            del self._seen[next(iter(self._seen))]  # dicts keep insertion order: oldest

        def insert(c: sqlite3.Connection) -> None:
            with transaction(c):
                c.executemany("INSERT OR IGNORE INTO routing_delivered VALUES (?, ?, ?)",
                              [(key, r, now) for r in new])
                c.execute("DELETE FROM routing_delivered WHERE at < ?",
                          (now - REMEMBER_SECONDS,))
                c.execute("DELETE FROM routing_delivered WHERE key IN (SELECT key FROM "
                          "routing_delivered ORDER BY at DESC LIMIT -1 OFFSET ?)",
                          (MAX_ENTRIES,))
        await self.db.run(insert)
        log.info("delivery partly failed: %d recipient(s) remembered as done", len(new))
