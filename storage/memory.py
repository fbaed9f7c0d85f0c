"""What keeps the store's memory bounded, and the thread pools it runs on.

``ByteBudget`` bounds the bytes of segments in flight over all puts;
``BufferPool`` reuses the encode buffers of full segments; ``tune_malloc`` and
``release_memory`` keep glibc from holding on to freed segment memory; and
``default_executors`` makes the CPU and I/O pools a store runs on (tuning malloc
first, once per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

MiB = 1024 * 1024


class ByteBudget:
    """A semaphore counted in bytes: bounds memory held by in-flight segments."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._cond = asyncio.Condition()

    async def acquire(self, amount: int) -> int:
        amount = min(amount, self.total)
        async with self._cond:
            await self._cond.wait_for(lambda: self._free >= amount)
            self._free -= amount
        return amount

    async def release(self, amount: int) -> None:
        async with self._cond:
            self._free += amount
            self._cond.notify_all()


class BufferPool:
    """Reusable encode buffers for full segments (ciphertext and parity: n blocks),
    at most ``keep`` of them kept, and only while a put streams.

    Why: a fresh segment buffer is zero-filled (and was, before ``tune_malloc``,
    a fresh mmap that the kernel faulted in page by page and unmapped again); on
    a 2-core VM that was ~0.7 ms of system CPU per MiB put, a tenth of the whole
    put. A buffer goes back only after every share written from it
    is durable (nothing else holds a view into it then); on any failure it is
    simply dropped, since a cancelled write may still be reading it. ``keep``
    is what the store's byte budget lets be in flight, so memory stays bounded.

    When the last put using the pool ends (``streaming``), its buffers are
    dropped: kept, they were ``keep`` x 6 MiB (30 MiB at 4 MiB segments) that no
    GET could use, on top of everything a GET right after a big PUT holds. Freed,
    that memory goes back to malloc's heap, where the next reader's segments
    reuse it.
    """

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self.keep = keep
        self._free: list[bytearray] = []
        self._users = 0  # puts streaming now (on the loop)
        self._lock = threading.Lock()  # taken in encode threads, given back on the loop

    @contextlib.contextmanager
    def streaming(self) -> Iterator[None]:
        """One put uses the pool for as long as this lasts (on the event loop)."""
        self._users += 1
        try:
            yield
        finally:
            self._users -= 1
            if not self._users:
                with self._lock:
                    self._free.clear()

    def take(self, size: int) -> bytearray | None:
        """A pooled buffer if ``size`` is the pooled size, else None (encode allocates)."""
        if size != self.size:
            return None
        return self.pop() or bytearray(size)

    def pop(self) -> bytearray | None:
        """A kept buffer, or None if none is free."""
        with self._lock:
            return self._free.pop() if self._free else None

    def give(self, buf: bytearray | None) -> None:
        """Keep ``buf`` for the next segment, if a put still streams and room is left."""
        if buf is None or len(buf) != self.size or not self._users:
            return
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buf)


def tune_malloc() -> None:
    """Keep segment-sized buffers in one reused heap instead of fresh mmaps.

    Every segment read or written allocates and frees a few MiB (share reads,
    the joined ciphertext, the plaintext). glibc's defaults serve buffers that
    big with a fresh mmap each, which the kernel zero-fills page by page and
    unmaps again: profiled, page faults and munmap were ~50 % of a 256 MiB
    get's CPU, the cipher under 10 %. Its *dynamic* threshold moves them into
    the heap after a while, but into one arena per thread, each keeping its
    freed memory (a 1 GiB put+get peaked at ~165 MiB RSS).

    So: buffers up to 16 MiB come from the heap, freed memory at its top is
    kept up to 64 MiB (less made the next segment fault its pages in again),
    and all threads share one arena, so what one thread frees the next reuses.
    Measured on the 2-core VM, 256 MiB at 4-of-6, one process per run: get
    495-941 MiB/s (1.3-2.8 ms CPU/MiB) against 313-356 (3.7-4.3) with a fixed
    1 MiB mmap threshold; put unchanged; 1 GiB put+get peak RSS 95 MiB (two
    arenas: 113-121); 4 KiB puts unchanged. Process-wide, harmless elsewhere,
    no-op off glibc.

    The arena limit binds only threads that allocate after it is set: a process
    calls this before it starts any thread (``twin serve`` does, first thing);
    ``default_executors`` calls it too, for stores opened by other programs.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 16 * MiB)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 * MiB)
        libc.mallopt(_M_ARENA_MAX, 1)


def release_memory() -> None:
    """Give the heap's free pages back to the kernel after a sweep over the store.

    Why: ``tune_malloc`` keeps up to 64 MiB of freed memory at the heap's top
    for the next segment, and a verify or repair (every share of every object
    read once) leaves freed memory scattered below the top too, which no
    threshold returns. ``malloc_trim(0)`` releases every free whole page of the
    heap (madvise), so RSS after a sweep goes back to what the twin holds.
    Milliseconds; no-op off glibc.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_malloc_tuned = False


def default_executors() -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
    tune_malloc()
    cpu = ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                             thread_name_prefix="twin-storage-cpu")
    io = ThreadPoolExecutor(max_workers=32, thread_name_prefix="twin-storage-io")
    return cpu, io
