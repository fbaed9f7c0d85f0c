"""The local backend: append-only files, group commit, recovery, compaction."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import pytest

from storage.backends.local import LocalBackend
from storage.errors import BackendUnavailable


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as ex:
        yield ex


async def test_contract(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    b = LocalBackend("l", tmp_path / "l", pool)
    await b.put("s/a/0/0", [b"one", memoryview(b"two")])
    assert await b.get("s/a/0/0") == b"onetwo"
    await b.put("s/a/0/0", [b"replaced"])
    assert await b.get("s/a/0/0") == b"replaced"
    assert await b.stat("s/a/0/0") == 8
    assert await b.get("s/missing") is None and await b.stat("s/missing") is None
    await b.put("backup/1", [b"m"])
    assert [k async for k in b.list("s/")] == ["s/a/0/0"]
    assert await b.delete("s/a/0/0") is True and await b.delete("s/a/0/0") is False
    assert (await b.health()).reachable
    await b.close()


async def test_concurrent_puts_share_fsyncs(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    b = LocalBackend("l", tmp_path / "l", pool)
    await b.put("warm", [b"x"])
    with mock.patch("storage.backends.local.os.fdatasync", wraps=os.fdatasync) as sync:
        await asyncio.gather(*(b.put(f"k{i}", [os.urandom(4096)]) for i in range(200)))
    assert 1 <= sync.call_count <= 20, "group commit: many puts per fsync"
    assert all([await b.get(f"k{i}") is not None for i in range(200)])
    await b.close()


async def test_records_missing_from_the_index_are_recovered_and_torn_tails_cut(
        tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    b = LocalBackend("l", tmp_path / "l", pool)
    await b.put("first", [b"1" * 100])
    await b.put("second", [b"2" * 100])
    await b.close()
    # power loss: the index lost its last commit, and a half-written record trails the data
    db = sqlite3.connect(tmp_path / "l" / "index.sqlite")
    db.execute("DELETE FROM shards WHERE key='second'")
    db.execute("UPDATE files SET indexed=(SELECT offset+length FROM shards WHERE key='first')")
    db.commit()
    db.close()
    data_file = tmp_path / "l" / "data" / "00000001.dat"
    size = data_file.stat().st_size
    with open(data_file, "ab") as f:
        f.write(b"TWR1\x00\x05\x00\x00\x10\x00third")  # claims 4096 bytes, has none
    b = LocalBackend("l", tmp_path / "l", pool)
    assert await b.get("second") == b"2" * 100
    assert data_file.stat().st_size == size
    await b.put("third", [b"3"])
    assert await b.get("third") == b"3"
    await b.close()


async def test_deleted_space_is_compacted(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    b = LocalBackend("l", tmp_path / "l", pool, max_file=64 * 1024)
    for i in range(40):
        await b.put(f"k{i:02d}", [bytes([i]) * 8000])
    files = sorted((tmp_path / "l" / "data").iterdir())
    assert len(files) > 3
    for i in range(40):
        if i % 4:
            await b.delete(f"k{i:02d}")
    assert await b.compact() >= 1
    for i in range(0, 40, 4):
        assert await b.get(f"k{i:02d}") == bytes([i]) * 8000
    await b.close()
    b = LocalBackend("l", tmp_path / "l", pool, max_file=64 * 1024)
    assert await b.get("k00") == bytes([0]) * 8000  # opening removes retired files
    live = sum(f.stat().st_size for f in (tmp_path / "l" / "data").iterdir())
    assert live < 40 * 8000 / 2
    for i in range(0, 40, 4):
        assert await b.get(f"k{i:02d}") == bytes([i]) * 8000
    await b.close()


async def test_a_directory_in_use_by_another_store_is_refused(
        tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    a = LocalBackend("l", tmp_path / "l", pool)
    await a.put("k", [b"v"])
    b = LocalBackend("l", tmp_path / "l", pool)
    with pytest.raises(BackendUnavailable, match="in use"):
        await b.get("k")
    await a.close()
    assert await b.get("k") == b"v"
    await b.close()


async def test_a_second_store_on_locked_directories_fails_at_open_naming_the_holder(
        tmp_path: Path) -> None:
    """What `twin storage ls` meets while `twin serve` runs: a clear error, not
    NotEnoughShares on the first read."""
    from storage import StoreInUse, open_store
    from tests.storage.conftest import MASTER, METADATA, local_specs

    (tmp_path / "shards").mkdir()
    specs = local_specs(tmp_path / "shards")
    first = open_store(tmp_path / "data", k=4, n=6, segment_size=65536, backends=specs,
                       master_key=MASTER, metadata_key=METADATA)
    ref = await first.put(b"held")
    with pytest.raises(StoreInUse) as caught:
        open_store(tmp_path / "data", k=4, n=6, segment_size=65536, backends=specs,
                   master_key=MASTER, metadata_key=METADATA)
    assert caught.value.pid == os.getpid()
    assert "in use by process" in str(caught.value)
    await first.close()
    second = open_store(tmp_path / "data", k=4, n=6, segment_size=65536, backends=specs,
                        master_key=MASTER, metadata_key=METADATA)  # the locks were given back
    assert await second.read(ref) == b"held"
    await second.close()


def _dead_bytes(path: Path) -> dict[int, int]:
    db = sqlite3.connect(path / "index.sqlite")
    try:
        return {f: d for f, d in db.execute("SELECT id, dead FROM files") if d}
    finally:
        db.close()


async def test_put_many_is_one_fsync_and_counts_overwritten_records_as_dead(
        tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    b = LocalBackend("l", tmp_path / "l", pool)
    await b.put("s/old/0/0", [b"x" * 100])
    await b.put("s/old/0/1", [b"y" * 50])
    assert _dead_bytes(tmp_path / "l") == {}
    items: list[tuple[str, list[bytes]]] = [(f"s/new/0/{i}", [b"h", os.urandom(30)])
                                            for i in range(300)]
    items += [("s/old/0/0", [b"X" * 7]), ("s/twice/0/0", [b"first"]),
              ("s/twice/0/0", [b"second!"]), ("s/old/0/1", [b"Y"])]
    with mock.patch("storage.backends.local.os.fdatasync", wraps=os.fdatasync) as sync:
        assert await b.put_many(items) == [True] * len(items)
    assert sync.call_count == 1
    for key, parts in items[:300]:
        assert await b.get(key) == b"".join(parts)
    assert await b.get("s/old/0/0") == b"X" * 7
    assert await b.get("s/twice/0/0") == b"second!"  # the later of two puts in one batch
    assert await b.get("s/old/0/1") == b"Y"
    record = 4 + 2 + 4  # the record header, then the key, then the value
    overwritten = [(9, 100), (9, 50), (11, 5)]  # (key length, value length) of dead records
    await b.checkpoint()  # the index learns of the batch lazily
    assert _dead_bytes(tmp_path / "l") == {1: sum(record + k + v for k, v in overwritten)}
    assert await b.delete("s/twice/0/0") is True
    assert _dead_bytes(tmp_path / "l") == {1: sum(record + k + v for k, v in overwritten)
                                              + record + 11 + 7}
    assert await b.put_many([]) == []
    await b.close()


async def test_put_many_and_deletes_of_concurrent_callers_share_a_batch(
        tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    b = LocalBackend("l", tmp_path / "l", pool)
    await b.put_many([(f"k{i}", [b"v"]) for i in range(10)])
    results = await asyncio.gather(
        b.put_many([(f"m{i}", [bytes([i])]) for i in range(20)]),
        *(b.delete(f"k{i}") for i in range(5)), b.delete("never"),
        b.put_many([("k9", [b"new"])]))
    assert results == [[True] * 20, *[True] * 5, False, [True]]
    assert [k async for k in b.list("k")] == ["k5", "k6", "k7", "k8", "k9"]
    assert await b.get("k9") == b"new" and await b.get("m7") == bytes([7])
    await b.close()


async def test_put_many_on_an_unusable_directory_raises_backend_unavailable(
        tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    (tmp_path / "file").write_bytes(b"not a directory")
    b = LocalBackend("l", tmp_path / "file", pool)
    with pytest.raises(BackendUnavailable):
        await b.put_many([("k", [b"v"])])
    await b.close()


def _indexed_keys(path: Path) -> set[str]:
    db = sqlite3.connect(path / "index.sqlite")
    try:
        return {k for (k,) in db.execute("SELECT key FROM shards")}
    finally:
        db.close()


_KILLED_CHILD = """
import asyncio, os, signal, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from storage.backends import local
from storage.backends.local import LocalBackend

