"""The store while a backend hangs: six real redis-servers, one SIGSTOPped.

A stopped server still accepts connections (the kernel does) and never
answers: the fault that used to cost every call a 10 s timeout plus a retry.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable

import pytest

import storage.engine
from storage import BackendUnavailable, Store
from storage.engine import NS_OBJECT, share_key
from tests.servers import DelayProxy, Servers
from tests.storage.conftest import KiB, MiB, StoreFactory


async def _timed(what: object) -> tuple[object, float]:
    started = time.perf_counter()
    result = await what  # type: ignore[misc]
    return result, time.perf_counter() - started


async def _until(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_4_mib_put_and_get_stay_fast_with_each_backend_in_turn_hung(
        make_store: StoreFactory, redises: tuple[Servers, list[dict[str, str]]]) -> None:
    servers, specs = redises
    store = make_store(segment_size=4 * MiB, specs=specs)
    stored = []
    worst = {"get": 0.0, "first put": 0.0, "put": 0.0}
    for i in range(len(servers)):
        data = os.urandom(4 * MiB)
        ref = await store.put(data)  # all up: its shares use every backend
        stored.append((ref, data))
        servers[i].hang()
        got, took = await _timed(store.read(ref))
        assert got == data
        assert took <= 1.5, f"GET with r{i} hung took {took:.2f} s"
        worst["get"] = max(worst["get"], took)
        fresh = os.urandom(4 * MiB)
        ref2, took = await _timed(store.put(fresh))
        assert took <= 3.0, f"first PUT with r{i} hung took {took:.2f} s"
        worst["first put"] = max(worst["first put"], took)
        assert store.monitor.is_down(f"r{i}")
        ref3, took = await _timed(store.put(fresh[::-1]))
        assert took <= 1.0, f"PUT after detection with r{i} hung took {took:.2f} s"
        worst["put"] = max(worst["put"], took)
        got, took = await _timed(store.read(ref2))
        assert got == fresh and took <= 1.5
        stored += [(ref2, fresh), (ref3, fresh[::-1])]
        summary = store.monitor.summary()
        assert summary.readable and summary.writable and summary.down == [f"r{i}"]
        servers[i].resume()
        await _until(lambda i=i: not store.monitor.is_down(f"r{i}"))
    print(f"4 MiB with one backend hung, slowest: {worst}")
    for ref, data in stored:  # never wrong data
        assert await store.read(ref) == data
    assert await store.engine.catalogue.degraded_page(), \
        "objects stored while a backend was down are queued for repair"
    await store.close()


async def test_objects_written_during_an_outage_are_repaired_when_it_ends(
        make_store: StoreFactory, redises: tuple[Servers, list[dict[str, str]]]) -> None:
    servers, specs = redises
    store = make_store(segment_size=1 * MiB, specs=specs)
    maintain = asyncio.create_task(store.maintain())
    try:
        servers[2].hang()
        blobs = [os.urandom(300 * 1024) for _ in range(3)] + [os.urandom(2000)]
        refs = [await store.put(b) for b in blobs]
        assert (await store.verify()).degraded  # 5 of 6 shares while r2 is hung
        servers[2].resume()

        async def healthy() -> bool:
            return (await store.verify()).healthy

        deadline = time.monotonic() + 10
        while not await healthy():
            assert time.monotonic() < deadline, "not repaired without a command"
            await asyncio.sleep(0.3)
        for ref, data in zip(refs, blobs, strict=True):
            assert await store.read(ref) == data
    finally:
        maintain.cancel()
        await asyncio.gather(maintain, return_exceptions=True)
        await store.close()


async def test_with_three_hung_status_says_no_reads_no_writes_and_refused_puts_leave_no_orphans(
        make_store: StoreFactory, redises: tuple[Servers, list[dict[str, str]]]) -> None:
    servers, specs = redises
    store = make_store(segment_size=1 * MiB, specs=specs)
    maintain = asyncio.create_task(store.maintain())
    try:
        for i in (0, 2, 4):
            servers[i].hang()
        for size in (3 * MiB, 2000):  # a streamed put and a batched small put
            started = time.perf_counter()
            with pytest.raises(BackendUnavailable):
                await store.put(os.urandom(size))
            assert time.perf_counter() - started <= 4.0
        summary = store.monitor.summary()
        assert not summary.readable and not summary.writable
        assert summary.down == ["r0", "r2", "r4"]
        assert (await store.list()) == []
        for i in (0, 2, 4):
            servers[i].resume()
        await _until(lambda: not store.monitor.down and not store.engine.orphans_left, 10)
        report = await store.verify()
        assert report.orphans == 0, report
    finally:
        maintain.cancel()
        await asyncio.gather(maintain, return_exceptions=True)
        await store.close()


async def test_a_flushed_backend_is_found_and_refilled_by_the_scrub(
        make_store: StoreFactory, redises: tuple[Servers, list[dict[str, str]]]) -> None:
    servers, specs = redises
    store = make_store(segment_size=256 * 1024, specs=specs)
    blobs = [os.urandom(n) for n in (100, 300 * 1024, 600 * 1024)]
    refs = [await store.put(b) for b in blobs]
    servers[0].admin.set(f"s/{'ab' * 16}/0/0", b"left by a put that failed")  # an orphan
    maintain = asyncio.create_task(store.maintain(scrub_interval=1))
    try:
        servers[3].admin.flushall()
        deadline = time.monotonic() + 10
        while not (await store.verify()).healthy:
            assert time.monotonic() < deadline, "the scrub did not refill the flushed backend"
            # (healthy: nothing degraded and no orphan: the scrub removed that too)
            await asyncio.sleep(0.5)
        for ref, data in zip(refs, blobs, strict=True):
            assert await store.read(ref) == data
    finally:
        maintain.cancel()
        await asyncio.gather(maintain, return_exceptions=True)
        await store.close()


async def test_repair_reports_what_it_could_not_restore(
        make_store: StoreFactory, redises: tuple[Servers, list[dict[str, str]]]) -> None:
    servers, specs = redises
    store: Store = make_store(segment_size=64 * 1024, specs=specs)
    ref = await store.put(os.urandom(100 * 1024))
    servers[1].admin.flushall()
    servers[1].admin.config_set("maxmemory", 1)  # full: nothing can be written back
    servers[1].admin.config_set("maxmemory-policy", "noeviction")
    report = await store.repair()
    assert report.failures and all(ref.id in f for f in report.failures)
    health = {h.name: h for h in await store.health()}
    assert health["r1"].reachable and not health["r1"].writable
    await store.close()


async def test_a_slow_backend_adds_little_to_a_large_get(
        make_store: StoreFactory, redises: tuple[Servers, list[dict[str, str]]]) -> None:
    """+200 ms per request on one backend: reads stop waiting on it."""
    servers, specs = redises
    proxy = await DelayProxy(servers[0].port, 0.0).start()
    specs[0] = {**specs[0], "location": f"redis://127.0.0.1:{proxy.port}/0"}
    store = make_store(segment_size=1 * MiB, specs=specs)
    try:
        data = os.urandom(64 * MiB)
        ref = await store.put(data)
        while "r0" not in [b.name for b in store.engine.placement_order(ref.id)[:store.k]]:
            ref = await store.put(data)  # r0 must hold a primary share, read by default

        async def best_of(runs: int) -> float:
            times = []
            for _ in range(runs):
                got, took = await _timed(store.read(ref))
                assert got == data
                times.append(took)
            return min(times)

        fast = await best_of(3)
        proxy.delay = 0.2
        await store.read(ref)  # learns which backend is slow
        slow = await best_of(3)
        print(f"64 MiB GET: {fast:.3f} s; with +200 ms on one backend: {slow:.3f} s")
        # Waiting on the slow backend adds 200 ms per wave of segment reads: seconds
        # for 64 segments. The 20 % is a loaded machine's noise (a fixed 0.1 s failed
        # 2 runs in 8 at load 6-8, old code and new alike).
        assert slow <= fast * 1.2 + 0.1
        assert store.monitor.slow("r0")
    finally:
        await store.close()
        await proxy.close()


async def test_shares_cut_off_after_the_quorum_leave_nothing_behind(
        make_store: StoreFactory, redises: tuple[Servers, list[dict[str, str]]]) -> None:
    """A write cut off after the write quorum still lands when its backend is slow,
    not dead. It is queued and removed when the backend is back, unless a repair has
    put that share there again since. Left alone it became an orphan once its object
    was deleted: the soaks' verifies found 1-5 of them under load."""
    servers, specs = redises
    proxy = await DelayProxy(servers[3].port, 0.0).start()
    specs[3] = {**specs[3], "location": f"redis://127.0.0.1:{proxy.port}/0"}
    store = make_store(segment_size=1 * MiB, specs=specs)
    maintain = asyncio.create_task(store.maintain())
    try:
        kept, refs = [], []
        for size in (2500, 300_000) * 2:  # batched small puts and streamed ones
            proxy.delay = 0.0
            await _until(lambda: not store.monitor.is_down("r3"), 10)  # a probe passed
            proxy.delay = 1.0  # well past the grace
            queued = set(store.engine.orphans_left)  # maintain may drain earlier ones meanwhile
            data = os.urandom(size)
            ref = await store.put(data)
            assert store.monitor.is_down("r3") and set(store.engine.orphans_left) - queued
            if len(refs) < 2:
                kept.append(data)
                refs.append(ref)
            else:  # deleted while the cut-off shares are still on their way
                await store.delete(ref)
        await asyncio.sleep(1.5)  # the writes cut off have landed
        proxy.delay = 0.0
        await _until(lambda: not store.monitor.down and not store.engine.orphans_left
                     and not store.engine.repair_owed, 10)
        deadline = time.monotonic() + 10
        while not (report := await store.verify()).healthy:
            assert time.monotonic() < deadline, f"not repaired: {report}"
            await asyncio.sleep(0.2)
        assert report.orphans == 0, report
        for ref, data in zip(refs, kept, strict=True):
            assert await store.read(ref) == data
            await store.delete(ref)
        report = await store.verify()
        assert report.orphans == 0, report
    finally:
        maintain.cancel()
        await asyncio.gather(maintain, return_exceptions=True)
        await store.close()
        await proxy.close()


