"""What a twin can show other twins: the ``ContentSource`` protocol.

The peer API never reads a table or the store itself; ``core.peer.serve``
asks a ContentSource after ``core.acl.Access`` allowed the request. The
twin's ContentSource is the file tree (``core/files``). ``SharedObjects`` is
the first implementation, from before the file tree: a table in twin.db
mapping a path to an object in the dispersed store, where ``twin share FILE
--as /path`` put files then (directories implicit: "/photos/a.jpg" makes
"/photos" a directory). Only ``twin shares`` still lists it, for twins that
shared files that way; new shares go to the tree.

Contract:

    class ContentSource(Protocol):
        async def stat(self, path) -> ContentEntry          # raises core.errors.NotFound
        async def list(self, path) -> list[ContentEntry]    # a directory's children
        def read(self, path, start=0, end=None) -> AsyncIterator[bytes]   # end exclusive
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, cast, runtime_checkable

from core.acl import as_dir, normalize
from core.db import Database, transaction
from core.errors import Invalid, NotFound, Unavailable
from core.foreign import storage_error
from storage import ObjectNotFound, ObjectRef, StorageError, Store

MAX_LIST = 10_000

MIGRATIONS = [
    """
    CREATE TABLE shared_objects (
        path  TEXT PRIMARY KEY,
        ref   TEXT NOT NULL,
        size  INTEGER NOT NULL,
        mtime REAL NOT NULL
    );
    """,
]


@dataclass(frozen=True)
class ContentEntry:
    path: str
    name: str
    size: int
    is_dir: bool
    mtime: float
    etag: str

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, raw: Any) -> ContentEntry:
        """An entry from another twin's listing, every field typed before use."""
        if not isinstance(raw, dict):
            raise Invalid("peer sent a malformed content entry")
        path, name, size, is_dir, mtime, etag = (
            raw.get(k) for k in ("path", "name", "size", "is_dir", "mtime", "etag"))
        if not (type(path) is str and type(name) is str and type(size) is int
                and type(is_dir) is bool and type(mtime) in (int, float)
                and type(etag) is str):
            raise Invalid("peer sent a malformed content entry")
        if size < 0:
            raise Invalid("peer sent a negative size")
        return cls(path, name, size, is_dir, float(cast(float, mtime)), etag)


@runtime_checkable
class ContentSource(Protocol):
    async def stat(self, path: str) -> ContentEntry: ...

    async def list(self, path: str) -> list[ContentEntry]: ...

    def read(self, path: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]: ...


def _name(path: str) -> str:
    return path.rstrip("/").rpartition("/")[2]


class SharedObjects:
    """Paths mapped to dispersed-store objects (see the module docstring)."""

    def __init__(self, db: Database, store: Callable[[], Store | None]) -> None:
        self.db = db
        self._store = store  # service.store is opened only in start()
        db.migrate("peer.content", MIGRATIONS)

    # -- owner side

    async def add(self, path: str, ref: ObjectRef | str, size: int) -> ContentEntry:
        """Publish stored object ``ref`` at ``path`` (replacing what was there)."""
        path = normalize(path)
        if path.endswith("/"):
            raise Invalid(f"{path}: a shared object needs a file name, not a directory")
        now = time.time()

        def run(conn: sqlite3.Connection) -> Any:
            with transaction(conn):
                if conn.execute("SELECT 1 FROM shared_objects WHERE substr(path, 1, ?) = ?",
                                (len(path) + 1, path + "/")).fetchone():
                    raise Invalid(f"{path} is a directory of shared objects")
                old = conn.execute("SELECT ref FROM shared_objects WHERE path = ?",
                                   (path,)).fetchone()
                conn.execute("INSERT OR REPLACE INTO shared_objects VALUES (?, ?, ?, ?)",
                             (path, str(ref), size, now))
                return old[0] if old else None
        old = await self.db.run(run)
        if old is not None and old != str(ref):
            await self._delete_object(old)
        return ContentEntry(path, _name(path), size, False, now, _etag(str(ref)))

    async def remove(self, path: str) -> None:
        path = normalize(path)

        def run(conn: sqlite3.Connection) -> Any:
            with transaction(conn):
                row = conn.execute("SELECT ref FROM shared_objects WHERE path = ?",
                                   (path,)).fetchone()
                conn.execute("DELETE FROM shared_objects WHERE path = ?", (path,))
                return row[0] if row else None
        ref = await self.db.run(run)
        if ref is None:
            raise NotFound(f"nothing shared at {path}")
        await self._delete_object(ref)

    async def _delete_object(self, ref: str) -> None:
        store = self._store()
        if store is not None:
            with contextlib.suppress(ObjectNotFound):
                await store.delete(ObjectRef.parse(ref))

    # -- ContentSource

    async def stat(self, path: str) -> ContentEntry:
        path = normalize(path)
        bare = path.rstrip("/") or "/"

        def run(conn: sqlite3.Connection) -> ContentEntry:
            row = conn.execute("SELECT ref, size, mtime FROM shared_objects WHERE path = ?",
                               (bare,)).fetchone()
            if row and not path.endswith("/"):
                return ContentEntry(bare, _name(bare), row[1], False, row[2], _etag(row[0]))
            prefix = as_dir(bare)
            sub = conn.execute("SELECT max(mtime) FROM shared_objects WHERE "
                               "substr(path, 1, ?) = ?", (len(prefix), prefix)).fetchone()
            if bare == "/" or sub[0] is not None:
                return ContentEntry(bare, _name(bare), 0, True, sub[0] or 0.0, "")
            raise NotFound(f"no such path {path}")
        return await self.db.run(run)

    async def list(self, path: str) -> list[ContentEntry]:
        entry = await self.stat(path)
        if not entry.is_dir:
            raise Invalid(f"{path} is not a directory")
        prefix = as_dir(entry.path)

        def run(conn: sqlite3.Connection) -> list[ContentEntry]:
            children: dict[str, ContentEntry] = {}
            rows = conn.execute(
                "SELECT path, ref, size, mtime FROM shared_objects WHERE substr(path, 1, ?) = ? "
                "ORDER BY path", (len(prefix), prefix))
            for p, ref, size, mtime in rows:
                head, sep, _ = p[len(prefix):].partition("/")
                if sep:
                    d = prefix + head
                    old = children.get(d)
                    children[d] = ContentEntry(d, head, 0, True,
                                               max(mtime, old.mtime if old else 0.0), "")
                else:
                    children[p] = ContentEntry(p, head, size, False, mtime, _etag(ref))
                if len(children) > MAX_LIST:
                    raise Invalid(f"{path}: more than {MAX_LIST} entries")
            return list(children.values())
        return await self.db.run(run)

    async def read(self, path: str, start: int = 0,
                   end: int | None = None) -> AsyncIterator[bytes]:
        entry = await self.stat(path)
        if entry.is_dir:
            raise Invalid(f"{path} is a directory")
        ref = await self.db.run(lambda c: c.execute(
            "SELECT ref FROM shared_objects WHERE path = ?", (entry.path,)).fetchone()[0])
        store = self._store()
        if store is None:
            raise Unavailable("the dispersed store is not open")
        try:
            async for chunk in store.get(ObjectRef.parse(ref), start, end):
                yield chunk
        except StorageError as exc:
            raise storage_error(exc, path) from exc


def _etag(ref: str) -> str:
    return ref.partition(":")[0]
