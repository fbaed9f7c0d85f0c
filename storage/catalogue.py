"""The catalogue: one SQLite file (WAL) with every object's manifest.

A manifest row is the *only* thing that makes an object readable, and a put
returns (hands out the object's ref) only once the row is committed
(``synchronous=FULL``) and every share of the object is durable. A stream
put commits the row after its shares, so a crash before leaves at most
unreferenced shares (orphans, which ``verify`` finds); a batch of small puts
commits its rows while the shares are written (``insert_early``), listed in
``unsettled`` in the same transaction, so a crash may leave a row whose shares
never landed, which ``storage.settle`` removes. Commits are grouped: concurrent
puts share one transaction and one fsync.

The per-object key is stored wrapped (secretbox) by the store's master key;
placement says, per segment, which backend holds share i ('' = none).

``named`` holds small named pointers to objects (the twin's metadata DB
snapshot is ``twin.db``), newest generation first; being in the catalogue,
they are in every catalogue backup and come back with a restore.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from storage.errors import StorageError
from storage.groupcommit import GroupCommit, in_thread
from storage.model import ObjectInfo
from storage.share import HASH_BYTES
from storage.sqlpool import ReaderPool

log = logging.getLogger("twin.storage")
T = TypeVar("T")

SCHEMA_VERSION = 1
CLOSE_WAIT = 30.0  # seconds close() waits for reads still running
FILE_NAME = "catalogue.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects(
    id TEXT PRIMARY KEY, size INTEGER NOT NULL, created REAL NOT NULL,
    k INTEGER NOT NULL, n INTEGER NOT NULL, segment_size INTEGER NOT NULL,
    segments INTEGER NOT NULL, wrapped_key BLOB NOT NULL, prefix BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments(
    object_id TEXT NOT NULL, seg INTEGER NOT NULL, placement TEXT NOT NULL,
    hashes BLOB NOT NULL, PRIMARY KEY(object_id, seg)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS named(
    name TEXT NOT NULL, generation INTEGER NOT NULL, object_id TEXT NOT NULL,
    size INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY(name, generation)
) WITHOUT ROWID;
-- objects stored below n shares, written with their rows: a restart or a crash does not
-- forget what the self-repair still owes (added without a schema bump: IF NOT EXISTS)
CREATE TABLE IF NOT EXISTS degraded(object_id TEXT PRIMARY KEY) WITHOUT ROWID;
-- objects whose row was committed while their shares were still being written (a
-- batch of small puts commits both at once, ``insert_early``): until the put settles
-- them, a crash may have left such a row with too few shares (``storage.settle``)
CREATE TABLE IF NOT EXISTS unsettled(object_id TEXT PRIMARY KEY) WITHOUT ROWID;
"""


@dataclass
class SegmentEntry:
    placement: list[str]
    hashes: list[bytes]

    def encode(self) -> tuple[str, bytes]:
        return ",".join(self.placement), b"".join(self.hashes)

    @classmethod
    def decode(cls, placement: str, hashes: bytes) -> SegmentEntry:
        names = placement.split(",")
        hs = [hashes[i:i + HASH_BYTES] for i in range(0, len(hashes), HASH_BYTES)]
        if len(hs) != len(names):
            raise ValueError("catalogue segment row is inconsistent")
        return cls(names, hs)


@dataclass
class Manifest:
    id: str
    size: int
    created: float
    k: int
    n: int
    segment_size: int
    wrapped_key: bytes
    prefix: bytes
    segments: list[SegmentEntry]  # may hold only a requested range, see first_segment
    segment_count: int
    first_segment: int = 0

    def plain_len(self, seg: int) -> int:
        return min(self.segment_size, self.size - seg * self.segment_size)

    @property
    def info(self) -> ObjectInfo:
        return ObjectInfo(self.id, self.size, self.created, self.segment_count, self.k, self.n)

    def entry(self, seg: int) -> SegmentEntry:
        return self.segments[seg - self.first_segment]


_OBJ_COLS = "id, size, created, k, n, segment_size, wrapped_key, prefix, segments"


def _manifest(row: Sequence[Any], segments: list[SegmentEntry], first: int) -> Manifest:
    oid, size, created, k, n, seg_size, wrapped, prefix, count = row
    return Manifest(oid, size, created, k, n, seg_size, bytes(wrapped), bytes(prefix), segments,
                    count, first)


