"""Space comes back: deleting never grows the shards, and a quiet store returns to
within its stated overhead of the live records (issue 18 item 2, issue 23 item 6)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from storage import CompactPolicy, Store
from storage.backends.local import RECORD, LocalBackend
from storage.catalogue import Manifest
from tests.storage.conftest import KiB, MiB, StoreFactory, astream, pseudo_random

# no waiting in tests: deletes count as paused at once and retired files go at once
EAGER = CompactPolicy(delay=0.0, age=0.0, retire_grace=0.0)


def disk_use(store: Store) -> int:
    """Bytes the shard data files occupy on disk, holes excluded."""
    return sum(b.disk_usage() for b in store.backends if isinstance(b, LocalBackend))


def live_bytes(store: Store) -> int:
    """Bytes of the records the indexes point at (headers included)."""
    total = 0
    for b in store.backends:
        assert isinstance(b, LocalBackend)
        db = sqlite3.connect(b.path / "index.sqlite")
        row = db.execute("SELECT coalesce(sum(length + length(key) + ?), 0) FROM shards",
                         (RECORD.size,)).fetchone()
        db.close()
        total += int(row[0])
    return total


async def test_deleting_a_large_object_and_many_small_ones_never_grows_and_reclaims(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=4 * MiB, policy=EAGER)
    keep = [await store.put(astream(pseudo_random(1, 6 * MiB)))]
    keep += await asyncio.gather(*(store.put(os.urandom(1000 + i)) for i in range(300)))
    big = await store.put(astream(pseudo_random(2, 64 * MiB)))
    small = []
    for start in range(0, 10_000, 1000):
        small += await asyncio.gather(*(store.put(os.urandom(500 + (start + i) % 3000))
                                        for i in range(1000)))
    await store.compact()  # nothing dead yet: nothing to do, nothing grows
    before = disk_use(store)

    await store.delete(big)
    after_big = disk_use(store)
    assert after_big <= before, "deleting must never grow the store"
    assert after_big < before - 40 * MiB, "a large object's blocks come back at once"
    use = after_big
    for pos in range(0, len(small), 500):
        await asyncio.gather(*(store.delete(ref) for ref in small[pos:pos + 500]))
        now = disk_use(store)
        assert now <= use, "deleting must never grow the store"
        use = now

    assert await store.compact() >= 1
    assert await store.compact() == 0  # retired files are gone, nothing more is due
    live = live_bytes(store)
    assert disk_use(store) <= 1.1 * live, (disk_use(store), live)
    for ref in keep[:20]:
        assert len(await store.read(ref)) == ref.size
    await store.close()


async def test_a_small_store_compacts_its_only_file_once_quiet(tmp_path: Path) -> None:
    """A twin too small to ever rotate its 256 MiB data file still reclaims."""
    with ThreadPoolExecutor(4) as pool:
        b = LocalBackend("l", tmp_path / "l", pool,
                         policy=CompactPolicy(delay=0.0, age=0.3, retire_grace=0.0))
        for i in range(400):
            await b.put(f"k{i:03d}", [bytes([i % 256]) * 3000])
        for i in range(400):
            if i % 5:  # 80 % dead, in small records that share blocks: only compaction frees
                await b.delete(f"k{i:03d}")
        assert len(list((tmp_path / "l" / "data").iterdir())) == 1
        assert await b.maintain() == 1  # half dead: due once deletes pause
        assert b.disk_usage() < 100 * 3100
        for i in range(0, 400, 5):
            assert await b.get(f"k{i:03d}") == bytes([i % 256]) * 3000
        # a little dead (above the slack, below half) waits for the age rule
        for i in range(0, 110, 5):
            await b.delete(f"k{i:03d}")
        assert await b.maintain() == 0
        await asyncio.sleep(0.35)
        assert await b.maintain() == 1
        assert b.disk_usage() <= 1.1 * 58 * 3011 + 4 * KiB
        await b.close()
        b = LocalBackend("l", tmp_path / "l", pool)
        for i in range(110, 400, 5):
            assert await b.get(f"k{i:03d}") == bytes([i % 256]) * 3000
        await b.close()


async def test_a_lost_index_is_rebuilt_across_punched_records(tmp_path: Path) -> None:
    """Punched records keep their headers, so re-indexing the data files from
    scratch steps over the holes instead of taking them for a torn tail."""
    with ThreadPoolExecutor(4) as pool:
        b = LocalBackend("l", tmp_path / "l", pool, policy=EAGER)
        # "big"'s header starts on a block boundary: the first block a punch would free
        await b.put("before", [b"b" * (4096 - RECORD.size - len("before"))])
        await b.put("big", [os.urandom(200_000)])
        await b.put("after", [b"a" * 5000])
        used = b.disk_usage()
        assert await b.delete("big")
        assert b.disk_usage() < used - 150_000
        await b.close()
        for f in (tmp_path / "l").glob("index.sqlite*"):
            f.unlink()
        b = LocalBackend("l", tmp_path / "l", pool, policy=EAGER)
        assert await b.get("after") == b"a" * 5000
        assert await b.get("before") == b"b" * (4096 - RECORD.size - len("before"))
        await b.close()


async def test_a_half_dead_file_is_compacted_even_if_deletes_never_pause(
        tmp_path: Path) -> None:
    """A busy mail server expunges all the time: waiting for a pause in deletes
    must not mean never compacting (the soak's shards grew ~10 MiB/min so)."""
    with ThreadPoolExecutor(4) as pool:
        b = LocalBackend("l", tmp_path / "l", pool, policy=CompactPolicy(
            delay=3600.0, max_wait=0.3, age=3600.0, retire_grace=0.0))
        for i in range(400):
            await b.put(f"k{i:03d}", [bytes([i % 256]) * 3000])
        compacted = 0
        for i in range(400):
            if i % 5:
                await b.delete(f"k{i:03d}")  # a delete between every look: never a pause
            if i % 20 == 0:
                compacted += await b.maintain()
                await asyncio.sleep(0.1)
        assert compacted >= 1
        assert b.disk_usage() < 0.6 * 400 * 3011
        for i in range(0, 400, 5):
            assert await b.get(f"k{i:03d}") == bytes([i % 256]) * 3000
        await b.close()


async def test_verify_during_a_delete_finds_no_orphans(make_store: StoreFactory) -> None:
    """Between an object's catalogue row and its last share going, a concurrent
    verify must not report the shares as orphans (a soak's verify failed so)."""
    store = make_store()
    ref = await store.put(os.urandom(300_000))
    gate = asyncio.Event()
    real = store.engine.delete_keys

    async def slow(keys: list[tuple[str, str]]) -> int:
        await gate.wait()
        return await real(keys)

    store.engine.delete_keys = slow  # type: ignore[method-assign]
    deleting = asyncio.create_task(store.delete(ref))
    await asyncio.sleep(0.05)  # the row is gone, the shares are not
    report = await store.verify()
    assert report.orphans == 0 and report.healthy, report
    gate.set()
    await deleting
    assert (await store.verify()).healthy
    await store.close()


async def test_verify_reading_an_object_being_deleted_reports_no_problem(
        make_store: StoreFactory) -> None:
    """Shares of an object deleted while verify reads it are missing (or, punched
    out, zeros): that is a delete, not damage."""
    store = make_store()
    ref = await store.put(os.urandom(300_000))
    real = store.engine.manifest
    deleted = False

    async def then_delete(oid: str, start: int = 0, end: int | None = None) -> Manifest:
        nonlocal deleted
        m = await real(oid, start, end)
        if oid == ref.id and not deleted:
            deleted = True
            await store.delete(ref)  # between verify's manifest and its reads
        return m

    store.engine.manifest = then_delete  # type: ignore[method-assign]
    report = await store.verify()
    assert report.healthy, report
    await store.close()
