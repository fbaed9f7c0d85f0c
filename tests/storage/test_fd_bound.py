"""Open file descriptors stay bounded under many concurrent reads (issue 23 item 7):
the 32 storage I/O threads share a few SQLite connections per database instead of
each opening its own."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest

from storage.sqlpool import READERS, ReaderPool
from tests.storage.conftest import StoreFactory


def sqlite_fds() -> Counter[str]:
    """Open descriptors of this process per SQLite database (its -wal and -shm included)."""
    out: Counter[str] = Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        for suffix in ("-wal", "-shm"):
            target = target.removesuffix(suffix)
        if target.endswith((".sqlite", ".db")):
            out[target] += 1
    return out


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_many_concurrent_reads_keep_a_few_connections_per_database(
        make_store: StoreFactory) -> None:
    store = make_store()
    refs = await asyncio.gather(*(store.put(os.urandom(2000)) for _ in range(200)))
    for _ in range(5):  # rounds of reads wide enough to occupy every I/O thread
        got = await asyncio.gather(*(store.read(r) for r in refs))
        assert all(len(g) == 2000 for g in got)
        await asyncio.gather(*(store.stat(r) for r in refs))
    assert store.engine.io._max_workers >= 32
    fds = sqlite_fds()
    databases = [p for p in fds if "shards" in p or "catalogue" in p]
    assert len(databases) >= 7  # six indexes and the catalogue
    # per database: the writer's connection and at most READERS readers, three fds each
    for path in databases:
        assert fds[path] <= 3 * (1 + READERS), (path, fds[path])
    await store.close()
    assert not [p for p in sqlite_fds() if p in databases], "close releases every descriptor"


def test_a_thread_waits_for_a_connection_instead_of_opening_another(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    sqlite3.connect(path).close()
    pool = ReaderPool(lambda: sqlite3.connect(path, check_same_thread=False), size=2)
    inside = threading.Barrier(2)
    release = threading.Event()
    results: list[int] = []

    def hold() -> None:
        with pool.lease() as db:
            inside.wait()
            release.wait()
            results.append(db.execute("SELECT 1").fetchone()[0])

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    waiter_done = threading.Event()

    def wait_for_one() -> None:
        with pool.lease() as db, pool.lease() as again:  # re-entry: the same connection
            assert db is again
            results.append(db.execute("SELECT 2").fetchone()[0])
        waiter_done.set()

    waiter = threading.Thread(target=wait_for_one)
    waiter.start()
    assert not waiter_done.wait(0.2), "a third lease must wait while two are out"
    assert pool.opened == 2
    release.set()
    for t in [*holders, waiter]:
        t.join(5)
    assert sorted(results) == [1, 1, 2] and pool.opened == 2
    pool.close()
    assert pool.opened == 0
