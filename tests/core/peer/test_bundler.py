"""The sending side of bundles: alone when a lane is free, together when they queue,
one by one to a peer that takes no bundles; each caller gets its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import PeerRejected
from core.peer import bundler as bundler_module
from core.peer.bundler import Bundler, NoBundles
from core.peer.outbox import Pending
from phonebook.record import TwinRecord


def pending(n: int, size: int = 10) -> Pending:
    return Pending(bytes([n]) * 16, "bob", "message", {"text": str(n)}, 0.0, 0, 0.0, "", size)


class Fake:
    def __init__(self, bundles: bool = True) -> None:
        self.bundles = bundles
        self.singles: list[int] = []
        self.sent: list[list[int]] = []
        self.asked = 0
        self.gate = asyncio.Event()

    async def one(self, record: TwinRecord, item: Pending) -> str:
        await self.gate.wait()
        self.singles.append(item.uid[0])
        if item.uid[0] == 13:
            raise PeerRejected("no", code="invalid")
        return f"single {item.uid[0]}"

    async def many(self, record: TwinRecord, items: list[Pending]) -> list[str | Exception]:
        self.asked += 1
        await self.gate.wait()
        if not self.bundles:
            raise NoBundles("unknown_kind")
        self.sent.append([i.uid[0] for i in items])
        return [PeerRejected("no", code="invalid") if i.uid[0] == 13 else f"bundled {i.uid[0]}"
                for i in items]


RECORD = TwinRecord("bob", bytes(32))


async def test_a_lone_delivery_leaves_alone_and_a_queue_leaves_together() -> None:
    fake = Fake()
    b: Bundler[str] = Bundler(fake.one, fake.many)
    fake.gate.set()
    assert await b.deliver(RECORD, pending(1)) == "single 1"
    fake.gate.clear()
    calls = [asyncio.create_task(b.deliver(RECORD, pending(n))) for n in range(10, 30)]
    await asyncio.sleep(0)
    fake.gate.set()
    got = await asyncio.gather(*calls, return_exceptions=True)
    # all queued before a lane could take them: they leave together
    assert fake.singles == [1]
    assert fake.sent == [list(range(10, 30))]
    assert isinstance(got[3], PeerRejected)  # each caller its own outcome
    assert got[:3] + got[4:] == [f"bundled {n}" for n in range(10, 30) if n != 13]


async def test_while_a_send_is_in_flight_deliveries_gather_into_one_bundle() -> None:
    fake = Fake()
    b: Bundler[str] = Bundler(fake.one, fake.many)
    first = asyncio.create_task(b.deliver(RECORD, pending(1)))
    await asyncio.sleep(0)
    few = [asyncio.create_task(b.deliver(RECORD, pending(n))) for n in range(10, 20)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert fake.asked == 0  # fewer than GATHER wait: no second lane, they wait for the first
    more = [asyncio.create_task(b.deliver(RECORD, pending(n)))
            for n in range(20, 10 + bundler_module.GATHER + 5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert fake.asked == 1  # GATHER wait: another lane takes them all, in one bundle
    fake.gate.set()
    assert await first == "single 1"
    await asyncio.gather(*few, *more, return_exceptions=True)
    assert fake.sent == [list(range(10, 10 + bundler_module.GATHER + 5))]


async def test_a_lane_back_to_few_waiting_leaves_them_to_the_lane_in_flight() -> None:
    fake = Fake()
    single_back = asyncio.Event()

    async def one(record: TwinRecord, item: Pending) -> str:
        await single_back.wait()
        return f"single {item.uid[0]}"
    b: Bundler[str] = Bundler(one, fake.many)
    first = asyncio.create_task(b.deliver(RECORD, pending(1)))
    await asyncio.sleep(0)
    burst = [asyncio.create_task(b.deliver(RECORD, pending(n)))
             for n in range(20, 20 + bundler_module.GATHER)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert fake.asked == 1  # the burst's own lane
    late = [asyncio.create_task(b.deliver(RECORD, pending(n))) for n in range(100, 103)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert fake.asked == 1  # the late three wait
    single_back.set()  # the first lane comes back to three waiting, the burst's in flight
    assert await first == "single 1"
    for _ in range(5):
        await asyncio.sleep(0)
    assert fake.asked == 1  # it left them to the burst's lane
    fake.gate.set()
    await asyncio.gather(*burst, *late)
    assert fake.sent == [list(range(20, 20 + bundler_module.GATHER)), [100, 101, 102]]


async def test_a_bundle_holds_at_most_max_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundler_module, "MAX_BYTES", 25)
    fake = Fake()
    b: Bundler[str] = Bundler(fake.one, fake.many)
    calls = [asyncio.create_task(b.deliver(RECORD, pending(n))) for n in range(20, 30)]
    await asyncio.sleep(0)
    fake.gate.set()
    await asyncio.gather(*calls)
    assert fake.sent and all(len(s) <= 2 for s in fake.sent)


async def test_a_peer_without_bundles_gets_singles_and_is_remembered() -> None:
    fake = Fake(bundles=False)
    b: Bundler[str] = Bundler(fake.one, fake.many)
    for _ in range(2):
        calls = [asyncio.create_task(b.deliver(RECORD, pending(n))) for n in range(20, 30)]
        await asyncio.sleep(0)
        fake.gate.set()
        assert await asyncio.gather(*calls) == [f"single {n}" for n in range(20, 30)]
        fake.gate.clear()
    assert sorted(fake.singles) == sorted(list(range(20, 30)) * 2)
    assert fake.asked == 1 and fake.sent == []  # asked once, then not again
