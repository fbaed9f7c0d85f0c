"""The outbox: envelopes waiting for the recipient's signed ack.

``enqueue`` commits the message to twin.db (WAL, ``synchronous = FULL``)
before it returns, so a message accepted by ``send`` survives a crash. What is
stored is the plaintext value, not envelope bytes: every attempt seals a
fresh envelope (new timestamp, same uid), because retries go on far longer
than one envelope's TTL. A row leaves the table only when a verified ack for
its uid arrived, or when it bounced.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import cbor2

from core.db import Database, Group, transaction
from core.peer.envelope import new_uid

MIGRATIONS = [
    """
    CREATE TABLE peer_outbox (
        uid        BLOB PRIMARY KEY,
        recipient  TEXT NOT NULL,
        kind       TEXT NOT NULL,
        value      BLOB NOT NULL,
        created    REAL NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        next_try   REAL NOT NULL,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX peer_outbox_due ON peer_outbox (next_try);
    """,
]


@dataclass(frozen=True)
class Pending:
    uid: bytes
    recipient: str
    kind: str
    value: Any
    created: float
    attempts: int
    next_try: float
    last_error: str
    size: int = 0  # bytes of the encoded value: what a bundle may hold is bounded by it

    def to_json(self) -> dict[str, Any]:
        return {"uid": self.uid.hex(), "to": self.recipient, "kind": self.kind,
                "created": self.created, "attempts": self.attempts,
                "next_try": self.next_try, "last_error": self.last_error}


def _row(r: tuple[Any, ...]) -> Pending:
    return Pending(bytes(r[0]), r[1], r[2], cbor2.loads(r[3]), r[4], r[5], r[6], r[7], len(r[3]))


class _Insert(NamedTuple):
    uid: bytes
    recipient: str
    kind: str
    blob: bytes
    created: float


class _Remove(NamedTuple):
    uid: bytes


class Outbox:
    """The table behind ``Peer.send``; inserts and removals are group-committed
    together (``core.db.Group``): one commit, one fsync, for every message queued
    or acked meanwhile. One group rather than one each because under load both
    run all the time: two groups took turns on the one database thread, so a
    250 waited for the removals' fsync and then for its own."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("peer.outbox", MIGRATIONS)
        self._write: Group[_Insert | _Remove, bool] = Group(db, _write_many, "peer-outbox")

    async def enqueue(self, recipient: str, kind: str, value: Any) -> bytes:
        return (await self.add(recipient, kind, value)).uid

    async def add(self, recipient: str, kind: str, value: Any) -> Pending:
        """``enqueue``, returning the committed row, so that the sender can hand it
        to the outbox worker as it is instead of the worker reading it back."""
        uid = new_uid()
        blob = cbor2.dumps(value, canonical=True)
        now = time.time()
        await self._write(_Insert(uid, recipient, kind, blob, now))
        return Pending(uid, recipient, kind, value, now, 0, now, "", len(blob))

    async def due(self, now: float, limit: int = 64,
                  skip: frozenset[bytes] = frozenset()) -> list[Pending]:
        """Up to ``limit`` rows due by ``now``, leaving out ``skip`` (those in flight)."""
        def run(c: sqlite3.Connection) -> list[Pending]:
            rows = c.execute(
                "SELECT uid, recipient, kind, value, created, attempts, next_try, last_error "
                "FROM peer_outbox WHERE next_try <= ? ORDER BY next_try LIMIT ?",
                (now, limit + len(skip)))
            return [_row(r) for r in rows if bytes(r[0]) not in skip][:limit]
        return await self.db.run(run)

    async def next_due(self, after: float | None = None) -> float | None:
        """The earliest ``next_try``, of all rows or (``after``) of those due later."""
        if after is None:
            return await self.db.run(lambda c: c.execute(
                "SELECT min(next_try) FROM peer_outbox").fetchone()[0])
        return await self.db.run(lambda c: c.execute(
            "SELECT min(next_try) FROM peer_outbox WHERE next_try > ?", (after,)).fetchone()[0])

    async def remove(self, uid: bytes) -> bool:
        """True if the row was there (and is now gone, durably)."""
        return await self._write(_Remove(uid))

    async def retry_later(self, uid: bytes, next_try: float, error: str) -> None:
        await self.db.run(lambda c: c.execute(
            "UPDATE peer_outbox SET attempts = attempts + 1, next_try = ?, last_error = ? "
            "WHERE uid = ?", (next_try, error[:500], uid)))

    async def list(self) -> list[Pending]:
        def run(conn: sqlite3.Connection) -> list[Pending]:
            return [_row(r) for r in conn.execute(
                "SELECT uid, recipient, kind, value, created, attempts, next_try, last_error "
                "FROM peer_outbox ORDER BY created")]
        return await self.db.run(run)


def _write_many(conn: sqlite3.Connection, items: list[_Insert | _Remove]) -> list[bool]:
    """Inserts and removals in the order they came, in one transaction."""
    out: list[bool] = []
    with transaction(conn):
        for item in items:
            if isinstance(item, _Insert):
                conn.execute("INSERT INTO peer_outbox (uid, recipient, kind, value, created, "
                             "next_try) VALUES (?, ?, ?, ?, ?, ?)", (*item, item.created))
                out.append(True)
            else:
                out.append(conn.execute("DELETE FROM peer_outbox WHERE uid = ?",
                                        (item.uid,)).rowcount == 1)
    return out


def backoff(schedule: list[float], attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failure; the last step repeats."""
    return float(schedule[min(max(attempts, 1), len(schedule)) - 1])
