"""A few SQLite read connections shared by every worker thread.

Why: the storage I/O pool has 32 threads, and each used to open its own
connection to every index it read (``threading.local``): 32 connections per
database, three file descriptors each (the file, its WAL, its shared-memory
index), over 500 descriptors on a twin with six local backends, and a page
cache per connection. Reads are short, so a handful of connections leased for
the duration of one call serve the same load; a thread that finds them all
busy waits for one instead of opening another.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator

READERS = 4  # connections per database: reads take microseconds, so few are ever busy


class ReaderPool:
    def __init__(self, connect: Callable[[], sqlite3.Connection], size: int = READERS) -> None:
        if size < 1:
            raise ValueError("a reader pool needs at least one connection")
        self._connect = connect
        self.size = size
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._opening = 0
        self._cond = threading.Condition()
        self._closed = False
        self._held = threading.local()  # the connection this thread leased (re-entry)

    @contextlib.contextmanager
    def lease(self) -> Iterator[sqlite3.Connection]:
        """A connection for this thread until the block ends; the same one if the
        thread already holds one."""
        held: sqlite3.Connection | None = getattr(self._held, "conn", None)
        if held is not None:
            yield held
            return
        conn = self._take()
        self._held.conn = conn
        try:
            yield conn
        finally:
            self._held.conn = None
            with self._cond:
                if self._closed:
                    conn.close()
                    self._all.remove(conn)
                else:
                    self._idle.append(conn)
                    self._cond.notify()

    def current(self) -> sqlite3.Connection | None:
        """The connection this thread holds, if any."""
        conn: sqlite3.Connection | None = getattr(self._held, "conn", None)
        return conn

    def _take(self) -> sqlite3.Connection:
        with self._cond:
            while True:
                if self._closed:
                    raise sqlite3.ProgrammingError("the reader pool is closed")
                if self._idle:
                    return self._idle.pop()
                if len(self._all) + self._opening < self.size:
                    self._opening += 1
                    break
                self._cond.wait()
        try:
            conn = self._connect()
        except BaseException:
            with self._cond:
                self._opening -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._opening -= 1
            self._all.append(conn)
        return conn

    @property
    def opened(self) -> int:
        """Connections open now (idle or leased)."""
        with self._cond:
            return len(self._all)

    def close(self) -> None:
        """Close the idle connections now and the leased ones when they come back."""
        with self._cond:
            self._closed = True
            for conn in self._idle:
                conn.close()
                self._all.remove(conn)
            self._idle.clear()
            self._cond.notify_all()
