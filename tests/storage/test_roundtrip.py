"""What goes in comes out: sizes around segment boundaries, streams, ranges, concurrency."""

from __future__ import annotations

import asyncio
import io
import os
import resource
from collections.abc import Iterator

import pytest

from storage import ObjectNotFound, ObjectRef
from tests.storage.conftest import (
    KiB,
    MiB,
    StoreFactory,
    astream,
    digest_of,
    digest_stream,
    pseudo_random,
)

SEG = 64 * KiB


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, SEG - 1, SEG, SEG + 1, 2 * SEG - 1,
                                  2 * SEG, 2 * SEG + 1, 5 * SEG + 7])
async def test_round_trip_sizes_around_segment_boundaries(make_store: StoreFactory,
                                                          size: int) -> None:
    store = make_store(segment_size=SEG)
    data = os.urandom(size)
    ref = await store.put(data)
    assert ref.size == size
    assert await store.read(ref) == data
    info = await store.stat(ref)
    assert (info.size, info.segments, info.k, info.n) == (size, -(-size // SEG), 4, 6)
    await store.close()


async def test_async_iterable_and_file_sources_give_the_same_bytes(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    size = 3 * SEG + 123
    expected = digest_of(pseudo_random(7, size, chunk=1000))  # odd chunks straddle segments
    ref1 = await store.put(astream(pseudo_random(7, size, chunk=1000)))
    ref2 = await store.put(io.BytesIO(b"".join(pseudo_random(7, size))))
    for ref in (ref1, ref2):
        assert await digest_stream(store.get(ref)) == (expected, size)
    await store.close()


async def test_range_reads_across_segment_boundaries(make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    data = os.urandom(4 * SEG + 100)
    ref = await store.put(data)
    ranges = [(0, 1), (SEG - 1, SEG + 1), (SEG, 2 * SEG), (10, 3 * SEG + 5),
              (4 * SEG, 4 * SEG + 100), (5, 5), (len(data) - 1, None), (100, 10**12)]
    for start, end in ranges:
        assert await store.read(ref, start, end) == data[start:end], (start, end)
    with pytest.raises(ValueError):
        await store.read(ref, -1)
    with pytest.raises(ValueError):
        await store.read(ref, 10, 5)
    await store.close()


async def test_ranged_get_decodes_only_covering_segments(make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    ref = await store.put(os.urandom(10 * SEG))
    seen: list[int] = []
    original = store.engine.read_segment

    async def spy(m, key, seg, ns="s"):  # type: ignore[no-untyped-def]
        seen.append(seg)
        return await original(m, key, seg, ns)

    store.engine.read_segment = spy  # type: ignore[method-assign]
    await store.read(ref, 3 * SEG + 5, 4 * SEG + 5)
    assert sorted(seen) == [3, 4]
    await store.close()


async def test_a_reader_can_stop_early(make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    data = os.urandom(8 * SEG)
    ref = await store.put(data)
    stream = await store.get(ref)
    assert stream.size == len(data)
    async for chunk in stream:
        assert chunk == data[:SEG]
        break
    await stream.aclose()
    assert await store.read(ref) == data
    await store.close()


async def test_missing_object_is_reported_before_any_byte(make_store: StoreFactory) -> None:
    store = make_store()
    ghost = ObjectRef("0" * 32, 10)
    with pytest.raises(ObjectNotFound):
        await store.get(ghost)
    with pytest.raises(ObjectNotFound):
        await store.stat(ghost)
    with pytest.raises(ObjectNotFound):
        await store.delete(ghost)
    await store.close()


async def test_delete_makes_object_invisible_and_frees_its_shares(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    keep = await store.put(b"keep me")
    gone = await store.put(os.urandom(2 * SEG))
    await store.delete(gone)
    with pytest.raises(ObjectNotFound):
        await store.read(gone)
    assert [i.id for i in await store.list()] == [keep.id]
    report = await store.verify()
    assert report.orphans == 0 and report.healthy
    await store.close()


async def test_many_concurrent_puts_and_gets(make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    blobs = [os.urandom(n) for n in range(0, 300 * 700, 700)]
    refs = await asyncio.gather(*(store.put(b) for b in blobs))
    assert len({r.id for r in refs}) == len(blobs)
    got = await asyncio.gather(*(store.read(r) for r in refs))
    assert got == blobs
    assert len(await store.list()) == len(blobs)
    await store.close()


async def test_objects_survive_reopening(make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    data = os.urandom(3 * SEG + 1)
    ref = await store.put(data)
    await store.close()
    again = make_store(segment_size=2 * SEG)  # a new segment size only affects new objects
    assert await again.read(str(ref)) == data
    await again.close()


async def test_ref_round_trips_through_text() -> None:
    ref = ObjectRef("ab" * 16, 12345)
    assert ObjectRef.parse(str(ref)) == ref


@pytest.mark.slow
async def test_multi_gib_stream_round_trip_in_bounded_memory(make_store: StoreFactory) -> None:
    size = 2 * 1024 * MiB - 12345
    store = make_store(segment_size=64 * MiB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ref = await store.put(astream(pseudo_random(42, size)))
    assert ref.size == size
    last = b""

    def remember_last() -> Iterator[bytes]:
        nonlocal last
        for piece in pseudo_random(42, size):
            last = piece
            yield piece

    assert await digest_stream(store.get(ref)) == (digest_of(remember_last()), size)
    assert await store.read(ref, size - 100) == last[-100:]
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    # a few 64 MiB segments in flight (each also has its ciphertext and parity), not 2 GiB
    assert grown < 10 * 64 * MiB, f"peak memory grew by {grown >> 20} MiB for a 2 GiB object"
    await store.close()
