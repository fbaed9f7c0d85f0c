"""Group commit: many concurrent writers share one batch and one fsync.

Callers submit an item and wait; one flusher task drains everything queued so
far into a single call of ``run`` (which, on its worker thread, writes, fsyncs
once, and commits), then wakes every caller with its own result, in order.
While one batch is being synced the next one accumulates, so throughput grows
with concurrency instead of being capped at one fsync per write.

This is the only implementation of that queue-flush-wake loop in the twin.
Why one: the storage backends and catalogue, the peer tables (``core.db.Group``)
and mail metadata (``core.mail.commit``) each had their own copy, and their
copies had drifted (one shielded its waiters, one named its task, one left them
waiting forever if its flusher was cancelled). Those are now adapters that say
only *what* a batch does and on which thread. It lives here, in the lowest
layer, because storage must not import core while core may import storage; it
imports nothing of either.

``run`` is an async function taking the batch's items and returning one
result per item: ``in_thread(executor, fn)`` runs a plain ``fn(items)`` on an
executor (storage's use), and a ``core.db.Database`` user passes
``lambda items: db.run(fn, items)`` to run on the database's own thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_ITEMS = 512
MAX_BYTES = 64 * 1024 * 1024


def in_thread(executor: Executor,
              fn: Callable[[list[T]], list[R]]) -> Callable[[list[T]], Awaitable[list[R]]]:
    """``fn(items)`` run on ``executor``: a ``run`` for ``GroupCommit``."""
    async def run(items: list[T]) -> list[R]:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, items)
    return run


class GroupCommit(Generic[T, R]):
    """Batches concurrent ``submit``s into one ``run`` call; each caller gets its own result.

    A batch takes what is queued, up to ``max_items`` items and ``max_bytes`` of
    their declared sizes (one item larger than that still goes, alone). If ``run``
    raises, every caller of that batch gets the exception and the next batch runs
    as usual; a ``BaseException`` (the flusher cancelled) fails the batch's
    callers with ``RuntimeError`` and is re-raised. With ``shield`` (the default),
    a caller that is cancelled leaves its item in the batch: it may be committed
    anyway, and the batch is never torn. ``name`` names the flusher task."""

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R]]],
        *,
        max_items: int = MAX_ITEMS,
        max_bytes: int = MAX_BYTES,
        shield: bool = True,
        name: str | None = None,
    ) -> None:
        self._run = run
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._shield = shield
        self._name = name
        self._queue: deque[tuple[T, int, asyncio.Future[R]]] = deque()
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T, size: int = 0) -> R:
        """``item``'s result, once the batch holding it has run (committed)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, size, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name=self._name)
        return await (asyncio.shield(fut) if self._shield else fut)

    async def _flush(self) -> None:
        while self._queue:
            batch: list[tuple[T, int, asyncio.Future[R]]] = []
            total = 0
            while self._queue and len(batch) < self._max_items:
                if batch and total + self._queue[0][1] > self._max_bytes:
                    break
                entry = self._queue.popleft()
                batch.append(entry)
                total += entry[1]
            try:
                results = await self._run([e[0] for e in batch])
            except BaseException as exc:  # every waiter learns why its write failed
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc if isinstance(exc, Exception) else
                                          RuntimeError("batch cancelled"))
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, _, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    async def drain(self) -> None:
        """Wait until everything submitted so far has run."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
