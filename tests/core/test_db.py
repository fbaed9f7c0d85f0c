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
