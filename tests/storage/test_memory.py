"""A serving twin gives the heap pages it freed back to the kernel (issue 23).

glibc keeps freed memory below the heap's top for reuse; only ``malloc_trim``
returns it. Here the heap is left as a long-running twin leaves it: many
small blocks freed, a few kept alive between them, so no threshold trims it.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys

import pytest

from storage.memory import tune_malloc
from tests.storage.conftest import StoreFactory

MiB = 1024 * 1024


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / MiB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
async def test_the_trim_loop_gives_freed_heap_pages_back(make_store: StoreFactory) -> None:
    try:
        ctypes.CDLL(None).malloc_trim  # noqa: B018 - glibc only
    except AttributeError:
        pytest.skip("not glibc")
    tune_malloc()
    store = make_store()
    blocks = [bytearray(2048) for _ in range(100_000)]  # ~200 MiB of heap, not mmap
    kept = blocks[::64]  # a live block every 128 KiB holds the heap's top up
    del blocks
    held = rss_mib()
    trim = asyncio.create_task(store.trim_loop(0.05))
    try:
        await asyncio.sleep(0.5)
    finally:
        trim.cancel()
        await asyncio.gather(trim, return_exceptions=True)
    after = rss_mib()
    print(f"RSS with the freed blocks held: {held:.0f} MiB; after the trim loop: {after:.0f}")
    assert held - after >= 100, (held, after)
    assert len(kept) == 1563
    await store.close()
