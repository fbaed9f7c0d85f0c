"""Replay guard and per-sender rate limit for received envelopes.

The guard remembers ``(sender, uid)`` of every envelope handled, with the ack
that was sent for it, in its own SQLite file (``peer-replay.db``) so that it
survives a restart. A uid seen again is refused as ``replay`` and the stored
ack goes back with the refusal: a sender whose first ack was lost learns that
its message arrived (exactly-once from the user's point of view), while an
attacker replaying captured bytes gains nothing (the ack is encrypted to the
real sender). Marks are kept well beyond the envelope's TTL
(``peer.dedup_keep``), because the outbox re-sends the same uid for days.

The file runs with ``synchronous = NORMAL`` (WAL): a mark survives a crash of
the process; after a power loss the last marks may be lost, which is why
handlers are also required to be idempotent by uid (see ``core.peer``).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from core.db import Database
from core.peer.errors import Refusal

log = logging.getLogger("twin.peer")
MAX_STORED_ACK = 64 * 1024

MIGRATIONS = [
    """
    CREATE TABLE seen (
        sender  TEXT NOT NULL,
        uid     BLOB NOT NULL,
        expires REAL NOT NULL,
        ack     BLOB,
        PRIMARY KEY (sender, uid)
    ) WITHOUT ROWID;
    CREATE INDEX seen_expires ON seen (expires);
    """,
]


class ReplayGuard:
    def __init__(self, path: Path) -> None:
        self.db = Database(path, synchronous="NORMAL")
        self.db.migrate("peer.replay", MIGRATIONS)
        self._inflight: set[tuple[str, bytes]] = set()

    async def claim(self, sender: str, uid: bytes) -> None:
        """Refuse a uid seen before or being handled right now; else hold it."""
        key = (sender, uid)
        if key in self._inflight:
            raise Refusal("replay", "envelope uid is being handled already")
        row = await self.db.run(_lookup, sender, uid, time.time())
        if key in self._inflight:  # claimed while we looked
            raise Refusal("replay", "envelope uid is being handled already")
        if row is not None:
            raise Refusal("replay", "envelope uid already seen", ack=row)
        self._inflight.add(key)

    async def done(self, sender: str, uid: bytes, keep_until: float, ack: bytes) -> None:
        """Mark the uid handled, remembering the ack for duplicates."""
        stored = ack if len(ack) <= MAX_STORED_ACK else None
        try:
            await self.db.run(_mark, sender, uid, keep_until, stored)
        finally:
            self._inflight.discard((sender, uid))

    def release(self, sender: str, uid: bytes) -> None:
        """The handler failed: the sender may try the same uid again."""
        self._inflight.discard((sender, uid))

    async def purge(self) -> int:
        return await self.db.run(_purge, time.time())

    def close(self) -> None:
        self.db.close()


def _lookup(conn: sqlite3.Connection, sender: str, uid: bytes, now: float) -> bytes | None:
    row = conn.execute("SELECT ack FROM seen WHERE sender = ? AND uid = ? AND expires > ?",
                       (sender, uid, now)).fetchone()
    if row is None:
        return None
    return bytes(row[0]) if row[0] is not None else b""


def _mark(conn: sqlite3.Connection, sender: str, uid: bytes, expires: float,
          ack: bytes | None) -> None:
    conn.execute("INSERT OR REPLACE INTO seen (sender, uid, expires, ack) VALUES (?, ?, ?, ?)",
                 (sender, uid, expires, ack))


def _purge(conn: sqlite3.Connection, now: float) -> int:
    return conn.execute("DELETE FROM seen WHERE expires <= ?", (now,)).rowcount


class RateLimit:
    """Token bucket per verified sender: ``per_minute`` envelopes, bursts up to that."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, sender: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(sender, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.refill)
        if tokens < 1.0:
            self._buckets[sender] = (tokens, now)
            raise Refusal("rate_limited", f"sender over {int(self.capacity)} envelopes/minute")
        self._buckets[sender] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:  # bounded: forget the idle ones
            self._buckets = {s: v for s, v in self._buckets.items() if now - v[1] < 60}