class Catalogue:
    def __init__(self, path: Path, executor: Executor) -> None:
        self.path = path
        self._executor = executor
        self._conns: list[sqlite3.Connection] = []
        self._readers = ReaderPool(self._connect)
        self._lock = threading.Lock()
        # reads in flight on executor threads; close() waits for them, since
        # closing a connection under a running query crashes the process
        self._busy = 0
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self._db = self._connect()
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif int(row[0]) != SCHEMA_VERSION:
            raise ValueError(f"catalogue {path} has schema {row[0]}, expected {SCHEMA_VERSION}")
        self._commit: GroupCommit[tuple[str, Any], Any] = GroupCommit(
            in_thread(executor, self._run_batch), max_items=1024)
        # ids ``settle`` was told of, taken off ``unsettled`` by the next transaction
        # (a deque: appended on the loop, taken on the executor thread, no lock held)
        self._settled: deque[str] = deque()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                               timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        with self._lock:
            self._conns.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        """The read connection this thread leased for the call (see ``_counted``)."""
        conn = self._readers.current()
        if conn is None:
            raise RuntimeError("catalogue read outside a leased connection")
        return conn

    async def _io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._counted, fn, *args)

    def _counted(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            if self._closed:
                raise StorageError("the catalogue is closed")
            self._busy += 1
        try:
            with self._readers.lease():
                return fn(*args)
        finally:
            with self._lock:
                self._busy -= 1
                if not self._busy:
                    self._idle.notify_all()

    # -- metadata values (key check, ...)

    def get_meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- writes (group committed)

    async def insert(self, manifest: Manifest) -> None:
        await self._commit.submit(("insert", [manifest]))

    async def insert_many(self, manifests: Sequence[Manifest]) -> None:
        """Make every manifest visible in one transaction: all of them or none.

        One group-commit entry for a whole batch of small puts (mail delivery),
        written with one ``executemany`` per table instead of statements per object.
        """
        if manifests:
            await self._commit.submit(("insert", list(manifests)))

    async def insert_early(self, manifests: Sequence[Manifest]) -> None:
        """``insert_many`` for objects whose shares are still being written, and listed
        as unsettled in the same transaction (see ``storage.settle``).

        Why: a batch of small puts committed its rows only once every share was
        durable, one sync after the other; a lone 4 KiB WebDAV PUT waited for the
        backends' syncs, then the catalogue's, then ``twin.db``'s (issue 20). Rows
        committed meanwhile are visible to nobody who could read them (the refs are
        not handed out before the shares are durable) except a store-wide listing;
        the unsettled list makes a crash before the shares landed recoverable."""
        if manifests:
            await self._commit.submit(("early", list(manifests)))

    def settle(self, object_ids: Sequence[str]) -> None:
        """These early rows' shares are durable: they leave the unsettled list with the
        next transaction (no commit of their own; forgotten in a crash, they are
        probed and kept, ``storage.settle``)."""
        self._settled.extend(object_ids)

    def settling(self) -> set[str]:
        """Ids ``settle`` was told of whose rows are still on the unsettled list."""
        return set(self._settled)

    async def fix_placement(self, entries: Sequence[tuple[str, SegmentEntry]]) -> None:
        """Segment 0 of each early row placed where its shares did land (a backend failed
        and a spare took the share, or none did: then also on the degraded list)."""
        if entries:
            await self._commit.submit(("fix", list(entries)))

    async def remove(self, object_id: str) -> bool:
        return bool(await self._commit.submit(("remove", object_id)))

    async def set_placement(self, object_id: str, seg: int, entry: SegmentEntry) -> None:
        await self._commit.submit(("place", (object_id, seg, entry)))

    async def set_named(self, name: str, object_id: str, size: int, created: float,
                        keep: int) -> list[str]:
        """Add a generation of ``name``; returns the object ids of generations past ``keep``
        (their rows are gone; the caller deletes the objects)."""
        dropped: list[str] = await self._commit.submit(
            ("name", (name, object_id, size, created, keep)))
        return dropped

    async def mark_whole(self, object_ids: Sequence[str]) -> None:
        """Take repaired objects off the degraded list (``degraded_page``)."""
        if object_ids:
            await self._commit.submit(("whole", list(object_ids)))

    def _run_batch(self, ops: list[tuple[str, Any]]) -> list[Any]:
        db = self._db
        out: list[Any] = []
        settled: list[str] = []
        while self._settled:
            settled.append(self._settled.popleft())
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("DELETE FROM unsettled WHERE object_id=?",
                               [(i,) for i in settled])
                for kind, arg in ops:
                    out.append(self._apply(db, kind, arg))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                self._settled.extend(settled)
                raise
        return out

    @staticmethod
    def _apply(db: sqlite3.Connection, kind: str, arg: Any) -> Any:
        if kind == "early":
            db.executemany("INSERT INTO unsettled VALUES (?)", [(m.id,) for m in arg])
            kind = "insert"
        if kind == "fix":
            for oid, entry in arg:
                db.execute("UPDATE segments SET placement=?, hashes=? WHERE object_id=? "
                           "AND seg=0", (*entry.encode(), oid))
                if "" in entry.placement:
                    db.execute("INSERT OR IGNORE INTO degraded VALUES (?)", (oid,))
            return None
        if kind == "insert":
            ms: list[Manifest] = arg
            db.executemany(f"INSERT INTO objects({_OBJ_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",  # noqa: S608
                           [(m.id, m.size, m.created, m.k, m.n, m.segment_size, m.wrapped_key,
                             m.prefix, m.segment_count) for m in ms])
            db.executemany("INSERT INTO segments VALUES (?,?,?,?)",
                           [(m.id, i, *s.encode()) for m in ms for i, s in enumerate(m.segments)])
            db.executemany("INSERT OR IGNORE INTO degraded VALUES (?)",
                           [(m.id,) for m in ms if any("" in s.placement for s in m.segments)])
            return None
        if kind == "remove":
            gone = db.execute("DELETE FROM objects WHERE id=?", (arg,)).rowcount
            db.execute("DELETE FROM segments WHERE object_id=?", (arg,))
            db.execute("DELETE FROM degraded WHERE object_id=?", (arg,))
            db.execute("DELETE FROM unsettled WHERE object_id=?", (arg,))
            return gone > 0
        if kind == "whole":
            db.executemany("DELETE FROM degraded WHERE object_id=?", [(i,) for i in arg])
            return None
        if kind == "place":
            oid, seg, entry = arg
            db.execute("UPDATE segments SET placement=?, hashes=? WHERE object_id=? AND seg=?",
                       (*entry.encode(), oid, seg))
            return None
        if kind == "name":
            name, oid, size, created, keep = arg
            if db.execute("SELECT 1 FROM objects WHERE id=?", (oid,)).fetchone() is None:
                raise KeyError(oid)
            top = db.execute("SELECT MAX(generation) FROM named WHERE name=?",
                             (name,)).fetchone()[0]
            db.execute("INSERT INTO named VALUES (?, ?, ?, ?, ?)",
                       (name, (top or 0) + 1, oid, size, created))
            old = db.execute("SELECT generation, object_id FROM named WHERE name=? "
                             "ORDER BY generation DESC LIMIT -1 OFFSET ?",
                             (name, keep)).fetchall()
            db.executemany("DELETE FROM named WHERE name=? AND generation=?",
                           [(name, g) for g, _ in old])
            still = {r[0] for r in db.execute("SELECT object_id FROM named")}
            return [o for _, o in old if o not in still]
        raise ValueError(kind)

    # -- reads

    def _load(self, object_id: str, start: int, end: int | None) -> Manifest | None:
        db = self._reader()
        sql = f"SELECT {_OBJ_COLS} FROM objects WHERE id=?"  # noqa: S608 - constant columns
        row = db.execute(sql, (object_id,)).fetchone()
        if row is None:
            return None
        size, seg_size, count = row[1], row[5], row[8]
        end = size if end is None else min(end, size)
        start = min(start, size)
        first = start // seg_size
        hi = (end - 1) // seg_size if end > start else first - 1
        hi = min(hi, count - 1)
        segs = [SegmentEntry.decode(p, bytes(h)) for p, h in db.execute(
            "SELECT placement, hashes FROM segments WHERE object_id=? AND seg BETWEEN ? AND ? "
            "ORDER BY seg", (object_id, first, hi))]
        return _manifest(row, segs, first)

    async def load(self, object_id: str, start: int = 0, end: int | None = None
                   ) -> Manifest | None:
        """The manifest with only the segments covering bytes ``start..end`` (all by default).

        Ranged reads of a huge object then touch a few catalogue rows, not thousands.
        """
        result: Manifest | None = await self._io(self._load, object_id, start, end)
        return result

    def _info(self, object_id: str) -> ObjectInfo | None:
        row = self._reader().execute(
            "SELECT id, size, created, segments, k, n FROM objects WHERE id=?",
            (object_id,)).fetchone()
        return None if row is None else ObjectInfo(*row)

    async def info(self, object_id: str) -> ObjectInfo | None:
        result: ObjectInfo | None = await self._io(self._info, object_id)
        return result

    def _page(self, after: str, limit: int) -> list[ObjectInfo]:
        rows = self._reader().execute(
            "SELECT id, size, created, segments, k, n FROM objects WHERE id>? ORDER BY id "
            "LIMIT ?", (after, limit)).fetchall()
        return [ObjectInfo(*r) for r in rows]

    async def page(self, after: str = "", limit: int = 1000) -> list[ObjectInfo]:
        result: list[ObjectInfo] = await self._io(self._page, after, limit)
        return result

    def _degraded_page(self, after: str, limit: int) -> list[str]:
        return [r[0] for r in self._reader().execute(
            "SELECT object_id FROM degraded WHERE object_id>? ORDER BY object_id LIMIT ?",
            (after, limit))]

    async def degraded_page(self, after: str = "", limit: int = 500) -> list[str]:
        """Ids of objects stored below n shares (a share slot left empty at put), in
        order after ``after``: what the self-repair owes, kept across restarts."""
        result: list[str] = await self._io(self._degraded_page, after, limit)
        return result

    def _unsettled(self) -> list[str]:
        return [r[0] for r in self._reader().execute("SELECT object_id FROM unsettled")]

    async def unsettled(self) -> list[str]:
        """Ids of early rows not yet settled (``insert_early``, ``storage.settle``)."""
        result: list[str] = await self._io(self._unsettled)
        return result

    def has_unsettled(self) -> bool:
        return self._db.execute("SELECT 1 FROM unsettled LIMIT 1").fetchone() is not None

    def has_degraded(self) -> bool:
        return self._db.execute("SELECT 1 FROM degraded LIMIT 1").fetchone() is not None

    def _known(self, ids: list[str]) -> set[str]:
        db = self._reader()
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in db.execute(
                f"SELECT id FROM objects WHERE id IN ({marks})", chunk))  # noqa: S608
        return found

    async def known(self, ids: list[str]) -> set[str]:
        result: set[str] = await self._io(self._known, ids)
        return result

    def _segments_on(self, backend: str, after: tuple[str, int], limit: int
                     ) -> list[tuple[str, int]]:
        # instr, not LIKE: backend names may hold "_", a LIKE wildcard
        return [(r[0], r[1]) for r in self._reader().execute(
            "SELECT object_id, seg FROM segments WHERE (object_id, seg) > (?, ?) "
            "AND instr(',' || placement || ',', ?) > 0 ORDER BY object_id, seg LIMIT ?",
            (after[0], after[1], f",{backend},", limit))]

    async def segments_on(self, backend: str, after: tuple[str, int] = ("", -1),
                          limit: int = 500) -> list[tuple[str, int]]:
        """(object id, segment) of the segments with a share placed on ``backend``,
        in order, after ``after``: what a drain of that backend still has to move."""
        result: list[tuple[str, int]] = await self._io(self._segments_on, backend, after,
                                                       limit)
        return result

    def _count_on(self, backend: str) -> int:
        # a segment never has two shares on one backend: segments are shares here
        row = self._reader().execute(
            "SELECT COUNT(*) FROM segments WHERE instr(',' || placement || ',', ?) > 0",
            (f",{backend},",)).fetchone()
        return int(row[0])

    async def count_on(self, backend: str) -> int:
        """How many shares the catalogue places on ``backend`` (one full scan)."""
        result: int = await self._io(self._count_on, backend)
        return result

    def _named(self, name: str) -> list[tuple[str, int, float]]:
        return [(r[0], r[1], r[2]) for r in self._reader().execute(
            "SELECT object_id, size, created FROM named WHERE name=? ORDER BY generation DESC",
            (name,))]

    async def named(self, name: str) -> list[tuple[str, int, float]]:
        """(object id, size, created) of every kept generation of ``name``, newest first."""
        result: list[tuple[str, int, float]] = await self._io(self._named, name)
        return result

    def snapshot(self, dest: Path) -> None:
        """A consistent copy of the catalogue (for backups), taken without stopping writes."""
        target = sqlite3.connect(dest)
        try:
            with self._readers.lease() as db:
                db.backup(target)
        finally:
            target.close()

    async def close(self) -> None:
        await self._commit.drain()
        if self._settled:  # the settles no later transaction took: one of their own
            await self._commit.submit(("whole", []))
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_when_idle)

    def _close_when_idle(self) -> None:
        """Refuse new reads, let the running ones finish (a read cancelled by its
        caller still runs on its thread), then close every connection."""
        with self._lock:
            self._closed = True
            if not self._idle.wait_for(lambda: not self._busy, timeout=CLOSE_WAIT):
                log.warning("closing the catalogue with %d read(s) still running", self._busy)
                return  # leaked, not closed under a running query
            self._readers.close()
            for conn in self._conns:
                conn.close()
            self._conns.clear()
