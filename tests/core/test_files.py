"""The file tree over a real dispersed store (local shard directories) and a real twin.db."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import storage
from core.db import Database
from core.errors import Conflict, Invalid, NotFound
from core.files import FileTree, PathLocks, QuotaExceeded, Written, normalize

MiB = 1024 * 1024


@pytest.fixture
async def tree(tmp_path: Path) -> AsyncIterator[FileTree]:
    db = Database(tmp_path / "twin.db")
    backends = [{"name": f"l{i}", "kind": "local", "location": f"shards/{i}"} for i in range(3)]
    store = await asyncio.to_thread(
        storage.open_store, tmp_path, k=2, n=3, segment_size=1 * MiB, backends=backends,
        master_key=os.urandom(32), metadata_key=os.urandom(32))
    t = FileTree(db, lambda: store, data_dir=tmp_path, redundancy=1.5)
    yield t
    await store.close()
    db.close()


async def chunks(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def read_all(tree: FileTree, path: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([c async for c in tree.read(path, start, end)])


async def object_count(tree: FileTree) -> int:
    return len(await tree.store.list())


async def test_write_read_ranges_and_listing(tree: FileTree) -> None:
    data = os.urandom(3 * MiB + 17)
    await tree.mkdir("/docs")
    entry = await tree.write("/docs/a.bin", chunks(data))
    assert entry.size == len(data) and not entry.is_dir and entry.etag
    assert await read_all(tree, "/docs/a.bin") == data
    assert await read_all(tree, "/docs/a.bin", MiB - 5, 2 * MiB + 9) == data[MiB - 5:2 * MiB + 9]
    names = [e.name for e in await tree.list("/docs")]
    assert names == ["a.bin"]
    assert (await tree.stat("/docs")).is_dir
    assert (await tree.usage())[0] == len(data)


async def test_overwrite_is_atomic_and_frees_old_object(tree: FileTree) -> None:
    await tree.write("/f", chunks(b"old" * 1000))
    before = await tree.stat("/f")
    reader = tree.read("/f", entry=before)
    first = await reader.__anext__()  # a reader is streaming the old version
    await tree.write("/f", chunks(b"new" * 2000))
    assert await read_all(tree, "/f") == b"new" * 2000
    rest = b"".join([c async for c in reader])
    assert first + rest == b"old" * 1000  # the old reader finishes on the old object
    assert await object_count(tree) == 1  # and then the old object is gone
    assert (await tree.stat("/f")).etag != before.etag


async def test_failed_upload_keeps_previous_version(tree: FileTree) -> None:
    await tree.write("/keep.txt", chunks(b"precious"))

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 100_000
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await tree.write("/keep.txt", broken())
    assert await read_all(tree, "/keep.txt") == b"precious"
    assert await object_count(tree) == 1


async def test_copy_shares_object_and_move_is_metadata(tree: FileTree) -> None:
    await tree.mkdir("/a")
    await tree.write("/a/x", chunks(b"data" * 10))
    await tree.set_prop("/a/x", "{urn:t}colour", b"<c>blue</c>")
    await tree.copy("/a", "/b")
    assert await object_count(tree) == 1  # no re-encoding: the copy shares the object
    assert (await tree.props("/b/x")) == {"{urn:t}colour": b"<c>blue</c>"}
    ref = (await tree.stat("/b/x")).ref
    await tree.move("/b", "/c")
    assert (await tree.stat("/c/x")).ref == ref
    with pytest.raises(NotFound):
        await tree.stat("/b/x")
    await tree.delete("/a")
    assert await read_all(tree, "/c/x") == b"data" * 10  # still referenced by the copy
    await tree.delete("/c")
    assert await object_count(tree) == 0
    with pytest.raises(NotFound):
        await tree.move("/nothing", "/elsewhere")


async def test_conflicts_and_bad_paths(tree: FileTree) -> None:
    await tree.mkdir("/d")
    with pytest.raises(Conflict):
        await tree.mkdir("/d")
    with pytest.raises(Conflict):
        await tree.mkdir("/missing/child")
    with pytest.raises(Conflict):
        await tree.move("/d", "/d/inside")
    for bad in ("/../etc", "/a/./b", "/tab\there", "/nul\x00", "/sur\udcffrogate", "relative",
                "/" + "n" * 256):
        with pytest.raises(Invalid):
            await tree.mkdir(bad)
    assert normalize("/a//") == "/a"


async def test_quota(tree: FileTree) -> None:
    tree.quota = 1000
    await tree.write("/small", chunks(b"x" * 600))
    with pytest.raises(QuotaExceeded):
        await tree.write("/big", chunks(b"y" * 600))
    with pytest.raises(QuotaExceeded):
        await tree.write("/big", chunks(b"y" * 600), size_hint=600)
    with pytest.raises(QuotaExceeded):
        await tree.copy("/small", "/small2")
    await tree.write("/small", chunks(b"z" * 900))  # replacing counts the old size out
    await tree.write("/small", chunks(b"w" * 950), size_hint=950)  # the announced size too
    assert await read_all(tree, "/small") == b"w" * 950
    with pytest.raises(QuotaExceeded):
        await tree.write("/small", chunks(b"v" * 1001), size_hint=1001)
    await tree.write("/small", chunks(b"z" * 900))
    assert await tree.usage() == (900, 100)
    assert await object_count(tree) == 1


async def test_concurrent_writes_switch_together_each_on_its_own(tree: FileTree) -> None:
    """Switches of concurrent writes share one transaction (core.db.Group), yet each
    is judged alone: of racing creates of one name exactly one made the file, a write
    refused (a folder there, over quota, no parent) stores nothing and changes
    nothing of the others, and every refused write's object is deleted."""
    tree.quota = 10_000
    await tree.mkdir("/dir")
    await tree.write("/old", chunks(b"o" * 100))
    writes = [tree.put_file("/same", chunks(b"%d" % i * 10)) for i in range(6)]
    writes += [tree.put_file("/dir", chunks(b"folder")),  # a folder: Conflict
               tree.put_file("/huge", chunks(b"h" * 20_000)),  # over quota
               tree.put_file("/none/f", chunks(b"no parent")),  # no parent: Conflict
               tree.put_file("/old", chunks(b"n" * 200)),  # replaces: the old object freed
               tree.put_file("/new", chunks(b"n" * 300))]
    results = await asyncio.gather(*writes, return_exceptions=True)
    same = results[:6]
    assert sum(1 for r in same if isinstance(r, Written) and r.created) == 1
    assert all(isinstance(r, Written) for r in same)
    assert isinstance(results[6], Conflict) and isinstance(results[7], QuotaExceeded)
    assert isinstance(results[8], Conflict)
    assert isinstance(results[9], Written) and not results[9].created
    assert isinstance(results[10], Written) and results[10].created
    assert await read_all(tree, "/old") == b"n" * 200
    assert await read_all(tree, "/new") == b"n" * 300
    assert (await tree.stat("/dir")).is_dir
    assert await tree.exists("/huge") is None
    # /same, /old and /new, nothing else: refused writes' objects and /old's first are gone
    assert await object_count(tree) == 3


