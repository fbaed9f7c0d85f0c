"""Any k of n shares rebuild an object; fewer is a clear error; repair restores n."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import time
from pathlib import Path

import pytest

from storage import NotEnoughShares
from storage.engine import share_key
from tests.storage.conftest import KiB, StoreFactory, flip_byte, local_specs

SEG = 64 * KiB


async def _fixture_objects(make_store: StoreFactory) -> dict[str, bytes]:
    store = make_store(segment_size=SEG)
    blobs = [b"x", os.urandom(3 * KiB), os.urandom(2 * SEG + 5)]
    refs = {str(await store.put(b)): b for b in blobs}
    await store.close()
    return refs


async def test_every_combination_of_n_minus_k_dead_backends_still_reads(
        make_store: StoreFactory) -> None:
    objects = await _fixture_objects(make_store)
    for dead in itertools.combinations(range(6), 2):
        store = make_store(segment_size=SEG, dead=set(dead))
        for ref, data in objects.items():
            assert await store.read(ref) == data, f"dead backends {dead}"
        await store.close()


async def test_one_more_dead_backend_gives_not_enough_shares(make_store: StoreFactory) -> None:
    objects = await _fixture_objects(make_store)
    ref = next(iter(objects))
    store = make_store(segment_size=SEG, dead={0, 2, 5})
    with pytest.raises(NotEnoughShares) as err:
        await store.read(ref)
    assert f"not enough shares: 3 of 4 needed for segment 0 of object {ref[:32]}" in str(err.value)
    await store.close()


async def test_flipped_byte_is_detected_read_succeeds_and_repair_fixes_it(
        make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(segment_size=SEG)
    data = os.urandom(SEG + 10)
    ref = await store.put(data)
    m = await store.engine.manifest(ref.id)
    victim = m.segments[0].placement[0]  # a primary: the read path would use it
    await store.close()
    flip_byte(tmp_path / "shards" / victim, share_key("s", ref.id, 0, 0))

    store = make_store(segment_size=SEG)
    assert await store.read(ref) == data
    report = await store.verify()
    assert report.degraded == {ref.id: 5}
    assert [(p.segment, p.index, p.backend) for p in report.problems] == [(0, 0, victim)]
    assert "hash" in report.problems[0].reason
    repaired = await store.repair()
    assert (repaired.segments_repaired, repaired.shares_rebuilt) == (1, 1)
    assert (await store.verify()).healthy
    await store.close()


async def test_repair_refills_a_replaced_empty_backend(make_store: StoreFactory,
                                                       tmp_path: Path) -> None:
    store = make_store(segment_size=SEG)
    blobs = [os.urandom(n) for n in (1, 5000, 3 * SEG)]
    refs = [await store.put(b) for b in blobs]
    await store.close()
    shutil.rmtree(tmp_path / "shards" / "b3")  # the disk died; an empty one replaces it

    store = make_store(segment_size=SEG)
    before = await store.verify()
    assert set(before.degraded.values()) == {5}
    assert set(before.degraded) == {r.id for r in refs}
    report = await store.repair()
    assert report.shares_rebuilt == sum(-(-len(b) // SEG) for b in blobs)
    assert not report.unrecoverable
    after = await store.verify()
    assert after.healthy, after
    await store.close()

    # the rebuilt shares are really on b3: reading with two *other* backends dead works
    store = make_store(segment_size=SEG, dead={0, 1})  # b3 is needed
    for ref, data in zip(refs, blobs, strict=True):
        assert await store.read(ref) == data
    await store.close()


async def test_an_object_deleted_while_repair_rebuilds_it_leaves_no_share(
        make_store: StoreFactory, tmp_path: Path) -> None:
    """A repair rebuilt a share of an object that was deleted meanwhile: the delete
    went by the placement before the repair, so the rebuilt share stayed, an
    orphan every later verify reported (the soak's, session 14). Only a drain
    checked for that; every repair does now."""
    store = make_store(segment_size=SEG)
    ref = await store.put(os.urandom(5000))
    await store.close()
    shutil.rmtree(tmp_path / "shards" / "b3")  # a share to rebuild
    store = make_store(segment_size=SEG)
    real = store.engine.store_shares

    async def deleted_first(*args: object, **kwargs: object) -> dict[int, str]:
        await store.delete(ref)  # while the rebuilt share is on its way
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    store.engine.store_shares = deleted_first  # type: ignore[method-assign]
    await store.repair()
    store.engine.store_shares = real  # type: ignore[method-assign]
    report = await store.verify()
    assert report.orphans == 0 and report.objects_checked == 0, report
    await store.close()


async def test_repair_moves_shares_off_a_dead_backend_to_spare_ones(
        make_store: StoreFactory, tmp_path: Path) -> None:
    specs = local_specs(tmp_path / "shards", count=7)
    store = make_store(segment_size=SEG, specs=specs)
    data = os.urandom(2 * SEG)
    on_b0 = 0
    while not on_b0:  # placement rotates per object: find one with a share on b0
        ref = await store.put(data)
        on_b0 = sum(e.placement.count("b0") for e in (await store.engine.manifest(ref.id)).segments)
    await store.close()
    specs[0]["location"] = str(tmp_path / "gone")
    (tmp_path / "gone").write_bytes(b"")
    store = make_store(segment_size=SEG, specs=specs)
    report = await store.repair()
    m = await store.engine.manifest(ref.id)
    for entry in m.segments:
        assert "b0" not in entry.placement and "" not in entry.placement
        assert len(set(entry.placement)) == 6
    assert report.shares_rebuilt == on_b0
    assert (await store.verify()).degraded == {}
    assert await store.read(ref) == data
    await store.close()


async def test_puts_with_a_dead_backend_succeed_degraded_then_repair_completes(
        make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(segment_size=SEG, dead={4})
    data = os.urandom(SEG + 1)
    ref = await store.put(data)
    assert (await store.verify()).degraded == {ref.id: 5}
    await store.close()
    (tmp_path / "shards" / "not-a-directory").unlink()  # the disk came back (empty)
    store = make_store(segment_size=SEG)
    report = await store.repair()
    assert report.shares_rebuilt == 2
    assert (await store.verify()).healthy
    assert await store.read(ref) == data
    await store.close()


async def test_what_a_stopped_twin_owed_the_self_repair_is_repaired_after_its_restart(
        make_store: StoreFactory, tmp_path: Path) -> None:
    # stored below n while a disk was dead, then a stop before any repair ran: the
    # degraded list is in the catalogue, so the reopened store repairs without a scrub
    store = make_store(segment_size=SEG, dead={4})
    kept = {await store.put(b): b for b in (os.urandom(SEG + 1), os.urandom(700))}
    gone = await store.put(os.urandom(SEG))
    await store.delete(gone.id)  # deleted objects leave the list with their rows
    assert sorted(await store.engine.catalogue.degraded_page()) == sorted(r.id for r in kept)
    await store.close()
    (tmp_path / "shards" / "not-a-directory").unlink()  # the disk came back (empty)
    store = make_store(segment_size=SEG)
    assert store.engine.repair_owed
    maintain = asyncio.create_task(store.maintain())  # no scrub: only the owed list
    try:
        deadline = time.monotonic() + 10
        while await store.engine.catalogue.degraded_page():
            assert time.monotonic() < deadline, "the owed repair did not run"
            await asyncio.sleep(0.05)
        assert (await store.verify()).healthy
        for ref, data in kept.items():
            assert await store.read(ref) == data
    finally:
        maintain.cancel()
        await asyncio.gather(maintain, return_exceptions=True)
        await store.close()


async def test_put_fails_cleanly_when_too_few_backends_remain(make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG, dead={0, 1})  # 4 left, write quorum is k+1 = 5
    with pytest.raises(Exception, match="could be stored"):
        await store.put(os.urandom(100))
    assert await store.list() == []
    await store.close()
