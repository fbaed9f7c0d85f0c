"""The catalogue: manifests become visible all at once, or not at all."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from storage.catalogue import Catalogue, Manifest, SegmentEntry
from storage.errors import StorageError


@pytest.fixture
def catalogue(tmp_path: Path) -> Iterator[Catalogue]:
    with ThreadPoolExecutor(2) as pool:
        yield Catalogue(tmp_path / "catalogue.sqlite", pool)


def _manifest(oid: str | None = None) -> Manifest:
    entry = SegmentEntry([f"b{i}" for i in range(6)], [os.urandom(32) for _ in range(6)])
    return Manifest(oid or os.urandom(16).hex(), 4096, 1.0, 4, 6, 65536, os.urandom(72),
                    os.urandom(16), [entry], 1)


async def test_insert_many_makes_every_manifest_loadable(catalogue: Catalogue) -> None:
    batch = [_manifest() for _ in range(50)]
    await catalogue.insert_many(batch)
    for m in batch:
        assert await catalogue.load(m.id) == m
    assert {i.id for i in await catalogue.page()} == {m.id for m in batch}
    await catalogue.insert_many([])  # nothing to do is not an error
    await catalogue.close()


async def test_insert_many_is_atomic(catalogue: Catalogue) -> None:
    existing = _manifest()
    await catalogue.insert(existing)
    batch = [_manifest() for _ in range(10)] + [_manifest(existing.id)]  # the last collides
    with pytest.raises(sqlite3.IntegrityError):
        await catalogue.insert_many(batch)
    assert [i.id for i in await catalogue.page()] == [existing.id]
    assert all([await catalogue.load(m.id) is None for m in batch[:10]])
    await catalogue.insert_many(batch[:10])  # the same batch without the collision goes in
    assert len(await catalogue.page()) == 11
    await catalogue.close()


async def test_close_waits_for_a_read_still_running_then_refuses_new_ones(
        catalogue: Catalogue) -> None:
    """Closing a connection under a running query crashes the process (seen in CI)."""
    started, release = threading.Event(), threading.Event()
    used: list[int] = []

    def slow_read(oid: str) -> Manifest | None:
        started.set()
        release.wait(5)
        used.append(len(catalogue._conns))  # still open while the read runs
        return catalogue._load(oid, 0, None)

    read = asyncio.ensure_future(catalogue._io(slow_read, "missing"))
    await asyncio.to_thread(started.wait, 5)
    read.cancel()  # the caller gives up; the thread does not
    closing = asyncio.ensure_future(catalogue.close())
    await asyncio.sleep(0.1)
    assert not closing.done()
    release.set()
    await asyncio.wait_for(closing, 5)
    assert used and used[0] > 0 and catalogue._conns == []
    with pytest.raises(StorageError, match="closed"):
        await catalogue.load("anything")
