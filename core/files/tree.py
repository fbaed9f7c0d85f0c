"""The file tree: nodes in SQLite, bytes in the dispersed store.

Every database step is one function run on the database thread inside one
``BEGIN IMMEDIATE`` transaction, so a reader sees either the old or the new
state of a file, never a mix. Storage objects that no file references any
more are listed in ``file_garbage`` (inside the same transaction) and
deleted from the store once no reader in this process is streaming them:
``core.reclaim``, the one scheme files and mail share (``sweep`` at start-up
deletes what a crash left listed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import secrets
import shutil
import sqlite3
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core import reclaim
from core.db import Database, Group
from core.errors import Conflict, Invalid, NotFound, QuotaExceeded, TwinError, Unavailable
from core.files.paths import join, split
from core.foreign import storage_error
from core.peer.content import ContentEntry
from storage import ObjectRef, StorageError, Store

log = logging.getLogger("twin.files")
T = TypeVar("T")
Refs = list[str]  # FileTree.list shadows the builtin inside the class
ROOT_ID = 1
MAX_PROP_VALUE = 64 * 1024
MAX_PROPS_PER_NODE = 256
MAX_CHILDREN_LISTED = 100_000
# bodies up to this size are gathered and stored through the store's batched small path
SMALL_BODY = 256 * 1024

MIGRATIONS = [
    """
    CREATE TABLE file_nodes (
        id           INTEGER PRIMARY KEY,
        parent       INTEGER REFERENCES file_nodes(id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        is_dir       INTEGER NOT NULL,
        size         INTEGER NOT NULL DEFAULT 0,
        etag         TEXT NOT NULL,
        created      REAL NOT NULL,
        modified     REAL NOT NULL,
        content_type TEXT NOT NULL DEFAULT '',
        ref          TEXT,
        UNIQUE (parent, name)
    );
    CREATE INDEX file_nodes_ref ON file_nodes(ref);
    CREATE TABLE file_blobs (
        ref   TEXT PRIMARY KEY,
        refs  INTEGER NOT NULL
    );
    CREATE TABLE file_props (
        node   INTEGER NOT NULL REFERENCES file_nodes(id) ON DELETE CASCADE,
        name   TEXT NOT NULL,
        value  BLOB NOT NULL,
        PRIMARY KEY (node, name)
    );
    CREATE TABLE file_garbage (
        ref    TEXT PRIMARY KEY,
        since  REAL NOT NULL
    );
    INSERT INTO file_nodes (id, parent, name, is_dir, etag, created, modified)
        VALUES (1, NULL, '', 1, 'root', strftime('%s','now'), strftime('%s','now'));
    """,
]

GARBAGE = "file_garbage"  # core.reclaim's table of this part
# A constant column list: the f-strings below that use it carry no input (S608).
_COLS = "id, parent, name, is_dir, size, etag, created, modified, content_type, ref"


@dataclass(frozen=True)
class FileEntry(ContentEntry):
    """One node: the peer layer's ``ContentEntry`` plus what only the owner sees."""

    created: float = 0.0
    content_type: str = ""
    ref: str | None = None
    id: int = 0

    def to_wire(self) -> dict[str, Any]:
        """Only the ContentEntry fields: object refs and row ids stay private."""
        return {"path": self.path, "name": self.name, "size": self.size,
                "is_dir": self.is_dir, "mtime": self.mtime, "etag": self.etag}


Entries = list[FileEntry]


@dataclass(frozen=True)
class Written:
    """What ``FileTree.put_file`` stored: the new entry, and whether it made the file."""

    entry: FileEntry
    created: bool


@dataclass(frozen=True)
class PutTarget:
    """What a PUT of ``path`` would meet: the node there now, and its parent's state."""

    entry: FileEntry | None
    parent_is_dir: bool


@dataclass(frozen=True)
class _Switch:
    """One ``put_file``'s switch of its file to a stored object, for the switch group."""

    parts: tuple[str, ...]
    ref: str | None
    size: int
    content_type: str | None


@dataclass(frozen=True)
class _Switched:
    """A committed switch: the file's new row, the refs it freed, whether it made the file."""

    row: tuple[Any, ...]
    freed: Refs
    created: bool


Switches = list[_Switch]
Outcomes = list[_Switched | TwinError]  # one per switch of a group, in order


def _entry(row: tuple[Any, ...], path: str) -> FileEntry:
    nid, _parent, name, is_dir, size, etag, created, modified, ctype, ref = row
    return FileEntry(path=path, name=name, size=int(size), is_dir=bool(is_dir),
                     mtime=float(modified), etag=etag, created=float(created),
                     content_type=ctype, ref=ref, id=int(nid))


def _new_etag() -> str:
    return secrets.token_hex(12)


def _guess_type(name: str, given: str | None) -> str:
    if given and given.split(";")[0].strip().lower() not in ("", "application/octet-stream"):
        return given[:255]
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _tx(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _lookup(c: sqlite3.Connection, parts: tuple[str, ...]) -> tuple[Any, ...] | None:
    row = c.execute(f"SELECT {_COLS} FROM file_nodes WHERE id = ?", (ROOT_ID,)).fetchone()  # noqa: S608
    for part in parts:
        if row is None or not row[3]:
            return None
        row = c.execute(f"SELECT {_COLS} FROM file_nodes WHERE parent = ? AND name = ?",  # noqa: S608
                        (row[0], part)).fetchone()
    return tuple(row) if row is not None else None


def _need(c: sqlite3.Connection, parts: tuple[str, ...]) -> tuple[Any, ...]:
    row = _lookup(c, parts)
    if row is None:
        raise NotFound(f"{join(parts)} does not exist")
    return row


def _parent_dir(c: sqlite3.Connection, parts: tuple[str, ...]) -> tuple[Any, ...]:
    """The existing directory a new node at ``parts`` goes into (409 territory if not)."""
    if not parts:
        raise Conflict("the root already exists")
    row = _lookup(c, parts[:-1])
    if row is None or not row[3]:
        raise Conflict(f"parent of {join(parts)} is not an existing directory")
    return row


def _subtree_ids(c: sqlite3.Connection, node: int) -> list[int]:
    return [r[0] for r in c.execute(
        "WITH RECURSIVE t(id) AS (SELECT ? UNION ALL "
        "SELECT n.id FROM file_nodes n JOIN t ON n.parent = t.id) SELECT id FROM t", (node,))]


def _release(c: sqlite3.Connection, ref: str | None, freed: list[str]) -> None:
    """Drop one reference to ``ref``; the last one sends the object to the garbage table."""
    if ref is None:
        return
    c.execute("UPDATE file_blobs SET refs = refs - 1 WHERE ref = ?", (ref,))
    row = c.execute("SELECT refs FROM file_blobs WHERE ref = ?", (ref,)).fetchone()
    if row is not None and row[0] <= 0:
        c.execute("DELETE FROM file_blobs WHERE ref = ?", (ref,))
        reclaim.record(c, GARBAGE, [ref])
        freed.append(ref)


def _retain(c: sqlite3.Connection, ref: str | None) -> None:
    if ref is None:
        return
    c.execute("INSERT INTO file_blobs VALUES (?, 1) "
              "ON CONFLICT(ref) DO UPDATE SET refs = refs + 1", (ref,))


def _source_and_target(c: sqlite3.Connection, s: tuple[str, ...], d: tuple[str, ...],
                       overwrite: bool, freed: Refs) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The MOVE/COPY source node and the target's parent, clearing the target if allowed."""
    node = _need(c, s)
    parent = _parent_dir(c, d)
    existing = _lookup(c, d)
    if existing is not None:
        if not overwrite:
            raise Conflict(f"{join(d)} exists")
        _remove_subtree(c, existing[0], freed)
    return node, parent


def _remove_subtree(c: sqlite3.Connection, node: int, freed: list[str]) -> None:
    ids = _subtree_ids(c, node)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for (ref,) in c.execute(f"SELECT ref FROM file_nodes WHERE id IN ({marks}) "  # noqa: S608
                                "AND ref IS NOT NULL", chunk).fetchall():
            _release(c, ref, freed)
    c.execute("DELETE FROM file_nodes WHERE id = ?", (node,))


def _room(c: sqlite3.Connection, parts: tuple[str, ...], size: int | None, quota: int) -> None:
    """``put_file``'s early check, before any byte is stored: the parent is a folder
    and ``size`` more bytes fit the quota. The switch checks both again, atomically."""
    _parent_dir(c, parts)
    if quota and size is not None:
        old = _lookup(c, parts)  # a replaced file's bytes are freed by the switch
        used = _used(c) - (old[4] if old is not None and not old[3] else 0)
        if used + size > quota:
            raise QuotaExceeded(f"{size} more bytes exceed the quota of {quota}")


def _target(c: sqlite3.Connection, parts: tuple[str, ...]) -> tuple[tuple[Any, ...] | None, bool]:
    parent = _lookup(c, parts[:-1]) if parts else None
    return _lookup(c, parts), parent is not None and bool(parent[3])


def _used(c: sqlite3.Connection) -> int:
    return int(c.execute("SELECT COALESCE(SUM(size), 0) FROM file_nodes WHERE is_dir = 0")
               .fetchone()[0])


async def _small_or_stream(data: AsyncIterable[bytes]) -> bytes | AsyncIterable[bytes]:
    """The whole body as bytes when it ends within ``SMALL_BODY``, else a stream of it all.

    A small file given as bytes takes the store's batched path
    (``storage.smallput``): concurrent small writes share one encode call, one
    write and fdatasync per backend and one catalogue commit, where a stream
    costs each its own. Durability is the same (the write quorum of shares is
    on disk before ``put`` returns). At most ``SMALL_BODY`` bytes are held.
    """
    held: list[bytes] = []
    total = 0
    chunks = aiter(data)
    async for chunk in chunks:
        held.append(chunk)
        total += len(chunk)
        if total > SMALL_BODY:
            return _chain(held, chunks)
    return b"".join(held)


async def _chain(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    while first:
        yield first.pop(0)
    async for chunk in rest:
        yield chunk


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """Dispersed-store failures in core's neutral terms (``core.foreign``)."""
    try:
        yield
    except StorageError as exc:
        raise storage_error(exc, "file content") from exc


class FileTree:
    """The owner's files. All methods are coroutines on the service's loop."""

    def __init__(self, db: Database, store: Callable[[], Store | None], *, quota: int = 0,
                 data_dir: Path | None = None, redundancy: float = 1.0) -> None:
        self.db = db
        self._store = store
        self.quota = quota
        self.data_dir = data_dir
        self.redundancy = redundancy
        self.garbage = reclaim.Reclaim(db, GARBAGE, store)
        # concurrent writes switch in one transaction, one commit (one fsync)
        self._switches: Group[_Switch, _Switched | TwinError] = Group(
            db, self._switch_all, name="files-switch")
        self._cleanups: set[asyncio.Future[None]] = set()  # deletes of unswitched objects
        db.migrate("files", MIGRATIONS)

    @property
    def store(self) -> Store:
        store = self._store()
        if store is None:
            raise Unavailable("the dispersed store is not open")
        return store

    # -- reading the tree (also the peer layer's ContentSource)

    async def stat(self, path: str) -> FileEntry:
        parts = split(path)
        row = await self.db.run(_need, parts)
        return _entry(row, join(parts))

    async def exists(self, path: str) -> FileEntry | None:
        parts = split(path)
        row = await self.db.run(_lookup, parts)
        return _entry(row, join(parts)) if row else None

    async def put_target(self, path: str) -> PutTarget:
        """The node at ``path`` and whether its parent is a folder, in one database call.

        For the WebDAV PUT fast path, which must know both before it takes a
        request (a thread hop each cost ~0.1-0.3 ms of a 4 KiB PUT, issue 20)."""
        parts = split(path)
        row, parent_is_dir = await self.db.run(_target, parts)
        return PutTarget(_entry(row, join(parts)) if row else None, parent_is_dir)

    def put_target_read(self, path: str) -> Callable[[sqlite3.Connection], PutTarget]:
        """``put_target`` as a read to run inside another call on the database thread.

        The WebDAV PUT fast path runs it with the login's password lookup
        (``Users.login_with``): one thread hop instead of two per PUT (issue 20).
        An invalid path raises here, not on the database thread."""
        parts = split(path)

        def read(c: sqlite3.Connection) -> PutTarget:
            row, parent_is_dir = _target(c, parts)
            return PutTarget(_entry(row, join(parts)) if row else None, parent_is_dir)
        return read

    async def list(self, path: str) -> list[ContentEntry]:
        """A directory's children (ContentSource); ``entries`` gives the full FileEntry."""
        return list(await self.entries(path))

    async def entries(self, path: str) -> Entries:
        parts = split(path)

        def children(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            row = _need(c, parts)
            if not row[3]:
                raise Invalid(f"{join(parts)} is not a directory")
            return [tuple(r) for r in c.execute(
                f"SELECT {_COLS} FROM file_nodes WHERE parent = ? ORDER BY name LIMIT ?",  # noqa: S608
                (row[0], MAX_CHILDREN_LISTED))]

        rows = await self.db.run(children)
        return [_entry(r, join((*parts, r[2]))) for r in rows]

    async def read(self, path: str, start: int = 0, end: int | None = None,
                   *, entry: FileEntry | None = None) -> AsyncIterator[bytes]:
        """Stream a file's bytes ``[start, end)``; ``entry`` pins the version seen by stat."""
        if entry is None:
            entry = await self.stat(path)
        if entry.is_dir:
            raise Invalid(f"{entry.path} is a directory")
        end = entry.size if end is None else min(end, entry.size)
        if entry.ref is None or start >= end:
            return
        ref = entry.ref
        self.garbage.hold(ref)
        try:
            with _storage_errors():
                chunks = aiter(self.store.get(ObjectRef.parse(ref), start, end))
                try:
                    async for chunk in chunks:
                        yield chunk
                finally:
                    closer = getattr(chunks, "aclose", None)
                    if closer is not None:
                        with contextlib.suppress(Exception):
                            await closer()
        finally:
            await self.garbage.release(ref)

    # -- changing the tree

    async def mkdir(self, path: str) -> FileEntry:
        parts = split(path)

        def make(c: sqlite3.Connection) -> tuple[Any, ...]:
            parent = _parent_dir(c, parts)
            now = time.time()
            try:
                c.execute("INSERT INTO file_nodes (parent, name, is_dir, etag, created, modified)"
                          " VALUES (?, ?, 1, ?, ?, ?)", (parent[0], parts[-1], _new_etag(),
                                                         now, now))
            except sqlite3.IntegrityError:
                raise Conflict(f"{join(parts)} exists") from None
            return _need(c, parts)

        row = await self.db.run(_tx, make)
        log.debug("created directory %s", join(parts))
        return _entry(row, join(parts))

    async def create_empty(self, path: str, content_type: str | None = None) -> FileEntry:
        """An empty file (PUT of nothing, or a LOCK on an unmapped URL); keeps existing files."""
        return (await self.make_empty(path, content_type)).entry

    async def make_empty(self, path: str, content_type: str | None = None) -> Written:
        """``create_empty``, also saying whether this call made the file (or found it)."""
        parts = split(path)

        def make(c: sqlite3.Connection) -> tuple[tuple[Any, ...], bool]:
            existing = _lookup(c, parts)
            if existing is not None:
                if existing[3]:
                    raise Conflict(f"{join(parts)} is a directory")
                return existing, False
            parent = _parent_dir(c, parts)
            now = time.time()
            c.execute("INSERT INTO file_nodes (parent, name, is_dir, size, etag, created, "
                      "modified, content_type) VALUES (?, ?, 0, 0, ?, ?, ?, ?)",
                      (parent[0], parts[-1], _new_etag(), now, now,
                       _guess_type(parts[-1], content_type)))
            return _need(c, parts), True

        row, created = await self.db.run(_tx, make)
        return Written(_entry(row, join(parts)), created)

    async def write(self, path: str, data: AsyncIterable[bytes], *,
                    content_type: str | None = None, size_hint: int | None = None) -> FileEntry:
        """Store ``data`` fully, then switch the file to it in one transaction."""
        written = await self.put_file(path, data, content_type=content_type,
                                      size_hint=size_hint)
        return written.entry

    async def put_file(self, path: str, data: AsyncIterable[bytes], *,
                       content_type: str | None = None,
                       size_hint: int | None = None) -> Written:
        """``write``, also saying whether this write created the file.

        Decided inside the switch transaction, so of concurrent writes of a new
        file exactly one is told it created it (WebDAV: one 201, the others 204,
        RFC 9110 section 9.3.4)."""
        parts = split(path)
        # Without a quota, a body known to be small is read (at most SMALL_BODY bytes)
        # before the early check, and then needs none: the switch checks the parent
        # atomically anyway, and the early check was one more database round trip per
        # small file (issue 20). With a quota, an announced size over it is refused
        # before anything is stored, as before; larger or unknown bodies are checked
        # before reading.
        checked = bool(self.quota) or size_hint is None or size_hint > SMALL_BODY
        if checked:
            await self.db.run(_room, parts, size_hint, self.quota)
        body = await _small_or_stream(data)
        if not checked and not isinstance(body, bytes):  # longer than it said
            await self.db.run(_room, parts, size_hint, self.quota)
        with _storage_errors():
            obj = await self.store.put(body)
        ref: str | None = str(obj)
        size = int(obj.size)
        if size == 0:  # empty files need no object
            await self.garbage.delete([str(obj)])
            ref = None
        switched = await self._switch(_Switch(parts, ref, size, content_type))
        await self.garbage.collect(switched.freed)
        log.debug("wrote %s (%d bytes)", join(parts), size)
        return Written(_entry(switched.row, join(parts)), switched.created)

    async def _switch(self, item: _Switch) -> _Switched:
        """Switch the file to ``item.ref`` with the concurrent writes' switches.

        Whatever happens to the caller, the object is deleted exactly when its
        switch did not commit: a caller cancelled while its switch is in the group's
        transaction leaves it to commit (the object is then the file's) or fail
        (then the object is deleted once that is known)."""
        ref = item.ref
        task = asyncio.ensure_future(self._switches(item))
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if ref is not None:
                task.add_done_callback(lambda t: self._drop_unswitched(t, ref))
            raise
        except Exception:
            if ref is not None:
                await self.garbage.delete([ref])
            raise
        if isinstance(result, TwinError):
            if ref is not None:
                await self.garbage.delete([ref])
            raise result
        return result

    def _drop_unswitched(self, task: asyncio.Future[_Switched | TwinError], ref: str) -> None:
        """Delete ``ref`` if its switch is known not to have committed.

        A switch cancelled itself (the loop shutting down) may still have committed
        on the database thread: its object is kept, a leak at worst, never a file
        whose object is gone."""
        if task.cancelled():
            return
        if task.exception() is not None or isinstance(task.result(), TwinError):
            cleanup = asyncio.ensure_future(self.garbage.delete([ref]))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)

    def _switch_all(self, c: sqlite3.Connection, items: Switches) -> Outcomes:
        """Every switch of a group in one transaction, in arrival order, each in its own
        savepoint: one refused (a folder there, over quota) changes nothing of the others.

        In order matters: of concurrent writes creating one file, the first switched
        creates it (201) and the others replace it (204)."""
        results: Outcomes = []

        def run(c: sqlite3.Connection) -> None:
            for item in items:
                c.execute("SAVEPOINT switch")
                try:
                    results.append(self._switch_one(c, item))
                except TwinError as exc:
                    c.execute("ROLLBACK TO switch")
                    results.append(exc)
                c.execute("RELEASE switch")

        _tx(c, run)
        return results

    def _switch_one(self, c: sqlite3.Connection, item: _Switch) -> _Switched:
        parts, ref, size = item.parts, item.ref, item.size
        freed: Refs = []
        parent = _parent_dir(c, parts)
        old = _lookup(c, parts)
        if old is not None and old[3]:
            raise Conflict(f"{join(parts)} is a directory")
        if self.quota:
            new_used = _used(c) - (old[4] if old else 0) + size
            if new_used > self.quota:
                raise QuotaExceeded(f"writing {size} bytes exceeds the quota of {self.quota}")
        now = time.time()
        ctype = _guess_type(parts[-1], item.content_type)
        _retain(c, ref)
        if old is None:
            c.execute("INSERT INTO file_nodes (parent, name, is_dir, size, etag, created, "
                      "modified, content_type, ref) VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?)",
                      (parent[0], parts[-1], size, _new_etag(), now, now, ctype, ref))
        else:
            c.execute("UPDATE file_nodes SET size = ?, etag = ?, modified = ?, "
                      "content_type = ?, ref = ? WHERE id = ?",
                      (size, _new_etag(), now, ctype, ref, old[0]))
            _release(c, old[9], freed)
        return _Switched(_need(c, parts), freed, old is None)

    async def delete(self, path: str) -> None:
        """Remove a file or a whole directory tree."""
        parts = split(path)
        if not parts:
            raise Invalid("the root cannot be deleted")

        def remove(c: sqlite3.Connection) -> Refs:
            freed: Refs = []
            _remove_subtree(c, _need(c, parts)[0], freed)
            return freed

        freed = await self.db.run(_tx, remove)
        await self.garbage.collect(freed)
        log.debug("deleted %s", join(parts))

    async def move(self, src: str, dst: str, *, overwrite: bool = False) -> FileEntry:
        """Rename ``src`` to ``dst`` (metadata only; properties follow the node)."""
        s, d = split(src), split(dst)
        if not s or d[:len(s)] == s:
            raise Conflict(f"cannot move {join(s)} into itself")

        def rename(c: sqlite3.Connection) -> tuple[tuple[Any, ...], Refs]:
            freed: Refs = []
            node, parent = _source_and_target(c, s, d, overwrite, freed)
            c.execute("UPDATE file_nodes SET parent = ?, name = ?, modified = ? WHERE id = ?",
                      (parent[0], d[-1], time.time(), node[0]))
            return _need(c, d), freed

        row, freed = await self.db.run(_tx, rename)
        await self.garbage.collect(freed)
        log.debug("moved %s to %s", join(s), join(d))
        return _entry(row, join(d))

    async def copy(self, src: str, dst: str, *, recursive: bool = True,
                   overwrite: bool = False) -> FileEntry:
        """Copy metadata; the copy shares the storage objects (reference counted)."""
        s, d = split(src), split(dst)
        if recursive and d[:len(s)] == s:
            raise Conflict(f"cannot copy {join(s)} into itself")

        def duplicate(c: sqlite3.Connection) -> tuple[tuple[Any, ...], Refs]:
            freed: Refs = []
            node, parent = _source_and_target(c, s, d, overwrite, freed)
            now = time.time()
            todo = [(node, parent[0], d[-1])]
            while todo:
                row, new_parent, name = todo.pop()
                cur = c.execute(
                    "INSERT INTO file_nodes (parent, name, is_dir, size, etag, created, "
                    "modified, content_type, ref) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (new_parent, name, row[3], row[4], row[5] if row[9] else _new_etag(),
                     now, now, row[8], row[9]))
                new_id = cur.lastrowid
                _retain(c, row[9])
                c.execute("INSERT INTO file_props (node, name, value) "
                          "SELECT ?, name, value FROM file_props WHERE node = ?",
                          (new_id, row[0]))
                if row[3] and recursive:
                    for child in c.execute(f"SELECT {_COLS} FROM file_nodes WHERE parent = ?",  # noqa: S608
                                           (row[0],)).fetchall():
                        todo.append((tuple(child), new_id, child[2]))
            if self.quota and _used(c) > self.quota:
                raise QuotaExceeded(f"copying {join(s)} exceeds the quota of {self.quota}")
            return _need(c, d), freed

        row, freed = await self.db.run(_tx, duplicate)
        await self.garbage.collect(freed)
        log.debug("copied %s to %s", join(s), join(d))
        return _entry(row, join(d))

    async def touch(self, path: str, mtime: float) -> None:
        parts = split(path)
        await self.db.run(_tx, lambda c: c.execute(
            "UPDATE file_nodes SET modified = ? WHERE id = ?", (mtime, _need(c, parts)[0])))

    # -- dead properties

    async def props(self, path: str) -> dict[str, bytes]:
        parts = split(path)

        def get(c: sqlite3.Connection) -> dict[str, bytes]:
            node = _need(c, parts)[0]
            return {n: bytes(v) for n, v in c.execute(
                "SELECT name, value FROM file_props WHERE node = ?", (node,))}

        return await self.db.run(get)

    async def child_props(self, path: str) -> dict[str, dict[str, bytes]]:
        """The dead properties of every child of a directory, by child name, in one query.

        A PROPFIND Depth: 1 asks for them per member; one query for all keeps
        a listing's cost at one round trip, whatever its length (issue 20)."""
        parts = split(path)

        def get(c: sqlite3.Connection) -> dict[str, dict[str, bytes]]:
            node = _need(c, parts)[0]
            found: dict[str, dict[str, bytes]] = {}
            for child, name, value in c.execute(
                    "SELECT n.name, p.name, p.value FROM file_nodes n "
                    "JOIN file_props p ON p.node = n.id WHERE n.parent = ?", (node,)):
                found.setdefault(child, {})[name] = bytes(value)
            return found

        return await self.db.run(get)

    async def set_prop(self, path: str, name: str, value: bytes | None) -> None:
        """Set (or with ``None`` remove) one dead property."""
        parts = split(path)
        if not name or len(name) > 1024:
            raise Invalid("property name missing or longer than 1024 characters")
        if value is not None and len(value) > MAX_PROP_VALUE:
            raise Invalid(f"property value longer than {MAX_PROP_VALUE} bytes")

        def put(c: sqlite3.Connection) -> None:
            node = _need(c, parts)[0]
            if value is None:
                c.execute("DELETE FROM file_props WHERE node = ? AND name = ?", (node, name))
                return
            count = c.execute("SELECT COUNT(*) FROM file_props WHERE node = ?",
                              (node,)).fetchone()[0]
            if count >= MAX_PROPS_PER_NODE:
                raise Invalid(f"more than {MAX_PROPS_PER_NODE} properties on {join(parts)}")
            c.execute("INSERT OR REPLACE INTO file_props VALUES (?, ?, ?)", (node, name, value))

        await self.db.run(_tx, put)

    # -- space

    async def usage(self) -> tuple[int, int]:
        """(bytes used, bytes still available) for RFC 4331 quota properties."""
        used = await self.db.run(_used)
        if self.quota:
            return used, max(0, self.quota - used)
        free = 0
        if self.data_dir is not None:
            free = (await asyncio.to_thread(shutil.disk_usage, self.data_dir)).free
        return used, int(free / max(self.redundancy, 1.0))

    # -- garbage

    async def sweep(self) -> int:
        """Delete objects left in ``file_garbage`` by a crash; run once the store is open."""
        return await self.garbage.sweep()
