"""Replay guard and per-sender rate limit for received envelopes.

The guard remembers ``(sender, uid)`` of every envelope handled, with the ack
that was sent for it, in its own SQLite file (``peer-replay.db``) so that it
survives a restart. A uid seen again is refused as ``replay`` and the stored
ack goes back with the refusal: a sender whose first ack was lost learns that
its message arrived (exactly-once from the user's point of view), while an
attacker replaying captured bytes gains nothing (the ack is encrypted to the
real sender). Marks are kept well beyond the envelope's TTL
(``peer.dedup_keep``), because the outbox re-sends the same uid for days.

The store is bounded, because a sender chooses what it holds (#15, #23):
the receiver refuses a ttl over ``peer.max_ttl`` (so ``expires`` is at most a
day or so ahead), stores an ack only up to ``peer.max_stored_ack`` bytes and
up to ``peer.replay_ack_budget`` bytes of acks per sender (beyond, the uid
is marked without its ack: a duplicate is still refused, only the copy of
the ack is missing), and keeps at most ``peer.replay_per_sender`` marks per
sender: past that, the sender's oldest marks whose envelope could no longer
be accepted anyway (``replay_until`` passed: they only serve the outbox's
late re-sends) are evicted, and if none can be, the sender is refused as
``rate_limited`` until its marks age. Expired marks are purged every
``PURGE_EVERY`` seconds.

The file runs with ``synchronous = NORMAL`` (WAL): a mark survives a crash of
the process; after a power loss the last marks may be lost, which is why
handlers are also required to be idempotent by uid (see ``core.peer``).

Lookups and marks are grouped (``core.db.Group``): the ones that arrive while the
database thread is busy go together in its next call, marks in one
transaction. Under load that is one thread hop and one commit for dozens of
envelopes instead of two each; alone, an envelope waits for nothing. Lookups
and marks share the one group: under load both are always waiting (a
bundle's items are looked up while the one before is being marked), and two
groups took turns on the database thread, two hops where one does; they were
a third of the receiving twin's thread hops at the messaging bench's maximum.

The rate limit is kept in memory only: it resets when the twin restarts. It
exists to stop a peer from flooding a running twin; a restart costs an abuser
more time than the minute of budget it gets back.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from core.db import Database, Group, transaction
from core.peer.errors import Refusal

log = logging.getLogger("twin.peer")
PURGE_EVERY = 600.0  # seconds between purges of expired marks (the outbox worker runs it)

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
    # until when the envelope itself could still be accepted (a replay must be
    # refused); after that the mark only serves the outbox's re-sends
    """
    ALTER TABLE seen ADD COLUMN replay_until REAL NOT NULL DEFAULT 0;
    CREATE INDEX seen_sender_expires ON seen (sender, expires);
    """,
]


@dataclass(frozen=True)
class Bounds:
    """How much one sender may make this twin remember (see module docstring)."""

    max_ack: int = 4096
    ack_budget: int = 16 * 1024 * 1024
    per_sender: int = 200_000


@dataclass
class _Usage:
    rows: int = 0
    ack_bytes: int = 0


class ReplayGuard:
    def __init__(self, path: Path, bounds: Bounds | None = None) -> None:
        self.db = Database(path, synchronous="NORMAL")
        self.db.migrate("peer.replay", MIGRATIONS)
        self.bounds = bounds or Bounds()
        self._inflight: set[tuple[str, bytes]] = set()
        self._io: Group[_Lookup | _Mark, bytes | None] = Group(self.db, _run_many,
                                                               "peer-replay")
        self._usage: dict[str, _Usage] = self.db.run_sync(_usage_all)

    async def claim(self, sender: str, uid: bytes) -> None:
        """Refuse a uid seen before or being handled right now; else hold it."""
        key = (sender, uid)
        if key in self._inflight:
            raise Refusal("replay", "envelope uid is being handled already")
        row = await self._io(_Lookup(sender, uid, time.time()))
        if key in self._inflight:  # claimed while we looked
            raise Refusal("replay", "envelope uid is being handled already")
        if row is not None:
            raise Refusal("replay", "envelope uid already seen", ack=row)
        if self.usage(sender).rows >= self.bounds.per_sender:
            await self._trim(sender)
            if self.usage(sender).rows >= self.bounds.per_sender:
                raise Refusal("rate_limited",
                              f"{self.bounds.per_sender} recent envelopes of this sender are "
                              "remembered already; try again later")
        self._inflight.add(key)

    def usage(self, sender: str) -> _Usage:
        return self._usage.setdefault(sender, _Usage())

    async def done(self, sender: str, uid: bytes, keep_until: float, ack: bytes,
                   replay_until: float | None = None) -> None:
        """Mark the uid handled, remembering the ack for duplicates (within bounds).

        ``replay_until``: until when the envelope could still be accepted
        (its expiry plus the skew); the mark is never evicted before."""
        usage = self.usage(sender)
        stored: bytes | None = None
        if len(ack) <= self.bounds.max_ack \
                and usage.ack_bytes + len(ack) <= self.bounds.ack_budget:
            stored = ack
            usage.ack_bytes += len(ack)
        usage.rows += 1
        hard = keep_until if replay_until is None else replay_until
        try:
            await self._io(_Mark(sender, uid, keep_until, stored, hard))
        finally:
            self._inflight.discard((sender, uid))

    def release(self, sender: str, uid: bytes) -> None:
        """The handler failed: the sender may try the same uid again."""
        self._inflight.discard((sender, uid))

    async def _trim(self, sender: str) -> None:
        """Evict this sender's oldest marks that no longer guard against a replay."""
        excess = self.usage(sender).rows - self.bounds.per_sender * 9 // 10
        self._usage[sender] = await self.db.run(_trim, sender, time.time(), max(excess, 1))
        log.info("replay store: trimmed %s to %d marks", sender, self._usage[sender].rows)

    async def purge(self) -> int:
        gone = await self.db.run(_purge, time.time())
        self._usage = await self.db.run(_usage_all)
        return gone

    def close(self) -> None:
        self.db.close()


