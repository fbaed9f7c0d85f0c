"""Group commit of metadata writes on the database thread.

Every delivery must be durable before its caller answers (SMTP 250, peer ack),
and with ``synchronous=FULL`` each SQLite transaction costs one fsync. Queuing
concurrent writes and applying everything queued so far in ONE transaction
makes throughput grow with concurrency instead of being capped by the disk's
fsync rate; each caller still waits for the commit that contains its write.

The queueing is not here: it is ``storage.groupcommit.GroupCommit``, the
twin's one group commit. This module adds what mail needs on top: ``_apply``
runs a batch of ops so that a failing op is undone alone while the others
commit, and ``GroupCommit.submit`` raises that op's error in its own caller.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from core.db import Database
from storage import groupcommit

R = TypeVar("R")
Op = Callable[[sqlite3.Connection], Any]
Outcome = tuple[bool, Any]  # (True, op's result) or (False, the exception it raised)


class GroupCommit(Generic[R]):
    """Per-op results over the one batching class (``storage.groupcommit``).

    What is particular to mail is only how a batch runs: ``_apply`` on the
    database's thread, where a failing op is undone alone. Each op's outcome
    comes back as a value and ``submit`` raises a failure in its own caller."""

    def __init__(self, db: Database, max_items: int = 1000) -> None:
        self._db = db
        self._batches: groupcommit.GroupCommit[Op, Outcome] = groupcommit.GroupCommit(
            self._run, max_items=max_items)

    async def submit(self, op: Op) -> Any:
        """Run ``op(conn)`` inside a shared transaction; its result once committed.

        ``op`` may run twice (replayed when another op of its batch fails, see
        ``_apply``): it must change nothing but the database."""
        ok, value = await self._batches.submit(op)
        if not ok:
            raise value
        return value

    async def drain(self) -> None:
        """Wait until every op submitted so far has been committed (or failed)."""
        await self._batches.drain()

    async def _run(self, ops: list[Op]) -> list[Outcome]:
        return await self._db.run(_apply, ops)


def _apply(conn: sqlite3.Connection, ops: list[Op]) -> list[Outcome]:
    """One transaction; a failing op is rolled back alone, the rest commit.

    Every op is first run plainly; only if one fails is the batch rolled back
    and replayed with a savepoint around each op. Why: three extra statements
    per op (SAVEPOINT, RELEASE) doubled a delivery batch's statements, and each
    statement gives up and takes back the GIL the event loop is using."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            out: list[Outcome] = [(True, op(conn)) for op in ops]
        except Exception:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            out = [_isolated(conn, op) for op in ops]
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        err = exc if isinstance(exc, Exception) else RuntimeError("commit cancelled")
        return [(False, err) for _ in ops]
    return out


def _isolated(conn: sqlite3.Connection, op: Op) -> Outcome:
    conn.execute("SAVEPOINT op")
    try:
        result = (True, op(conn))
    except Exception as exc:
        conn.execute("ROLLBACK TO op")
        result = (False, exc)
    conn.execute("RELEASE op")
    return result