async def test_shares_past_their_deadline_that_land_later_leave_nothing_behind(
        make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A share write that misses its deadline is not dead either: a local backend keeps
    it in its group commit and writes it once its disk answers. On a loaded machine the
    quorum itself took over a second, so the grace (as long as the quorum took) outlasted
    the 2 s deadline and the slow write failed by its deadline instead of being cut off:
    its share was not queued, landed after the put returned, and outlived its object
    when that was deleted before the self-repair came to it (the soak's alice, local4)."""
    monkeypatch.setattr(storage.engine, "GRACE", 30.0)  # the deadline ends the write
    store = make_store(segment_size=64 * KiB)
    slow = store.engine.by_name["b3"]
    late: list[str] = []
    slow._wlock.acquire()  # type: ignore[attr-defined]  # its writer waits on the disk
    try:
        # a batched small put and a streamed one, both writing to b3 before it is down
        refs = await asyncio.gather(store.put(os.urandom(3000)),
                                    store.put(os.urandom(300 * KiB)))
        assert store.monitor.is_down("b3")
        for ref in refs:
            m = await store.engine.manifest(ref.id)
            i = [b.name for b in store.engine.placement_order(ref.id)].index("b3")
            assert m.segments[0].placement[i] == ""  # past its deadline: not placed
            late.append(share_key(NS_OBJECT, ref.id, 0, i))
            await store.delete(ref)  # before any repair: the catalogue places none on b3
    finally:
        slow._wlock.release()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while not all([await slow.stat(key) for key in late]):
        assert time.monotonic() < deadline, "the writes past their deadline never landed"
        await asyncio.sleep(0.05)
    maintain = asyncio.create_task(store.maintain())
    try:
        await _until(lambda: not store.monitor.down and not store.engine.orphans_left, 10)
        report = await store.verify()
        assert report.orphans == 0, report
        assert [await slow.stat(key) for key in late] == [None, None]
    finally:
        maintain.cancel()
        await asyncio.gather(maintain, return_exceptions=True)
        await store.close()


async def test_a_stall_every_backend_shares_is_waited_out_within_a_bound(
        make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stall of the machine (every local backend's disk at once) is no backend's
    fault: marking all six down made every put fail ("0 of 6 shares") until a probe
    passed. The deadline stretches while no backend answers, up to ``STALL_CAP``
    times itself; past that the backends are down, as on a hung machine."""
    monkeypatch.setattr(storage.engine, "deadline", lambda size: 0.4)
    store = make_store(segment_size=64 * KiB)
    await store.put(os.urandom(3000))
    backends = list(store.engine.by_name.values())
    locks = [b._wlock for b in backends]  # type: ignore[attr-defined]
    for lock in locks:  # every writer waits on the disk
        lock.acquire()
    try:
        data = os.urandom(300 * KiB)
        put = asyncio.create_task(store.put(data))
        small = asyncio.create_task(store.put(b"small" * 100))
        await asyncio.sleep(1.0)  # two and a half deadlines
        assert not put.done() and not small.done() and not store.monitor.down
    finally:
        for lock in locks:
            lock.release()
    ref, small_ref = await put, await small
    assert not store.monitor.down
    assert await store.read(ref) == data and await store.read(small_ref) == b"small" * 100

    for lock in locks:
        lock.acquire()
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await store.put(os.urandom(300 * KiB))
        assert time.monotonic() - started < 0.4 * storage.engine.STALL_CAP + 1.0
        assert len(store.monitor.down) == len(backends)
    finally:
        for lock in locks:
            lock.release()
    await store.close()


async def test_reads_waiting_their_turn_behind_others_do_not_mark_backends_down(
        make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Share reads queue in this process (the local backends' threads) before a
    backend sees them. 300 concurrent reads on a loaded CI machine queued past the
    2.2 s deadline while every backend answered; all six were marked down and a read
    failed with "2 of 4 needed" (stop 34's CI). A call whose backend answers others
    meanwhile is waiting its turn: its deadline stretches, up to ``STALL_CAP``."""
    store = make_store(segment_size=64 * KiB)
    refs = [await store.put(os.urandom(3000 + i)) for i in range(60)]
    monkeypatch.setattr(storage.engine, "deadline", lambda size: 0.6)
    one_at_a_time = threading.Lock()
    for backend in store.engine.by_name.values():
        read = backend._read  # type: ignore[attr-defined]

        def queued(key: str, read: Callable[[str], bytes | None] = read) -> bytes | None:
            with one_at_a_time:  # every share read waits its turn: 240-360 of 3 ms each
                time.sleep(0.003)
                return read(key)
        monkeypatch.setattr(backend, "_read", queued)
    started = time.monotonic()
    got = await asyncio.gather(*(store.read(ref) for ref in refs))
    took = time.monotonic() - started
    assert [len(g) for g in got] == [3000 + i for i in range(60)]
    assert took > 0.6, f"the reads never waited past a deadline ({took:.2f} s): no test"
    assert not store.monitor.down
    await store.close()
