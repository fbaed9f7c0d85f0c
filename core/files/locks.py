"""Persistent write locks on file-tree paths (the storage behind WebDAV LOCK).

Locks are keyed by path, not by node: RFC 4918 locks a URL, and a MOVE drops
the locks of the source. They live in ``twin.db`` so a restart does not
silently free a file another client believes it holds.

The methods block (``Database.run_sync``) because their caller, wsgidav's lock
manager, runs in WSGI worker threads; never call them on the event loop.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import time
from typing import Any

from core.db import Database

log = logging.getLogger("twin.files.locks")
MAX_TIMEOUT = 4 * 7 * 86400.0
DEFAULT_TIMEOUT = 7 * 86400.0
MAX_OWNER = 16 * 1024
MAX_LOCKS = 100_000

MIGRATIONS = [
    """
    CREATE TABLE file_locks (
        token  TEXT PRIMARY KEY,
        root   TEXT NOT NULL,
        expire REAL NOT NULL,
        data   TEXT NOT NULL
    );
    CREATE INDEX file_locks_root ON file_locks(root);
    """,
]


def normalize_root(path: str) -> str:
    return "/" + path.strip("/")


class PathLocks:
    """Lock records: a dict per lock (wsgidav's shape), stored as JSON."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("files.locks", MIGRATIONS)

    @staticmethod
    def _decode(data: str) -> dict[str, Any]:
        lock: dict[str, Any] = json.loads(data)
        lock["owner"] = lock["owner"].encode("utf-8")
        return lock

    def get(self, token: str) -> dict[str, Any] | None:
        """The lock, or None if unknown or expired (expired ones are purged)."""
        def get(c: sqlite3.Connection) -> dict[str, Any] | None:
            row = c.execute("SELECT expire, data FROM file_locks WHERE token = ?",
                            (token,)).fetchone()
            if row is None:
                return None
            if 0 <= row[0] < time.time():
                c.execute("DELETE FROM file_locks WHERE token = ?", (token,))
                return None
            return self._decode(row[1])
        return self.db.run_sync(get)

    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        root = normalize_root(path)
        timeout = float(lock.get("timeout") or DEFAULT_TIMEOUT)
        if timeout < 0 or timeout > MAX_TIMEOUT:
            timeout = MAX_TIMEOUT
        owner = lock.get("owner") or b""
        if len(owner) > MAX_OWNER:
            raise ValueError(f"lock owner longer than {MAX_OWNER} bytes")
        lock.update(root=root, timeout=timeout, expire=time.time() + timeout,
                    token="opaquelocktoken:" + hex(secrets.randbits(256)))
        record = {**lock, "owner": owner.decode("utf-8", "replace")}

        def insert(c: sqlite3.Connection) -> None:
            if c.execute("SELECT COUNT(*) FROM file_locks").fetchone()[0] >= MAX_LOCKS:
                c.execute("DELETE FROM file_locks WHERE expire >= 0 AND expire < ?",
                          (time.time(),))
            c.execute("INSERT INTO file_locks VALUES (?, ?, ?, ?)",
                      (lock["token"], root, lock["expire"], json.dumps(record)))
        self.db.run_sync(insert)
        log.debug("lock %s on %s", lock["scope"], root)
        return lock

    def refresh(self, token: str, timeout: float) -> dict[str, Any]:
        if timeout < 0 or timeout > MAX_TIMEOUT:
            timeout = MAX_TIMEOUT

        def refresh(c: sqlite3.Connection) -> dict[str, Any]:
            row = c.execute("SELECT data FROM file_locks WHERE token = ?", (token,)).fetchone()
            if row is None:
                raise ValueError("no such lock")
            record = json.loads(row[0])
            record.update(timeout=timeout, expire=time.time() + timeout)
            c.execute("UPDATE file_locks SET expire = ?, data = ? WHERE token = ?",
                      (record["expire"], json.dumps(record), token))
            record["owner"] = record["owner"].encode("utf-8")
            return dict(record)
        return self.db.run_sync(refresh)

    def delete(self, token: str) -> bool:
        return bool(self.db.run_sync(lambda c: c.execute(
            "DELETE FROM file_locks WHERE token = ?", (token,)).rowcount))

    def under(self, path: str, *, include_root: bool, include_children: bool
              ) -> list[dict[str, Any]]:
        """Live locks rooted at ``path`` and/or below it."""
        root = normalize_root(path)
        prefix = root.rstrip("/") + "/"

        def query(c: sqlite3.Connection) -> list[dict[str, Any]]:
            now = time.time()
            c.execute("DELETE FROM file_locks WHERE expire >= 0 AND expire < ?", (now,))
            rows: list[str] = []
            if include_root:
                rows += [r[0] for r in c.execute(
                    "SELECT data FROM file_locks WHERE root = ?", (root,))]
            if include_children:
                rows += [r[0] for r in c.execute(
                    "SELECT data FROM file_locks WHERE substr(root, 1, ?) = ? AND root != ?",
                    (len(prefix), prefix, root))]
            return [self._decode(d) for d in rows]
        return self.db.run_sync(query)

    def clear(self) -> None:
        self.db.run_sync(lambda c: c.execute("DELETE FROM file_locks"))
