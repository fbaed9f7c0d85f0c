"""A twin rebuilt from its words and its backends gets every object back."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from storage import InvalidReference, ObjectNotFound, StorageError, Store
from storage.backup import KEEP, PREFIX
from storage.store import NAMED_KEEP
from tests.storage.conftest import MASTER, METADATA, KiB, StoreFactory, local_specs

SEG = 64 * KiB


def _keys_from_words(words: str) -> tuple[bytes, bytes]:
    """Stand-in for identity.derive_key: any 32-byte keys do for storage."""
    seed = hashlib.sha256(words.encode()).digest()
    return (hashlib.blake2b(seed, digest_size=32, person=b"storage").digest(),
            hashlib.blake2b(seed, digest_size=32, person=b"metadata").digest())


async def test_restore_into_an_empty_data_dir_brings_every_object_back(
        make_store: StoreFactory, tmp_path: Path) -> None:
    master, metadata = _keys_from_words("abandon ability able about above absent")
    specs = local_specs(tmp_path / "shards")
    store = make_store(segment_size=SEG, specs=specs, data_dir=tmp_path / "old",
                       master_key=master, metadata_key=metadata)
    blobs = {str(await store.put(os.urandom(n))): n for n in (0, 1, 3000, 2 * SEG + 9)}
    first = await store.backup()
    gone = await store.put(b"deleted before the last backup")
    await store.delete(gone)
    name = await store.backup()
    assert name.startswith(PREFIX) and name > first
    expected = {ref: await store.read(ref) for ref in blobs}
    await store.close()

    new_dir = tmp_path / "new"  # the old data dir (catalogue) is lost
    restored = await Store.restore(new_dir, backends=specs, metadata_key=metadata,
                                   master_key=master, segment_size=SEG)
    assert sorted(str(i.ref) for i in await restored.list()) == sorted(blobs)
    for ref, data in expected.items():
        assert await restored.read(ref) == data
    assert (await restored.verify()).healthy
    await restored.close()


async def test_restore_needs_the_right_metadata_key(make_store: StoreFactory,
                                                    tmp_path: Path) -> None:
    specs = local_specs(tmp_path / "shards")
    store = make_store(segment_size=SEG, specs=specs)
    await store.put(b"x")
    await store.backup()
    await store.close()
    with pytest.raises(StorageError, match="no readable catalogue backup"):
        await Store.restore(tmp_path / "new", backends=specs, metadata_key=b"\x01" * 32,
                            master_key=MASTER, segment_size=SEG)


async def test_restore_refuses_a_data_dir_that_has_a_catalogue(make_store: StoreFactory,
                                                              tmp_path: Path) -> None:
    specs = local_specs(tmp_path / "shards")
    store = make_store(segment_size=SEG, specs=specs)
    await store.backup()
    await store.close()
    with pytest.raises(StorageError, match="without a catalogue"):
        await Store.restore(tmp_path / "data", backends=specs, metadata_key=METADATA,
                            master_key=MASTER, segment_size=SEG)


async def test_only_the_newest_backups_are_kept_and_their_shares_are_not_orphans(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    await store.put(os.urandom(5000))
    names = [await store.backup() for _ in range(KEEP + 2)]
    for backend in store.backends:
        assert [k async for k in backend.list(PREFIX)] == names[-KEEP:]
    report = await store.verify()
    assert report.orphans == 0 and report.healthy
    await store.close()


async def test_wrong_master_key_is_refused_at_open(make_store: StoreFactory) -> None:
    store = make_store()
    await store.close()
    with pytest.raises(StorageError, match="master key"):
        make_store(master_key=b"\x02" * 32)


async def test_named_pointers_keep_a_few_generations_and_come_back_with_a_restore(
        make_store: StoreFactory, tmp_path: Path) -> None:
    specs = local_specs(tmp_path / "shards")
    store = make_store(segment_size=SEG, specs=specs, data_dir=tmp_path / "old")
    assert await store.get_named("twin.db") == []
    refs = [await store.put(f"generation {i}".encode()) for i in range(NAMED_KEEP + 2)]
    for ref in refs:
        await store.set_named("twin.db", ref)
    kept = list(reversed(refs))[:NAMED_KEEP]
    assert await store.get_named("twin.db") == kept
    for old in refs[:2]:  # generations past NAMED_KEEP: their objects are deleted too
        with pytest.raises(ObjectNotFound):
            await store.stat(old)
    await store.backup()
    await store.close()

    restored = await Store.restore(tmp_path / "new", backends=specs, metadata_key=METADATA,
                                   master_key=MASTER, segment_size=SEG)
    assert await restored.get_named("twin.db") == kept
    assert await restored.read(kept[0]) == f"generation {NAMED_KEEP + 1}".encode()
    await restored.close()


async def test_a_name_must_be_plain_and_point_at_an_existing_object(
        make_store: StoreFactory) -> None:
    store = make_store(segment_size=SEG)
    ref = await store.put(b"x")
    for bad in ("", "../x", "a/b", "x" * 65, ".hidden"):
        with pytest.raises(InvalidReference):
            await store.set_named(bad, ref)
    await store.delete(ref)
    with pytest.raises(ObjectNotFound):
        await store.set_named("twin.db", ref)
    assert await store.get_named("twin.db") == []
    await store.close()
