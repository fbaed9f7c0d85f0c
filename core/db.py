"""The twin's metadata database: SQLite in WAL mode behind one worker thread.

SQLite connections are tied to a thread and SQLite serialises writers anyway,
so each database gets one dedicated thread and every call is ``await
db.run(fn, ...)``: the event loop never blocks on disk, and there is no lock
juggling. Connections are in autocommit mode (``isolation_level=None``), so
``with conn:`` does *not* open a transaction; callers that need several
statements atomically pass one function that does them inside
``with transaction(conn):``.

Writes that arrive concurrently from many callers (the peer tables) go
through ``Group``: one call on the database thread, one commit, for all of
them. It is an adapter over ``storage.groupcommit``, the twin's one group
commit (core may import storage; storage never imports core).

Each part of core owns its tables and creates them with ``migrate``: a list of
SQL scripts applied in order once, tracked in ``schema_versions`` per part.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, TypeVar

from storage.groupcommit import GroupCommit

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")
MAX_GROUP = 256


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error; joins an open transaction."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def columns(rows: Sequence[Sequence[Any]], count: int) -> list[list[Any]]:
    """The first ``count`` columns of fetched rows, each as a list.

    Why not ``zip(*rows)``: that makes an iterator object per row, and for the
    100,000 rows of a large mailbox those were enough new objects to run the
    cyclic collector ~140 times per read."""
    return [list(map(operator.itemgetter(i), rows)) for i in range(count)]


def _on_thread(fn: Callable[..., T], conn: sqlite3.Connection, *args: Any) -> T:
    """``fn(conn, *args)`` on the database's thread; a cursor it returns is closed here.

    Why: ``lambda c: c.execute(...)`` returns its cursor, and a cursor dropped on
    the event loop's thread is finalised there, resetting its statement while
    this thread may be using the connection (SQLITE_MISUSE, "bad parameter or
    other API misuse"). Nothing reads a cursor returned this way."""
    result = fn(conn, *args)
    if isinstance(result, sqlite3.Cursor):
        result.close()
        return None  # type: ignore[return-value]
    return result


class Database:
    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"db-{self.path.stem}")
        self.conn = self._pool.submit(connect, self.path, synchronous=synchronous).result()
        self.run_sync(lambda c: c.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (part TEXT PRIMARY KEY, version INTEGER)"))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _on_thread, fn, self.conn, *args)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """For CLI commands and start-up, outside any event loop."""
        return self._pool.submit(_on_thread, fn, self.conn, *args).result()

    def migrate(self, part: str, scripts: Sequence[str]) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT version FROM schema_versions WHERE part = ?",
                               (part,)).fetchone()
            done = row[0] if row else 0
            for version, script in enumerate(scripts[done:], start=done + 1):
                conn.executescript("BEGIN;" + script + ";COMMIT;")
                conn.execute("INSERT OR REPLACE INTO schema_versions VALUES (?, ?)",
                             (part, version))
        self.run_sync(apply)

    def close(self) -> None:
        try:
            self._pool.submit(self.conn.close).result()
        finally:
            self._pool.shutdown(wait=True)


class Group(Generic[In, Out]):
    """Group commit: calls that arrive while the database thread is busy go as one call.

    ``fn(conn, items)`` handles a list of items (in one transaction, when it
    writes) and returns one result per item. Alone, a call waits for nothing;
    under load dozens share one thread hop and one commit (with ``synchronous
    = FULL``, one fsync), which is what lets the peer outbox take and retire
    a thousand messages a second. Every caller still returns only once its
    own item is committed.

    A thin adapter: the batching is ``storage.groupcommit.GroupCommit`` (the
    twin's one group commit), here run through ``Database.run`` on the
    database's thread, at most ``MAX_GROUP`` items a call, a cancelled caller's
    wait not shielded."""

    def __init__(self, db: Database, fn: Callable[[sqlite3.Connection, list[In]], list[Out]],
                 name: str = "db-group") -> None:
        self.db, self.fn, self.name = db, fn, name
        self._commit: GroupCommit[In, Out] = GroupCommit(
            self._run, max_items=MAX_GROUP, shield=False, name=name)

    async def __call__(self, item: In) -> Out:
        return await self._commit.submit(item)

    async def _run(self, items: list[In]) -> list[Out]:
        return await self.db.run(self.fn, items)
