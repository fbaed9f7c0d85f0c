"""twin.db snapshots go into the dispersed store and come back after a catalogue restore."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from core import backup
from core.db import Database
from storage import Store, open_store
from tests.storage.conftest import MASTER, METADATA, local_specs

SEG = 64 * 1024


def _store(data: Path, specs: list[dict[str, str]]) -> Store:
    return open_store(data, k=4, n=6, segment_size=SEG, backends=specs, master_key=MASTER,
                      metadata_key=METADATA)


def _rows(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
    finally:
        conn.close()


async def test_twin_db_survives_losing_the_whole_data_dir(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    specs = local_specs(tmp_path / "shards")
    old = tmp_path / "old"
    old.mkdir()
    db = Database(old / "twin.db")
    await db.run(lambda c: c.executescript(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);"
        "INSERT INTO notes(body) VALUES ('inbox row'), ('file row');"))
    store = _store(old, specs)
    name = await backup.backup_all(db, store)
    assert name.startswith("backup/")
    await db.run(lambda c: c.execute("INSERT INTO notes(body) VALUES ('after the backup')"))
    await store.close()
    db.close()

    new = tmp_path / "new"  # the old data dir is gone: words (keys) + backends only
    new.mkdir()
    (new / "twin.db").write_bytes(b"")  # what `twin init` made, to be replaced
    restored = await Store.restore(new, backends=specs, metadata_key=METADATA,
                                   master_key=MASTER, segment_size=SEG)
    ref = await backup.restore_db(restored, new / "twin.db")
    await restored.close()
    assert ref is not None
    assert _rows(new / "twin.db") == [(1, "inbox row"), (2, "file row")]
    assert not (new / "twin.db.restore").exists()


async def test_an_unreadable_newest_snapshot_falls_back_to_the_previous_one(
        tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    specs = local_specs(tmp_path / "shards")
    db = Database(tmp_path / "twin.db")
    await db.run(lambda c: c.executescript(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);"
        "INSERT INTO notes(body) VALUES ('good');"))
    store = _store(tmp_path / "data", specs)
    await backup.backup_db(db, store)
    garbage = await store.put(b"SQLite format 3\x00" + b"\xff" * 5000)  # not a database
    await store.set_named(backup.NAME, garbage)
    target = tmp_path / "restored.db"
    ref = await backup.restore_db(store, target)
    assert ref is not None and ref != garbage
    assert _rows(target) == [(1, "good")]
    await store.close()
    db.close()


async def test_a_store_without_a_snapshot_restores_nothing(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    store = _store(tmp_path / "data", local_specs(tmp_path / "shards"))
    target = tmp_path / "twin.db"
    target.write_bytes(b"fresh")
    assert await backup.restore_db(store, target) is None
    assert target.read_bytes() == b"fresh"
    await store.close()