async def test_put_target_and_small_bodies_checked_at_the_switch(tree: FileTree) -> None:
    await tree.mkdir("/d")
    await tree.write("/d/f", chunks(b"x"))
    target = await tree.put_target("/d/f")
    assert target.parent_is_dir and target.entry is not None and target.entry.size == 1
    target = await tree.put_target("/d/new")
    assert target.parent_is_dir and target.entry is None
    assert not (await tree.put_target("/d/f/under")).parent_is_dir
    assert not (await tree.put_target("/missing/f")).parent_is_dir
    # a small body announced as small skips the early check; the switch still refuses
    with pytest.raises(Conflict):
        await tree.write("/missing/f", chunks(b"abc"), size_hint=3)
    tree.quota = 10
    with pytest.raises(QuotaExceeded):
        await tree.write("/d/g", chunks(b"y" * 20), size_hint=20)
    with pytest.raises(QuotaExceeded):  # a body longer than announced is checked too
        await tree.write("/d/g", chunks(b"y" * 300_000, 100_000), size_hint=5)
    assert await object_count(tree) == 1


async def test_a_write_cancelled_during_its_switch_leaves_no_broken_file(
        tree: FileTree) -> None:
    """Cancelled while its switch is in flight, a write either made the file (and
    the object is kept) or did not (and the object is deleted): never a file whose
    object was deleted under it."""
    await tree.write("/f", chunks(b"first"))
    for delay in (0.0, 0.001, 0.003, 0.01, 0.03):
        task = asyncio.ensure_future(tree.write("/f", chunks(b"second")))
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)  # let a cancelled switch end and its cleanup run
        assert await read_all(tree, "/f") in (b"first", b"second")
        await tree.sweep()  # a version replaced by a cancelled write waits in file_garbage
        assert await object_count(tree) == 1


async def test_locks_persist(tmp_path: Path) -> None:
    db = Database(tmp_path / "twin.db")
    locks = PathLocks(db)

    def make() -> str:
        lock = locks.create("/a/b/", {"type": "write", "scope": "exclusive", "depth": "0",
                                      "owner": b"<owner>me</owner>", "principal": "me",
                                      "timeout": 60})
        return str(lock["token"])

    token = await asyncio.to_thread(make)
    db.close()
    db = Database(tmp_path / "twin.db")
    locks = PathLocks(db)

    def check() -> None:
        lock = locks.get(token)
        assert lock is not None and lock["root"] == "/a/b" and lock["owner"] == b"<owner>me</owner>"
        assert [x["token"] for x in locks.under("/a", include_root=False,
                                                include_children=True)] == [token]
        assert locks.under("/a", include_root=True, include_children=False) == []
        locks.refresh(token, 1)
        assert locks.delete(token) and locks.get(token) is None

    await asyncio.to_thread(check)
    assert threading.current_thread() is threading.main_thread()
    db.close()


def test_covering_follows_the_acl_rule() -> None:
    from core.acl import Grant
    from core.files import covering

    now = 1000.0
    grants = [Grant("/photos/", "twin", "bob", ("read",), None, now),
              Grant("/photos/cat.jpg", "circle", "family", ("read", "write"), None, now),
              Grant("/photos", "public", "", ("read",), None, now),  # exact, no prefix
              Grant("/", "twin", "old", ("read",), now - 1, now)]  # expired
    who = [g.who for g in covering(grants, "/photos/cat.jpg", is_dir=False, now=now)]
    assert who == ["bob", "circle:family"]
    assert [g.who for g in covering(grants, "/photos", is_dir=True, now=now)] == ["bob"]
    assert covering(grants, "/photosx/a", is_dir=False, now=now) == []
    assert covering(grants, "/photos", is_dir=False, now=now)[0].who == "public"
