"""core.db: every call on the database's one thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from core.db import Database


async def test_a_returned_cursor_is_closed_on_the_database_thread(tmp_path: Path) -> None:
    """A cursor finalised on the loop's thread raced the database thread on the
    connection (SQLITE_MISUSE under imaptest's stress run): it never gets there."""
    db = Database(tmp_path / "t.db")
    try:
        seen: list[sqlite3.Cursor] = []

        def insert(c: sqlite3.Connection) -> sqlite3.Cursor:
            seen.append(c.execute("CREATE TABLE t (x)"))
            return seen[-1]
        assert await db.run(insert) is None
        with_rows = await db.run(lambda c: c.execute("SELECT 1").fetchall())
        assert with_rows == [(1,)]  # other results pass through
        threads: set[int] = set()
        await asyncio.gather(*(db.run(lambda c, i=i: (threads.add(threading.get_ident()),
                                                      c.execute("INSERT INTO t VALUES (?)",
                                                                (i,)))[1])
                               for i in range(50)))
        assert len(threads) == 1 and threading.get_ident() not in threads
        assert await db.run(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 50
        with pytest.raises(sqlite3.ProgrammingError):  # closed on the database thread
            seen[0].fetchall()
    finally:
        db.close()


async def test_reads_do_not_wait_behind_a_commit_and_go_together(tmp_path: Path) -> None:
    """``Database.read``: the WebDAV PUT fast path's login and target lookups ran on the
    database's one thread behind other PUTs' commits (and their syncs); they run on a
    read-only connection of their own, several in one call (issue 20)."""
    db = Database(tmp_path / "t.db")
    try:
        await db.run(lambda c: c.execute("CREATE TABLE t (x)"))
        await db.run(lambda c: c.execute("INSERT INTO t VALUES (1)"))
        busy, release = threading.Event(), threading.Event()

        def long_commit(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO t VALUES (2)")
            busy.set()
            release.wait(10)
            c.execute("COMMIT")
        writing = asyncio.ensure_future(db.run(long_commit))
        await asyncio.to_thread(busy.wait, 10)
        threads: set[int] = set()

        def count(c: sqlite3.Connection) -> int:
            threads.add(threading.get_ident())
            return int(c.execute("SELECT count(*) FROM t").fetchone()[0])
        # the writer's thread is held inside its transaction: reads go on meanwhile
        # and see the last commit
        assert await asyncio.wait_for(asyncio.gather(*(db.read(count) for _ in range(20))),
                                      5) == [1] * 20
        assert len(threads) == 1
        with pytest.raises(sqlite3.OperationalError):  # read-only, and errors stay its own
            await db.read(lambda c: c.execute("INSERT INTO t VALUES (3)"))
        release.set()
        await writing
        assert await db.read(count) == 2
    finally:
        db.close()
