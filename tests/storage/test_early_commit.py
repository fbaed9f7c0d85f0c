"""A batch of small puts commits its catalogue rows while its shares are written.

The catalogue's sync runs beside the backends' instead of after them (issue 20),
yet a put still returns only once both are durable, and a kill -9 before the
shares landed leaves a row that ``storage.settle`` removes (or keeps, if the put
had returned)."""

from __future__ import annotations

import asyncio
import signal
import textwrap
from pathlib import Path

from storage.backends.local import LocalBackend
from tests.storage.conftest import StoreFactory, spawn_store_child


async def test_the_row_is_committed_while_the_shares_are_written(
        make_store: StoreFactory) -> None:
    store = make_store()
    gate = asyncio.Event()
    entered = 0
    for backend in store.engine.backends:
        assert isinstance(backend, LocalBackend)
        real = backend.put_many

        async def held(items, real=real):  # type: ignore[no-untyped-def]
            nonlocal entered
            entered += 1
            await gate.wait()
            return await real(items)
        backend.put_many = held  # type: ignore[method-assign]
    put = asyncio.create_task(store.put(b"a small file" * 300))
    for _ in range(500):
        if entered == 6 and await store.engine.catalogue.unsettled():
            break
        await asyncio.sleep(0.01)
    early = await store.engine.catalogue.unsettled()
    assert len(early) == 1, "the row must be committed while no share is durable yet"
    assert not put.done(), "the put returns only once its shares are durable"
    # a scrub meanwhile leaves the object to its put: no share is missing, none broken
    fixed = await store.repair()
    assert fixed.unrecoverable == [] and fixed.shares_rebuilt == 0, fixed
    gate.set()
    ref = await put
    assert ref.id == early[0]
    assert await store.read(ref) == b"a small file" * 300
    # settled with the next transaction, not with a commit of its own
    assert await store.engine.catalogue.unsettled() == [ref.id]
    other = await store.put(b"another")
    assert await store.engine.catalogue.unsettled() == [other.id]
    await store.close()  # the settles no later transaction took: committed on close
    again = make_store()
    assert not again.engine.unsettled_owed
    assert await again.engine.catalogue.unsettled() == []
    await again.close()


CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from storage import open_store

    async def main():
        data_dir, specs, master, meta = sys.argv[1:5]
        store = open_store(Path(data_dir), k=4, n=6, segment_size=65536,
                           backends=json.loads(specs), master_key=bytes.fromhex(master),
                           metadata_key=bytes.fromhex(meta))
        store.engine.catalogue.settle = lambda ids: None  # the crash takes the settles
        kept = await store.put(b"stored and answered, not yet settled")
        # three backends never write: the put below cannot reach k shares
        for b in store.engine.backends[:3]:
            async def never(items):
                await asyncio.Event().wait()
            b.put_many = never
        put = asyncio.ensure_future(store.put(b"never answered " * 100))
        while len(await store.engine.catalogue.unsettled()) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the three other backends' appends land
        print(kept.id, flush=True)
        await put

    asyncio.run(main())
""")


async def test_kill_9_before_the_shares_landed_removes_the_early_row(
        make_store: StoreFactory, tmp_path: Path) -> None:
    proc = spawn_store_child(CHILD, tmp_path)
    assert proc.stdout is not None
    kept = proc.stdout.readline().decode().strip()
    assert kept, "the child must reach the kill point"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    store = make_store()
    assert store.engine.unsettled_owed
    assert len(await store.engine.catalogue.unsettled()) == 2
    report = await store.verify()  # decides the unsettled rows first
    assert report.healthy, report
    assert [o.id for o in await store.list()] == [kept]
    assert await store.read(kept) == b"stored and answered, not yet settled"
    assert not store.engine.unsettled_owed
    # the unanswered put's three shares went with its row: no orphan is left
    assert report.orphans == 0
    # settled with the next transaction (the removal's, if it came after)
    assert set(await store.engine.catalogue.unsettled()) <= {kept}
    following = await store.put(b"next")
    assert await store.engine.catalogue.unsettled() == [following.id]
    await store.close()
