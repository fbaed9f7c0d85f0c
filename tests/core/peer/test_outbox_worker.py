"""The outbox worker: what ``send`` queues leaves without the table being read back;
the table is scanned for what memory does not know (earlier rows, retries)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.errors import Unavailable
from core.peer import bundle
from core.peer import peer as peer_module
from core.peer.peer import Peer
from core.service import Service
from phonebook.record import TwinRecord
from tests.twins import twin_cli

Pair = tuple[Service, Service]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """Per test, not the module's: the worker's wake-up event belongs to one loop."""
    twin_cli(tmp_path / "alice", "init", "--name", "alice", "--json")
    twin_cli(tmp_path / "bob", "init", "--name", "bob", "--json",
             "--phonebook", str(tmp_path / "alice" / "phonebook.db"))
    alice, bob = Service.open(tmp_path / "alice"), Service.open(tmp_path / "bob")
    yield alice, bob
    alice.close()
    bob.close()


class Counting:
    """Fakes the network (every envelope acked, or refused while ``down``) and
    counts the worker's scans of the table."""

    def __init__(self, peer: Peer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[bytes] = []
        self.bundles = 0
        self.scans = 0
        self.down = False
        real_due = peer.outbox.due

        async def exchange(record: TwinRecord, kind: str, value: Any,
                           uid: bytes) -> peer_module._Opened:
            await asyncio.sleep(0)
            if self.down:
                raise Unavailable("peer down")
            if kind == bundle.KIND:  # what queued meanwhile leaves together
                self.bundles += 1
                self.sent.extend(item["uid"] for item in value)
                return peer_module._Opened([bundle.ok({"stored": True}) for _ in value])
            self.sent.append(uid)
            return peer_module._Opened({"stored": True})

        async def due(*args: Any, **kwargs: Any) -> Any:
            self.scans += 1
            return await real_due(*args, **kwargs)
        monkeypatch.setattr(peer, "_exchange", exchange)
        monkeypatch.setattr(peer.outbox, "due", due)
        monkeypatch.setattr(peer, "_forget_records", lambda: None)


@contextlib.asynccontextmanager
async def worker(peer: Peer) -> AsyncIterator[None]:
    task = asyncio.create_task(peer.run_outbox())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until_empty(peer: Peer, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while await peer.outbox.list():
        assert time.monotonic() < deadline, "the outbox did not drain"
        await asyncio.sleep(0.02)


async def test_sent_messages_leave_without_a_scan_each(
        pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, _ = pair
    fake = Counting(alice.peer, monkeypatch)
    async with worker(alice.peer):
        await asyncio.sleep(0.05)  # the start-up scan
        scans = fake.scans
        uids = await asyncio.gather(*(alice.peer.send("bob", "message", {"text": str(i)})
                                      for i in range(100)))
        await until_empty(alice.peer)
    assert sorted(u.hex() for u in fake.sent) == sorted(uids)  # each once
    assert 0 < fake.bundles < 100  # a hundred at once do not leave one by one
    # the poll (1 s) may scan while the test runs; not one scan per message or ack
    assert fake.scans - scans <= 3


async def test_a_failed_delivery_is_retried_from_the_table(
        pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, _ = pair
    fake = Counting(alice.peer, monkeypatch)
    monkeypatch.setattr(alice.peer, "retry_schedule", [0.2])
    async with worker(alice.peer):
        fake.down = True
        uid = await alice.peer.send("bob", "message", {"text": "later"})
        deadline = time.monotonic() + 5
        while not any(p.attempts for p in await alice.peer.outbox.list()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        fake.down = False
        started = time.monotonic()
        await until_empty(alice.peer)
        # due 0.2 s after the failure, well before the next 1 s poll would find it
        assert time.monotonic() - started < 0.9
    assert [u.hex() for u in fake.sent] == [uid]


async def test_rows_queued_before_the_worker_started_are_sent(
        pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, _ = pair
    fake = Counting(alice.peer, monkeypatch)
    uids = [(await alice.peer.outbox.enqueue("bob", "message", {"text": str(i)})).hex()
            for i in range(5)]
    async with worker(alice.peer):
        await until_empty(alice.peer)
    assert sorted(u.hex() for u in fake.sent) == sorted(uids)


async def test_more_than_the_slots_wait_in_the_table(
        pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``MAX_INFLIGHT`` deliveries at once, the rest are left to the table
    and taken by a scan as slots free up: none lost, none sent twice."""
    alice, _ = pair
    monkeypatch.setattr(peer_module, "MAX_INFLIGHT", 4)
    fake = Counting(alice.peer, monkeypatch)
    async with worker(alice.peer):
        uids = await asyncio.gather(*(alice.peer.send("bob", "message", {"text": str(i)})
                                      for i in range(40)))
        await until_empty(alice.peer)
    assert sorted(u.hex() for u in fake.sent) == sorted(uids)
