"""Group commit: many concurrent writers share one batch and one fsync.

Callers submit an operation and wait; one flusher task drains everything
queued so far into a single call of ``run_batch`` in a worker thread (which
writes, fsyncs once, and commits), then wakes every caller with its own result.
While one batch is being synced the next one accumulates, so throughput grows
with concurrency instead of being capped at one fsync per write.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        executor: Executor,
        *,
        max_items: int = 512,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._run_batch = run_batch
        self._executor = executor
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._queue: deque[tuple[T, int, asyncio.Future[R]]] = deque()
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T, size: int = 0) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, size, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await asyncio.shield(fut)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch: list[tuple[T, int, asyncio.Future[R]]] = []
            total = 0
            while self._queue and len(batch) < self._max_items:
                if batch and total + self._queue[0][1] > self._max_bytes:
                    break
                entry = self._queue.popleft()
                batch.append(entry)
                total += entry[1]
            items = [e[0] for e in batch]
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, items)
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
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
