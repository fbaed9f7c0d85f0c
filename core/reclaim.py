"""Deleting stored objects nothing references any more: one scheme for files and mail.

The file tree (a file's object, counted in ``file_blobs``) and the mail store
(a message's object or pack, ``core.mail.packs``) each find, inside the
metadata transaction that drops the last reference, which objects became
unreferenced. From there both do the same, here:

1. ``record(conn, table, refs)`` in that transaction lists them in the part's
   garbage table (``ref TEXT PRIMARY KEY, since REAL``): a crash after the
   commit leaves them listed, not orphaned;
2. after the commit, ``collect`` deletes them from the store (``collect_later``:
   in the background, for an answer that must not wait), except an object a
   reader in this process is streaming (``hold``/``release``): that one goes
   when its last reader ends;
3. a deleted object leaves the table; one that could not be deleted stays for
   ``sweep``, which runs once the store is open.

Why one scheme: the two parts had each their own (mail had no table, so a
crash between commit and delete left an orphan only ``storage verify`` found).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence

from core.db import Database
from storage import ObjectNotFound, ObjectRef, Store

log = logging.getLogger("twin.reclaim")


def record(c: sqlite3.Connection, table: str, refs: Iterable[str]) -> None:
    """List ``refs`` in ``table`` (inside the transaction that freed them)."""
    now = time.time()
    c.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)",  # noqa: S608 - a constant
                  [(ref, now) for ref in refs])


class Reclaim:
    """A part's garbage: listed in ``table`` of ``db``, deleted from ``store()``.

    ``store`` gives the open dispersed store or None (it opens after the parts
    are made); ``forget`` is called per object before it is deleted (the mail
    store drops its cached bytes)."""

    def __init__(self, db: Database, table: str, store: Callable[[], Store | None], *,
                 forget: Callable[[str], None] | None = None) -> None:
        self.db = db
        self.table = table
        self._store = store
        self._forget = forget
        self._readers: dict[str, int] = {}  # object -> readers streaming it now
        self._deferred: set[str] = set()  # freed while read: deleted by the last reader
        self._deleting: set[str] = set()  # being deleted in the background
        self._background: set[asyncio.Task[None]] = set()

    # -- readers

    def hold(self, ref: str) -> None:
        """A reader starts streaming ``ref``: it is not deleted under it."""
        self._readers[ref] = self._readers.get(ref, 0) + 1

    async def release(self, ref: str) -> None:
        """That reader is done; the last one deletes ``ref`` if it was freed meanwhile."""
        self._readers[ref] -= 1
        if self._readers[ref]:
            return
        del self._readers[ref]
        if ref in self._deferred:
            self._deferred.discard(ref)
            await self.delete([ref])

    def gone(self, ref: str) -> bool:
        """Whether ``ref`` is being deleted in the background: a new read must not start."""
        return ref in self._deleting

    # -- deleting

    async def collect(self, refs: Sequence[str]) -> None:
        """Delete freed objects now, or when their last reader ends."""
        self._deferred.update(r for r in refs if r in self._readers)
        await self.delete([r for r in refs if r not in self._readers])

    def collect_later(self, refs: Sequence[str]) -> None:
        """``collect`` in the background; ``gone`` is true for each until it is deleted."""
        refs = [r for r in refs if r not in self._deleting]
        if not refs:
            return
        for ref in refs:
            if self._forget is not None:
                self._forget(ref)
        self._deleting.update(refs)

        async def run() -> None:
            try:
                await self.collect(refs)
            finally:
                self._deleting.difference_update(refs)
        task = asyncio.get_running_loop().create_task(run(), name=f"reclaim-{self.table}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def delete(self, refs: Sequence[str]) -> None:
        """Delete objects from the store and the table; one that fails stays listed.

        Also for objects never committed (a write that failed after storing):
        they are not listed, and deleting them is the same."""
        store = self._store()
        done: list[str] = []
        for ref in refs:
            if self._forget is not None:
                self._forget(ref)
            if store is None:
                continue
            try:
                await store.delete(ObjectRef.parse(ref))
            except ObjectNotFound:
                pass  # already gone is fine
            except Exception as exc:  # stays listed: the next sweep tries again
                log.warning("could not delete storage object %s: %s", ref, exc)
                continue
            done.append(ref)
        if done:
            await self.db.run(self._unlist, done)

    def _unlist(self, c: sqlite3.Connection, refs: list[str]) -> None:
        # returns nothing: a cursor handed back to the loop's thread is finalised
        # there, racing the database thread on the connection (SQLITE_MISUSE)
        c.executemany(f"DELETE FROM {self.table} WHERE ref = ?",  # noqa: S608 - a constant
                      [(r,) for r in refs])

    async def sweep(self) -> int:
        """Delete what a crash (or a failed delete) left listed; once the store is open."""
        refs = await self.db.run(lambda c: [r[0] for r in c.execute(
            f"SELECT ref FROM {self.table}")])  # noqa: S608 - a constant
        await self.delete([r for r in refs if r not in self._readers])
        if refs:
            log.info("swept %d unreferenced storage objects (%s)", len(refs), self.table)
        return len(refs)
