"""core.reclaim: freed objects are listed durably, deleted once no reader streams them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any, cast

import pytest

from core import reclaim
from core.db import Database, transaction
from storage import ObjectRef, Store

TABLE = "test_garbage"


class Objects:
    """What Reclaim asks of the store: ``delete``; ``fail`` makes it raise."""

    def __init__(self, ids: set[str]) -> None:
        self.ids = ids
        self.fail = False

    async def delete(self, ref: ObjectRef) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise OSError("backend down")
        self.ids.discard(ref.id)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    db = Database(tmp_path / "t.db")
    db.migrate("t", [f"CREATE TABLE {TABLE} (ref TEXT PRIMARY KEY, since REAL NOT NULL)"])
    return db


def ref(n: int) -> str:
    return f"{n:032x}:100"


async def freed(db: Database, refs: list[str]) -> None:
    def run(c: sqlite3.Connection) -> None:
        with transaction(c):
            reclaim.record(c, TABLE, refs)
    await db.run(run)


async def listed(db: Database) -> set[str]:
    return set(await db.run(lambda c: [r[0] for r in c.execute(f"SELECT ref FROM {TABLE}")]))


def setup(db: Database) -> tuple[Objects, reclaim.Reclaim, list[str]]:
    refs = [ref(i) for i in range(3)]
    objects = Objects({ObjectRef.parse(r).id for r in refs})
    forgotten: list[str] = []
    garbage = reclaim.Reclaim(db, TABLE, lambda: cast(Store, objects),
                              forget=forgotten.append)
    return objects, garbage, forgotten


async def test_collect_deletes_and_unlists(db: Database) -> None:
    objects, garbage, forgotten = setup(db)
    refs = [ref(0), ref(1)]
    await freed(db, refs)
    assert await listed(db) == set(refs)
    await garbage.collect(refs)
    assert objects.ids == {ObjectRef.parse(ref(2)).id}
    assert await listed(db) == set() and forgotten == refs


async def test_an_object_being_read_goes_with_its_last_reader(db: Database) -> None:
    objects, garbage, _ = setup(db)
    target = ref(0)
    garbage.hold(target)
    garbage.hold(target)
    await freed(db, [target])
    await garbage.collect([target])
    assert ObjectRef.parse(target).id in objects.ids  # two readers still stream it
    await garbage.release(target)
    assert ObjectRef.parse(target).id in objects.ids
    await garbage.release(target)
    assert ObjectRef.parse(target).id not in objects.ids
    assert await listed(db) == set()


async def test_a_failed_delete_stays_listed_for_the_sweep(db: Database) -> None:
    objects, garbage, _ = setup(db)
    await freed(db, [ref(1)])
    objects.fail = True
    await garbage.collect([ref(1)])
    assert await listed(db) == {ref(1)}  # not lost: listed still
    objects.fail = False
    assert await garbage.sweep() == 1
    assert ObjectRef.parse(ref(1)).id not in objects.ids and await listed(db) == set()


async def test_collect_later_refuses_reads_until_deleted(db: Database) -> None:
    objects, garbage, _ = setup(db)
    await freed(db, [ref(2)])
    garbage.collect_later([ref(2)])
    assert garbage.gone(ref(2))
    for _ in range(100):
        if not garbage.gone(ref(2)):
            break
        await asyncio.sleep(0.01)
    assert not garbage.gone(ref(2))
    assert ObjectRef.parse(ref(2)).id not in objects.ids and await listed(db) == set()


async def test_without_an_open_store_nothing_is_unlisted(db: Database) -> None:
    garbage = reclaim.Reclaim(db, TABLE, lambda: None)
    await freed(db, [ref(0)])
    await garbage.collect([ref(0)])
    assert await listed(db) == {ref(0)}
    _: Any = garbage
