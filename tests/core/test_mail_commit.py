"""Group commit of mail metadata writes (core.mail.commit)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.db import Database
from core.mail.commit import GroupCommit


def _rows(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A database with one table of unique values."""
    database = Database(tmp_path / "t.db")
    database.run_sync(lambda c: c.execute("CREATE TABLE t (v TEXT UNIQUE)"))
    yield database
    database.close()


async def test_concurrent_writes_share_one_transaction_and_each_gets_its_result(
        db: Database) -> None:
    commits = GroupCommit[int](db)

    def insert(value: str) -> object:
        return lambda c: c.execute("INSERT INTO t VALUES (?)", (value,)).lastrowid

    got = await asyncio.gather(*(commits.submit(insert(f"v{i}")) for i in range(50)))
    assert sorted(got) == list(range(1, 51))
    assert await db.run(_rows) == sorted(f"v{i}" for i in range(50))


async def test_a_failing_write_is_undone_alone_and_its_neighbours_commit(
        db: Database) -> None:
    commits = GroupCommit[None](db)

    def good(value: str) -> object:
        return lambda c: c.execute("INSERT INTO t VALUES (?)", (value,))

    def bad(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES ('half-done')")  # written, then the op fails
        raise ValueError("no such mailbox")

    results = await asyncio.gather(commits.submit(good("a")), commits.submit(bad),
                                   commits.submit(good("b")), commits.submit(good("a")),
                                   return_exceptions=True)
    assert results[0] is not None and not isinstance(results[0], BaseException)
    assert isinstance(results[1], ValueError) and "no such mailbox" in str(results[1])
    assert not isinstance(results[2], BaseException)
    assert isinstance(results[3], sqlite3.IntegrityError)  # a duplicate: fails alone too
    assert await db.run(_rows) == ["a", "b"]  # nothing of the failed ops is left


@pytest.mark.parametrize("fail", [False, True])
async def test_every_write_in_the_batch_runs_against_the_committed_state(
        db: Database, fail: bool) -> None:
    """Ops may run twice (replayed with savepoints after a failure); what commits is
    each op applied once."""
    await db.run(lambda c: (c.execute("CREATE TABLE n (k INTEGER)"),
                            c.execute("INSERT INTO n VALUES (0)")))
    commits = GroupCommit[int](db)

    def bump(c: sqlite3.Connection) -> int:
        return int(c.execute("UPDATE n SET k = k + 1 RETURNING k").fetchone()[0])

    def maybe_fail(c: sqlite3.Connection) -> None:
        if fail:
            raise RuntimeError("refused")

    results = await asyncio.gather(commits.submit(bump), commits.submit(maybe_fail),
                                   commits.submit(bump), return_exceptions=True)
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], RuntimeError) == fail
    assert await db.run(lambda c: c.execute("SELECT k FROM n").fetchone()[0]) == 2