class _Lookup(NamedTuple):
    sender: str
    uid: bytes
    now: float


class _Mark(NamedTuple):
    sender: str
    uid: bytes
    expires: float
    ack: bytes | None
    replay_until: float


def _run_many(conn: sqlite3.Connection, ops: list[_Lookup | _Mark]) -> list[bytes | None]:
    """Marks (in one transaction), then lookups: each lookup's stored ack (b"" if none
    was kept) or None, each mark None.

    Marks first, so a lookup never misses a mark of its own batch (none should meet:
    a uid is marked while it is claimed, and a claimed uid is refused before its
    lookup)."""
    marks = [op for op in ops if isinstance(op, _Mark)]
    if marks:
        _mark_many(conn, marks)
    out: list[bytes | None] = []
    for op in ops:
        if isinstance(op, _Mark):
            out.append(None)
            continue
        row = conn.execute("SELECT ack FROM seen WHERE sender = ? AND uid = ? AND expires > ?",
                           op).fetchone()
        out.append(None if row is None else bytes(row[0]) if row[0] is not None else b"")
    return out


def _mark_many(conn: sqlite3.Connection, marks: list[_Mark]) -> None:
    # one transaction, one commit (the connection is in autocommit mode)
    conn.execute("BEGIN")
    try:
        conn.executemany(
            "INSERT OR REPLACE INTO seen (sender, uid, expires, ack, replay_until) "
            "VALUES (?, ?, ?, ?, ?)", marks)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _purge(conn: sqlite3.Connection, now: float) -> int:
    return conn.execute("DELETE FROM seen WHERE expires <= ?", (now,)).rowcount


def _usage_all(conn: sqlite3.Connection) -> dict[str, _Usage]:
    rows = conn.execute("SELECT sender, COUNT(*), COALESCE(SUM(LENGTH(ack)), 0) FROM seen "
                        "GROUP BY sender")
    return {sender: _Usage(n, size) for sender, n, size in rows}


def _trim(conn: sqlite3.Connection, sender: str, now: float, excess: int) -> _Usage:
    with transaction(conn):
        conn.execute(
            "DELETE FROM seen WHERE sender = ? AND uid IN (SELECT uid FROM seen "
            "WHERE sender = ? AND replay_until <= ? ORDER BY expires LIMIT ?)",
            (sender, sender, now, excess))
        n, size = conn.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(ack)), 0) FROM seen "
                               "WHERE sender = ?", (sender,)).fetchone()
    return _Usage(n, size)


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
