"""Small in-memory puts are batched: same objects, same guarantees, shared work."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import textwrap
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import storage.health
from storage import BackendUnavailable, ObjectRef, Store, smallput
from storage.backends import put_many
from storage.smallput import SMALL_PUT_MAX
from tests.storage.conftest import (
    KiB,
    StoreFactory,
    local_specs,
    spawn_store_child,
)

SEG = 64 * KiB


async def _share_keys(store: Store) -> set[str]:
    """Every object share key on the backends that are up."""
    up = {h.name for h in await store.health() if h.reachable}
    return {k for b in store.backends if b.name in up async for k in b.list("s/")}


async def test_two_hundred_concurrent_puts_read_back_identical_from_a_few_batches(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    blobs = [os.urandom(1 + i * 321 % SEG) for i in range(200)]
    # every backend up: each batch's rows are committed while its shares are written
    with mock.patch.object(store.engine.catalogue, "insert_early",
                           wraps=store.engine.catalogue.insert_early) as commits:
        refs = await asyncio.gather(*(store.put(b) for b in blobs))
    assert 1 <= commits.call_count <= 20, "puts waiting together share a batch"
    assert [r.size for r in refs] == [len(b) for b in blobs]
    assert len({r.id for r in refs}) == 200
    assert await asyncio.gather(*(store.read(r) for r in refs)) == blobs
    for ref in refs[:5]:  # the same manifest a single put writes: one segment, k and n
        info = await store.stat(ref)
        assert (info.segments, info.k, info.n) == (1, 4, 6)
        m = await store.engine.manifest(ref.id)
        assert m.segments[0].placement == [b.name for b in store.engine.placement_order(ref.id)]
    report = await store.verify()
    assert report.healthy and report.orphans == 0 and report.objects_checked == 200
    await store.close()


async def test_only_non_empty_objects_up_to_one_segment_are_batched(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    assert store.small.limit == SEG  # the segment, when it is below SMALL_PUT_MAX
    assert make_store(segment_size=1024 * KiB).small.limit == SMALL_PUT_MAX
    with mock.patch.object(store.small, "put", wraps=store.small.put) as batched:
        refs = {size: await store.put(os.urandom(size)) for size in (0, 1, SEG, SEG + 1)}
        assert batched.call_count == 2  # 1 and SEG bytes; empty and two-segment ones stream
    for size, ref in refs.items():
        assert (await store.stat(ref)).segments == -(-size // SEG)
    await store.close()


async def test_a_bytearray_is_stored_as_it_was_when_put_was_called(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    data = bytearray(b"before" * 100)
    view_source = bytearray(b"viewed" * 100)
    pending = [asyncio.ensure_future(store.put(data)),
               asyncio.ensure_future(store.put(memoryview(view_source)[6:]))]
    await asyncio.sleep(0)  # both are queued, the batch not yet encoded
    data[:6] = b"AFTER!"
    view_source[6:12] = b"AFTER!"
    ref, ref_view = await asyncio.gather(*pending)
    assert await store.read(ref) == b"before" * 100
    assert await store.read(ref_view) == b"viewed" * 99
    await store.close()


async def test_with_a_backend_down_every_object_keeps_k_plus_1_shares_and_repair_restores_n(
        make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(segment_size=SEG, dead={4})
    blobs = [os.urandom(100 + i) for i in range(60)]
    refs = await asyncio.gather(*(store.put(b) for b in blobs))
    report = await store.verify()
    assert report.degraded == {r.id: 5 for r in refs}  # k+1 = 5 of 6 shares each
    await store.close()

    (tmp_path / "shards" / "not-a-directory").unlink()  # the disk is back, empty
    store = make_store(segment_size=SEG)
    assert (await store.repair()).shares_rebuilt == 60
    assert (await store.verify()).healthy
    assert await asyncio.gather(*(store.read(r) for r in refs)) == blobs
    await store.close()


async def test_a_share_whose_backend_is_down_goes_to_a_spare_backend(
        make_store: StoreFactory, tmp_path: Path) -> None:
    specs = local_specs(tmp_path / "shards", count=7, dead={0})
    store = make_store(segment_size=SEG, specs=specs)
    blobs = [os.urandom(2000) for _ in range(40)]
    refs = await asyncio.gather(*(store.put(b) for b in blobs))
    for ref in refs:
        placement = (await store.engine.manifest(ref.id)).segments[0].placement
        assert "b0" not in placement and "" not in placement and len(set(placement)) == 6
    assert await asyncio.gather(*(store.read(r) for r in refs)) == blobs
    await store.close()


async def test_with_too_few_backends_every_object_fails_and_nothing_is_left(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG, dead={0, 1})  # 4 left, write quorum is 5
    results = await asyncio.gather(*(store.put(os.urandom(500)) for _ in range(30)),
                                   return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) and "could be stored" in str(r)
               for r in results), results
    assert await store.list() == []
    assert await _share_keys(store) == set(), "shares of failed objects are discarded"
    assert (await store.verify()).orphans == 0
    with pytest.raises(BackendUnavailable, match="could be stored"):
        await store.put(os.urandom(SEG + 1))  # the stream path agrees
    await store.close()


@pytest.mark.parametrize("marked", [2, 6])
async def test_backends_marked_down_that_still_answer_take_shares_when_too_few_are_up(
        make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch, marked: int) -> None:
    """A backend is marked down when it misses a deadline or is cut off after the
    quorum: on a loaded machine often only slow. With two so marked (the quorum is
    5 of 6), small puts skipped them and every one failed, "only 4 of 6 shares",
    until a health probe passed (the soak and imaptest's 50 clients met it); they
    are tried now, as a single put tries them."""
    monkeypatch.setattr(storage.health, "PROBE_INTERVAL", 600.0)  # no probe in between
    store = make_store(segment_size=SEG)
    names = [b.name for b in store.backends][:marked]
    for name in names:
        store.engine.mark_failed(name, "slower than the write quorum")
    blobs = [os.urandom(300 + i) for i in range(20)]
    refs = await asyncio.gather(*(store.put(b) for b in blobs))
    assert all(store.monitor.is_down(name) for name in names)  # still marked all along
    for ref in refs:
        placement = (await store.engine.manifest(ref.id)).segments[0].placement
        assert "" not in placement, placement
    assert await asyncio.gather(*(store.read(r) for r in refs)) == blobs
    await store.close()


@pytest.mark.parametrize("when", ["queued", "writing shares", "committing"])
async def test_a_cancelled_put_leaves_no_visible_object(make_store: StoreFactory,
                                                        when: str) -> None:
    store = make_store(segment_size=SEG)
    tasks = [asyncio.ensure_future(store.put(os.urandom(3000))) for _ in range(40)]

    def cancel_half() -> None:
        for t in tasks[::2]:
            t.cancel()

    real_insert = store.engine.catalogue.insert_early  # every backend up: rows go early

    async def put_many_then_cancel(*args: Any) -> list[bool]:
        cancel_half()
        return await put_many(*args)

    async def insert_then_cancel(*args: Any) -> None:
        await real_insert(*args)  # the manifests are committed: the objects are listed
        cancel_half()

    with contextlib.ExitStack() as patches:
        if when == "queued":
            await asyncio.sleep(0)  # every put is queued; the flusher has not run yet
            cancel_half()
        elif when == "writing shares":
            patches.enter_context(mock.patch.object(smallput, "put_many", put_many_then_cancel))
        else:
            patches.enter_context(mock.patch.object(store.engine.catalogue, "insert_early",
                                                    insert_then_cancel))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await store.small.drain()
    stored = [r for r in results if isinstance(r, ObjectRef)]
    assert len(stored) == 20 and all(isinstance(r, asyncio.CancelledError) for r in results[::2])
    assert {o.id for o in await store.list()} == {r.id for r in stored}
    assert await _share_keys(store) == {f"s/{r.id}/0/{i}" for r in stored for i in range(6)}
    await store.close()


async def test_closing_the_store_finishes_the_puts_already_queued(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    blobs = [os.urandom(700) for _ in range(50)]
    tasks = [asyncio.ensure_future(store.put(b)) for b in blobs]
    await asyncio.sleep(0)
    await store.close()
    refs = [t.result() for t in tasks]  # every one done, none failed
    store = make_store(segment_size=SEG)
    assert await asyncio.gather(*(store.read(r) for r in refs)) == blobs
    await store.close()


CHILD = textwrap.dedent("""
    import asyncio, json, os, sys
    from pathlib import Path
    from storage import open_store

    async def main():
        data_dir, specs, master, meta = sys.argv[1:5]
        store = open_store(Path(data_dir), k=4, n=6, segment_size=65536,
                           backends=json.loads(specs), master_key=bytes.fromhex(master),
                           metadata_key=bytes.fromhex(meta))

        async def one(i):
            ref = await store.put(bytes([i % 251]) * (1000 + i % 3000))
            print(f"{ref} {i}", flush=True)

        i = 0
        while True:
            await asyncio.gather(*(one(i + j) for j in range(20)))
            i += 20

    asyncio.run(main())
""")


async def test_kill_9_during_small_puts_keeps_every_returned_object_and_only_orphans(
        make_store: StoreFactory, tmp_path: Path) -> None:
    proc = spawn_store_child(CHILD, tmp_path)
    assert proc.stdout is not None
    returned: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(returned) < 200 and time.monotonic() < deadline:
        ref, seed = proc.stdout.readline().decode().split()
        returned[ref] = int(seed)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    for line in proc.stdout.read().decode().splitlines():  # printed just before the kill
        ref, seed = line.split()
        returned[ref] = int(seed)
    assert len(returned) >= 200

    store = make_store(segment_size=SEG)
    visible = {str(o.ref) for o in await store.list()}
    assert set(returned) <= visible, "a put that returned is durable"
    for ref, i in returned.items():
        assert await store.read(ref) == bytes([i % 251]) * (1000 + i % 3000)
    cleaned = await store.verify(clean=True)
    assert not cleaned.degraded and not cleaned.unreadable
    assert cleaned.orphans_removed == cleaned.orphans  # shares of the unfinished batch
    assert (await store.verify()).healthy
    await store.close()


async def test_a_backend_without_put_many_gets_one_put_per_item() -> None:
    """put_many is optional in the backend contract: the batch falls back to put."""

    class PutOnly:
        name = "put-only"

        def __init__(self) -> None:
            self.stored: dict[str, bytes] = {}

        async def put(self, key: str, parts: list[bytes]) -> None:
            if key == "down":
                raise BackendUnavailable(self.name, "refused")
            self.stored[key] = b"".join(parts)

    backend = PutOnly()
    items = [("a", [b"1"]), ("down", [b"2"]), ("c", [b"3", b"4"])]
    assert await put_many(backend, items) == [True, False, True]  # type: ignore[arg-type]
    assert backend.stored == {"a": b"1", "c": b"34"}
