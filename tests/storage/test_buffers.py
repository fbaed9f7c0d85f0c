"""Pooled encode buffers: reuse must never change a share, leak a byte, or outlive a failure."""

from __future__ import annotations

import asyncio
import os

import pytest

from storage.codec import SegmentKey, encode_segment, segment_buffer_size
from storage.errors import BackendUnavailable
from tests.storage.conftest import KiB, StoreFactory

SEG = 512 * KiB  # above the store's INLINE size, so segments go through the pool


def test_a_dirty_reused_buffer_gives_the_same_shares_as_a_fresh_one() -> None:
    # a short last segment leaves padding: stale bytes there would change the parity
    plain = os.urandom(SEG - 1001)
    sk = SegmentKey(b"k" * 32, b"p" * 16, b"o" * 16, 3, True, 4, 6)
    dirty = bytearray(b"\xff" * segment_buffer_size(len(plain), 4, 6))
    fresh, reused = encode_segment(sk, plain), encode_segment(sk, plain, dirty)
    assert fresh.headers == reused.headers
    assert [bytes(p) for p in fresh.payloads] == [bytes(p) for p in reused.payloads]


def test_a_buffer_of_the_wrong_size_is_refused() -> None:
    sk = SegmentKey(b"k" * 32, b"p" * 16, b"o" * 16, 0, True, 4, 6)
    try:
        encode_segment(sk, b"x" * 1000, bytearray(10))
    except ValueError:
        return
    raise AssertionError("a short buffer was accepted")


async def test_concurrent_puts_through_the_pool_read_back_intact(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    blobs = [os.urandom(SEG * 5 + i * 7919) for i in range(6)]
    refs = await asyncio.gather(*(store.put(b) for b in blobs))
    refs += [await store.put(b) for b in blobs]  # sequential: every buffer is a reused one
    for ref, blob in zip(refs, blobs + blobs, strict=True):
        assert await store.read(ref) == blob
    assert 0 < len(store.engine.buffers._free) <= store.engine.buffers.keep
    await store.close()


async def test_a_failed_segment_does_not_give_its_buffer_back(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG, write_quorum=6)
    await store.put(os.urandom(SEG))
    free = len(store.engine.buffers._free)
    victim = store.backends[0]

    async def broken(key: str, parts: object) -> None:
        raise BackendUnavailable(victim.name, "disk pulled")

    victim.put = broken  # type: ignore[method-assign]
    with pytest.raises(BackendUnavailable):  # a put below its write quorum fails
        await store.put(os.urandom(2 * SEG))
    # the failed segments' buffers were dropped, not pooled: a thread may still read them
    assert len(store.engine.buffers._free) <= free
    await store.close()