local.CHECKPOINT_SECONDS = 3600.0  # only the delete checkpoints, whatever the machine's pace

async def main():
    b = LocalBackend("l", Path(sys.argv[1]), ThreadPoolExecutor(4))
    await b.put_many([(f"s/k{i}/0/0", [b"v%d" % i]) for i in range(100)])
    await b.put("s/gone/0/0", [b"soon deleted"])
    await b.delete("s/gone/0/0")
    await b.put_many([(f"s/late{i}/0/0", [b"w%d" % i]) for i in range(50)])
    print("acked", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close: nothing more reaches the index

asyncio.run(main())
"""


async def test_acknowledged_puts_survive_a_kill_before_their_index_checkpoint(
        tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    """The data files are the truth and the index a lazy checkpoint of them: a put is
    acknowledged once its record is synced, and reopening re-indexes what the index
    had not caught up with; a delete is never undone by that."""
    root = Path(__file__).parents[2]
    child = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(tmp_path / "l")],
                           cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                           capture_output=True, timeout=60)
    assert child.returncode == -9 and child.stdout == b"acked\n", child.stderr
    late = {f"s/late{i}/0/0" for i in range(50)}
    assert not late & _indexed_keys(tmp_path / "l"), "the last batch was not checkpointed"
    b = LocalBackend("l", tmp_path / "l", pool)
    for i in range(100):
        assert await b.get(f"s/k{i}/0/0") == b"v%d" % i
    for i in range(50):
        assert await b.get(f"s/late{i}/0/0") == b"w%d" % i
    assert await b.get("s/gone/0/0") is None
    assert late <= _indexed_keys(tmp_path / "l")  # recovered into the index at open
    await b.close()


async def test_records_not_yet_indexed_are_read_listed_and_counted(
        tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    b = LocalBackend("l", tmp_path / "l", pool)
    await b.put_many([(f"s/o{i}/0/0", [b"x" * i]) for i in range(1, 11)])
    assert _indexed_keys(tmp_path / "l") == set()
    assert await b.get("s/o3/0/0") == b"xxx" and await b.stat("s/o7/0/0") == 7
    assert [k async for k in b.list("s/o1")] == ["s/o1/0/0", "s/o10/0/0"]
    assert len(_indexed_keys(tmp_path / "l")) == 10  # listing made the index whole
    await b.close()


async def test_the_index_catches_up_every_checkpoint_items_records(
        tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    b = LocalBackend("l", tmp_path / "l", pool)
    with mock.patch("storage.backends.local.CHECKPOINT_ITEMS", 10):
        for i in range(25):
            await b.put(f"s/c{i}/0/0", [b"c"])
    assert len(_indexed_keys(tmp_path / "l")) == 20
    await b.close()
    assert len(_indexed_keys(tmp_path / "l")) == 25  # closing checkpoints the rest


async def test_a_failed_checkpoint_does_not_fail_puts_that_are_already_synced(
        tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    b = LocalBackend("l", tmp_path / "l", pool)
    await b.put("s/before/0/0", [b"b"])

    def broken(self: LocalBackend, w: object) -> list[bool]:
        raise sqlite3.OperationalError("disk I/O error")
    with mock.patch("storage.backends.local.CHECKPOINT_ITEMS", 1), \
            mock.patch.object(LocalBackend, "_checkpoint", broken):
        assert await b.put_many([("s/synced/0/0", [b"s"])]) == [True]
    # the writer was reopened, which re-indexed the synced record from its data file
    assert await b.get("s/synced/0/0") == b"s" and await b.get("s/before/0/0") == b"b"
    await b.close()
    assert {"s/synced/0/0", "s/before/0/0"} <= _indexed_keys(tmp_path / "l")
