"""The twin's metadata database (``twin.db``) backed up into its own dispersed store.

The store backs up its catalogue (where every object's shares are, and their
keys); ``twin.db`` says which objects are mail and which are files, and holds
mailboxes, the file tree, contacts, grants, the outbox and the logins. Without
it a restored twin has its objects back but not what they are. So, on the
catalogue's schedule (``storage.backup_interval``) and at every clean stop:

1. ``VACUUM INTO`` a temporary file on the database's own thread: one read
   transaction, so the copy is consistent (WAL lets writers go on meanwhile),
   and compact;
2. put that file into the store like any object (encrypted, k-of-n);
3. ``store.set_named("twin.db", ref)``: a named pointer in the catalogue (the
   newest few generations are kept, older snapshots deleted);
4. back the catalogue up, which now carries the pointer.

``twin restore`` (core/cli/init.py) reverses it: catalogue from the backends,
then the newest readable ``twin.db`` generation, checked with ``PRAGMA
integrity_check`` before it replaces the fresh database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
from pathlib import Path

from core.db import Database
from storage import ObjectRef, StorageError, Store

log = logging.getLogger("twin.backup")
NAME = "twin.db"
MAX_DB = 16 * 1024**3  # refuse to snapshot (or restore) a metadata DB beyond this


def _vacuum_into(conn: sqlite3.Connection, dest: str) -> None:
    conn.execute("VACUUM INTO ?", (dest,))


async def snapshot(db: Database, dest: Path) -> int:
    """A consistent, compact copy of the database at ``dest``; returns its size."""
    await asyncio.to_thread(dest.unlink, True)
    await db.run(_vacuum_into, str(dest))
    size = (await asyncio.to_thread(dest.stat)).st_size
    if size > MAX_DB:
        raise ValueError(f"metadata DB snapshot of {size} bytes exceeds {MAX_DB}")
    return size


async def backup_db(db: Database, store: Store) -> ObjectRef:
    """Snapshot ``db`` into ``store`` and point ``twin.db`` at it; returns the ref."""
    tmp = db.path.parent / f".twin-db-backup-{secrets.token_hex(4)}.sqlite"
    try:
        size = await snapshot(db, tmp)
        f = await asyncio.to_thread(open, tmp, "rb")
        try:
            ref = await store.put(f)
        finally:
            f.close()
        await store.set_named(NAME, ref)
    finally:
        await asyncio.to_thread(tmp.unlink, True)
    log.info("metadata DB backed up (%d bytes) as %s", size, ref)
    return ref


async def backup_all(db: Database, store: Store) -> str:
    """twin.db, then the catalogue (which then points at that twin.db)."""
    await backup_db(db, store)
    name: str = await store.backup()
    return name


async def backup_loop(db: Database, store: Store, interval: float) -> None:
    """``backup_all`` every ``interval`` seconds until cancelled; failures are logged."""
    if interval <= 0:
        raise ValueError("backup interval must be positive")
    while True:
        await asyncio.sleep(interval)
        try:
            await backup_all(db, store)
        except (StorageError, OSError, sqlite3.Error, ValueError) as exc:
            log.error("scheduled backup failed: %s", exc)


def _check_db(path: Path) -> None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()
    finally:
        conn.close()
    if result is None or result[0] != "ok":
        raise sqlite3.DatabaseError(f"integrity check failed: {result}")


async def restore_db(store: Store, target: Path) -> ObjectRef | None:
    """Write the newest readable twin.db snapshot over ``target`` (no twin may have it open).

    Returns the ref restored, or None when the store holds no snapshot (a twin
    backed up before twin.db was). Older generations are tried if the newest
    cannot be read or fails its integrity check.
    """
    part = target.with_name(target.name + ".restore")
    for ref in await store.get_named(NAME):
        if ref.size > MAX_DB:
            log.warning("twin.db snapshot %s is too large (%d bytes), skipped", ref, ref.size)
            continue
        try:
            f = await asyncio.to_thread(open, part, "wb")
            try:
                async for chunk in store.get(ref):
                    await asyncio.to_thread(f.write, chunk)
                await asyncio.to_thread(f.flush)
                await asyncio.to_thread(os.fsync, f.fileno())
            finally:
                f.close()
            await asyncio.to_thread(_check_db, part)
        except (StorageError, sqlite3.Error) as exc:
            log.warning("twin.db snapshot %s unusable (%s); trying an older one", ref, exc)
            continue
        for suffix in ("-wal", "-shm"):  # of the database being replaced
            await asyncio.to_thread(target.with_name(target.name + suffix).unlink, True)
        await asyncio.to_thread(os.replace, part, target)
        log.info("metadata DB restored from %s", ref)
        return ref
    await asyncio.to_thread(part.unlink, True)
    return None
