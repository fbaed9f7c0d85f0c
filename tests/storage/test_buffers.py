"""Pooled encode buffers: reuse must never change a share, leak a byte, or outlive a failure."""

from __future__ import annotations

import asyncio
import os

import pytest

from storage.codec import SegmentKey, encode_filled, encode_segment, segment_buffer_size
from storage.errors import BackendUnavailable
from storage.memory import BufferPool
from tests.storage.conftest import KiB, StoreFactory, astream

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


def test_a_filled_buffer_gives_the_same_shares_as_encode_segment() -> None:
    # in place, in a dirty pooled buffer, for a full segment and a short last one
    for size, last in ((SEG, False), (SEG - 1001, True)):
        plain = os.urandom(size)
        sk = SegmentKey(b"k" * 32, b"p" * 16, b"o" * 16, 3, last, 4, 6)
        buf = bytearray(b"\xff" * segment_buffer_size(SEG, 4, 6))
        buf[:size] = plain
        fresh, filled = encode_segment(sk, plain), encode_filled(sk, buf, size)
        assert fresh.headers == filled.headers
        assert [bytes(p) for p in fresh.payloads] == [bytes(p) for p in filled.payloads]


async def test_concurrent_puts_through_the_pool_read_back_intact(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    blobs = [os.urandom(SEG * 5 + i * 7919) for i in range(6)]
    refs = await asyncio.gather(*(store.put(b) for b in blobs))
    # streamed, in pieces that straddle the segments: read into pooled buffers
    refs += [await store.put(astream(iter([b[:1000], b[1000:SEG + 3], b[SEG + 3:]])))
             for b in blobs]
    for ref, blob in zip(refs, blobs + blobs, strict=True):
        assert await store.read(ref) == blob
    assert store.engine.buffers._free == []  # no put streams: nothing kept for the next one
    await store.close()


async def test_a_long_stream_reuses_its_buffers(make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    pool = store.engine.buffers
    reused = 0
    pop = pool.pop

    def counted() -> bytearray | None:
        nonlocal reused
        buf = pop()
        reused += buf is not None
        return buf

    pool.pop = counted  # type: ignore[method-assign]
    blob = os.urandom(SEG * 20)
    ref = await store.put(astream(iter([blob[i:i + 64 * KiB]
                                        for i in range(0, len(blob), 64 * KiB)])))
    assert await store.read(ref) == blob
    # fresh ones only for what is in flight at once: depth, plus the segment being
    # read and the one held back to learn whether it is the last
    assert reused >= 20 - (store.engine.depth + 2), reused
    await store.close()


async def test_the_pool_keeps_buffers_while_any_put_streams() -> None:
    pool = BufferPool(1000, keep=2)
    with pool.streaming():
        with pool.streaming():
            pool.give(bytearray(1000))
        assert pool.pop() is not None  # one put still streams: kept
        pool.give(bytearray(1000))
        pool.give(bytearray(1000))
        pool.give(bytearray(1000))
        assert len(pool._free) == 2  # at most keep
    assert pool._free == []
    pool.give(bytearray(1000))  # given back after the last put ended: dropped
    assert pool.pop() is None


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
