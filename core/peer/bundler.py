"""The sending side of bundles: the outbox's deliveries to one peer leave together.

Like the client's batches (``core.peer.client``), but one level up, before
sealing: at most ``LANES`` sends per peer run at once, and whatever queued
while they ran leaves in the next one as one bundle (``core.peer.bundle``) of
up to ``MAX_ITEMS`` items and ``MAX_BYTES`` of encoded values, sealed and
signed once, answered by one ack. A delivery to a peer with nothing in flight
leaves at once, alone, as an envelope of its own: an idle twin waits for
nothing and sends what it always sent.

Under load the bundles are made big: while a send is in flight, another lane
opens only once ``GATHER`` deliveries wait, and a lane coming back to fewer
than that leaves them to the lanes still in flight. Every lane opened at once
(as before) cut the bench's stream into bundles of ~8 items; each bundle costs
both twins a signature, a verification, an HTTP exchange and a thread hop per
group commit on the receiver, whatever its size. The price is latency under
moderate load: a delivery may wait for the send in flight to come back (one
round trip), never longer, because a lane only stops while another runs.

A peer that cannot take a bundle (``NoBundles``: an older twin without the
kind, or one whose ``peer.max_envelope`` is smaller) is sent single envelopes
for ``SINGLE_FOR`` seconds, then asked again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from core.errors import Unavailable
from core.peer.bundle import MAX_BYTES, MAX_ITEMS
from core.peer.outbox import Pending
from phonebook.record import TwinRecord

T = TypeVar("T")
LANES = 4  # sends per peer at once, like the client's batch lanes
GATHER = 16  # deliveries waiting that open another lane while one is in flight
MAX_PEERS = 1024  # queues kept; idle ones are dropped first
SINGLE_FOR = 600.0  # seconds a peer that took no bundle gets single envelopes

SendOne = Callable[[TwinRecord, Pending], Awaitable[T]]
# one outcome per item, in order: what ``SendOne`` would have returned, or raised
SendMany = Callable[[TwinRecord, list[Pending]], Awaitable[list[T | Exception]]]


class NoBundles(Exception):
    """The peer refused the bundle itself (not its items): send them one by one."""


class _Queue(Generic[T]):
    def __init__(self) -> None:
        self.waiting: deque[tuple[Pending, asyncio.Future[T]]] = deque()
        self.lanes = 0


class Bundler(Generic[T]):
    """Per peer: a queue of deliveries and the sends that drain it."""

    def __init__(self, one: SendOne[T], many: SendMany[T]) -> None:
        self._one, self._many = one, many
        self._queues: dict[str, _Queue[T]] = {}
        self._single_until: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def deliver(self, record: TwinRecord, item: Pending) -> T:
        """What ``one(record, item)`` returns (or raises), possibly sent in a bundle."""
        queue = self._queues.get(record.name)
        if queue is None:
            if len(self._queues) >= MAX_PEERS:
                self._queues = {n: q for n, q in self._queues.items() if q.lanes or q.waiting}
            queue = self._queues[record.name] = _Queue()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue.waiting.append((item, future))
        if queue.lanes == 0 or (queue.lanes < LANES and len(queue.waiting) >= GATHER):
            queue.lanes += 1
            task = asyncio.create_task(self._drain(record, queue),
                                       name=f"peer-bundle {record.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _drain(self, record: TwinRecord, queue: _Queue[T]) -> None:
        try:
            while queue.waiting:
                batch = _take(queue)
                if not batch:
                    continue
                try:
                    outcomes = await self._send(record, [item for item, _ in batch])
                except BaseException:  # cancelled: every waiter learns it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(
                                Unavailable(f"sending to {record.name} was cancelled"))
                    raise
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                if queue.lanes > 1 and len(queue.waiting) < GATHER:
                    return  # a lane in flight takes them when it comes back: one bundle
        finally:
            queue.lanes -= 1

    async def _send(self, record: TwinRecord, items: list[Pending]) -> list[T | Exception]:
        if len(items) > 1 and self._single_until.get(record.name, 0.0) <= time.monotonic():
            try:
                return await self._many(record, items)
            except NoBundles:
                if len(self._single_until) >= MAX_PEERS:
                    self._single_until.clear()
                self._single_until[record.name] = time.monotonic() + SINGLE_FOR
            except Exception as exc:
                return [exc] * len(items)
        return list(await asyncio.gather(*(self._outcome(record, item) for item in items)))

    async def _outcome(self, record: TwinRecord, item: Pending) -> T | Exception:
        try:
            return await self._one(record, item)
        except Exception as exc:
            return exc


def _take(queue: _Queue[T]) -> list[tuple[Pending, asyncio.Future[T]]]:
    """The next bundle's worth of waiting deliveries (their callers still waiting)."""
    batch: list[tuple[Pending, asyncio.Future[T]]] = []
    size = 0
    while queue.waiting and len(batch) < MAX_ITEMS:
        item, future = queue.waiting[0]
        if batch and size + item.size > MAX_BYTES:
            break
        queue.waiting.popleft()
        if not future.done():
            batch.append((item, future))
            size += item.size
    return batch
