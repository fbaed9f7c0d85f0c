"""``local`` backend: a directory holding append-only data files and an index.

Small shares are the common case (a mail of a few KiB gives six shares of a
few KiB), and one file per share cannot reach hundreds of objects per second
with an fsync each. So, like 0-db, every share is appended as a record to the
current data file (``data/NNNNNNNN.dat``, rotated at ``max_file`` bytes) and an
SQLite index (``index.sqlite``) maps key -> (file, offset, length).

Durability: a batch of puts (group commit) is written and the data file is
fdatasync'ed once; the puts are then durable and acknowledged. The records are
self-describing (``"TWR1" | key length u16 | value length u32 | key | value``),
so the data files alone are the truth and the index is a checkpoint of them:
opening the backend re-indexes every record past the last indexed offset of
each file, and a torn record at the tail (crash during a write that was never
acknowledged) is cut off. That is why new records go to the index lazily: they
wait in memory (``_unindexed``, which reads consult first) and are committed
to SQLite in one transaction per ``CHECKPOINT_ITEMS`` records, or with the
first put batch after ``CHECKPOINT_SECONDS`` (no timer: an idle backend keeps
its last records in memory, which is safe), and before anything that needs
the index whole (a delete, compaction, listing, close). Why: an index transaction per batch was
most of a small batch's time (six statements, each giving up and taking back
the GIL that the event loop and five other backends want), and it sat on
every mail delivery's path. The index runs with ``synchronous=NORMAL`` for
the same reason: a checkpoint lost with the power is redone from the files.

Deletes drop index rows and free what they can at once: the whole filesystem
blocks inside a dead record are punched out of its data file
(``fallocate(PUNCH_HOLE)``), so deleting a large object returns its space
immediately and never makes the store bigger. What punching cannot free (small
records sharing blocks with live ones) is counted as dead bytes per file and
reclaimed by compaction (live records copied to the current file, then the old
file retired and removed after a grace period so that readers holding an old
offset finish first). Compaction never runs inside a delete (a large object is
deleted in batches: compacting between them copied its remaining half forward,
which then died too) but from ``maintain``, which the store calls
periodically: a file, the active one included (it is sealed first), is
compacted once deletes have paused for ``CompactPolicy.delay`` seconds if half
of it is dead, or once its dead bytes have stayed unchanged for
``CompactPolicy.age`` seconds if they exceed ``CompactPolicy.slack`` of its live
bytes. So a quiet store holds at most ``slack`` (10 %) more than its live
records, plus files retired less than ``retire_grace`` ago.

A directory is used by one process at a time (``flock`` on ``lock``, which
holds the owner's pid; taken when the store opens, see ``claim``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import sqlite3
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from storage.backends.keys import Buffer, check_key
from storage.errors import BackendUnavailable, StoreInUse
from storage.groupcommit import GroupCommit, in_thread
from storage.model import BackendHealth
from storage.sqlpool import ReaderPool

log = logging.getLogger("twin.storage")
T = TypeVar("T")

RECORD = struct.Struct(">4sHI")
RECORD_MAGIC = b"TWR1"
MAX_VALUE = (1 << 31) - 1
SMALL = 64 * 1024
RETIRE_GRACE = 60.0
CHECKPOINT_ITEMS = 4096
CHECKPOINT_SECONDS = 1.0
_FOLIO_MAX = 2 * 1024 * 1024  # the largest page-cache folio (a PMD) on x86-64 and arm64
_BLOCK = 4096  # punching is aligned to it (a partial block would only be zeroed)
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_SCHEMA = """
CREATE TABLE IF NOT EXISTS shards(
    key TEXT PRIMARY KEY, file INTEGER NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY, indexed INTEGER NOT NULL, dead INTEGER NOT NULL DEFAULT 0,
    retired REAL);
"""

PutItem = tuple[str, Sequence[Buffer]]
# ("put", items) stores every item (one put, or a whole put_many); ("del", [(key, ())])
# removes one key. Either is one group-commit entry, so a put_many of a hundred shares
# costs one future and one submission, and merges with concurrent callers' entries.
Op = tuple[str, builtins.list[PutItem]]
# an index change: key -> (file, offset, length), or None for a delete
IndexChange = tuple[str, tuple[int, int, int] | None]


class Span(NamedTuple):
    """A dead record's bytes in a data file: ``start`` is its header, ``value`` its value."""
    file: int
    start: int
    value: int
    end: int


@dataclass(frozen=True)
class CompactPolicy:
    """When dead bytes are reclaimed; see the module docstring."""
    ratio: float = 0.5  # a file this dead is compacted once deletes pause ...
    delay: float = 5.0  # ... for this many seconds ...
    max_wait: float = 60.0  # ... or it has been this dead this long (deletes never pause)
    slack: float = 0.1  # dead bytes beyond this share of live ones are compacted ...
    age: float = 600.0  # ... once they stayed unchanged this long
    retire_grace: float = RETIRE_GRACE
    min_dead: int = 64 * 1024  # less is not worth a copy


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.fallocate64
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_fallocate = _load_fallocate()


def punch(fd: int, start: int, end: int) -> int:
    """Free the whole blocks of ``[start, end)`` in ``fd``'s file; bytes freed.

    0 where the filesystem cannot punch holes (then compaction frees them).
    The file keeps its size and reads of the range give zeros."""
    global _fallocate
    lo = -(-start // _BLOCK) * _BLOCK
    hi = end - end % _BLOCK
    if hi - lo < _BLOCK or _fallocate is None:
        return 0
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, lo, hi - lo) != 0:
        if ctypes.get_errno() in (errno.EOPNOTSUPP, errno.ENOSYS):
            _fallocate = None  # no filesystem of ours will do better
        return 0
    return hi - lo


@dataclass
class _Writer:
    lock_fd: int
    db: sqlite3.Connection
    file_id: int
    fd: int
    size: int
    dead: dict[int, int] = field(default_factory=dict)
    # a compaction retired a file whose removal is still due (see ``_remove_retired``)
    retired: bool = True
    checkpointed: float = field(default_factory=time.monotonic)
    # where the large records written to the current file since its last sync begin
    # (None: none): they leave the page cache once synced, see ``_evict_synced``
    large_from: int | None = None
    # compaction's clocks (monotonic): the last delete, and per file the last time its
    # dead bytes grew (files not in it: since the writer opened)
    opened: float = field(default_factory=time.monotonic)
    last_delete: float = 0.0
    dead_changed: dict[int, float] = field(default_factory=dict)
    half_dead_since: dict[int, float] = field(default_factory=dict)


def _pwrite_all(fd: int, bufs: Sequence[Buffer], offset: int) -> None:
    views = [memoryview(b) for b in bufs if len(b)]
    while views:
        written = os.pwritev(fd, views[:512], offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def _evict_synced(w: _Writer) -> None:
    """Drop the large records just synced in ``w``'s current file from the page cache.

    Why: a big put writes 1.5x its size through the page cache, and a page the
    kernel hands out for the first time in a while is slow to fill (on the VMs
    measured, ~2 ms of CPU per MiB against ~0.2 for a recently freed one: the
    hypervisor backs guest memory lazily). Dropping each batch's pages once they
    are durable recycles the same few MiB of page cache instead of touching new
    memory for every MiB, which cut the write calls' CPU by half to three
    quarters in a 256 MiB put (4.2 against 6.5-8 ms CPU per MiB in all). The
    cost: reading such an object back right away comes from disk (a 256 MiB
    get measured 495-941 MiB/s all the same, once ``store.tune_malloc`` had
    taken the page faults out of the read path). Shares of big objects are rarely
    read right back; small records (mail) keep their pages, except those in the
    same batch after a large one or within 2 MiB before it (folios: the kernel
    drops only whole ones, so the range starts on a 2 MiB boundary and runs to
    the end of the file). Advice only: the data is already synced, so a failure
    here changes nothing.
    """
    start, w.large_from = w.large_from, None
    if start is not None and hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(w.fd, start - start % _FOLIO_MAX, 0, os.POSIX_FADV_DONTNEED)


class LocalBackend:
    kind = "local"

    def __init__(self, name: str, path: Path, executor: Executor, *, location: str | None = None,
                 max_file: int = 256 * 1024 * 1024, policy: CompactPolicy | None = None) -> None:
        self.name = name
        self.policy = policy or CompactPolicy()
        self.path = path
        self.location = location if location is not None else str(path)
        self._executor = executor
        self._max_file = max_file
        self._errors = 0
        self._wlock = threading.Lock()
        self._writer: _Writer | None = None
        self._readers = ReaderPool(self._connect_reader)
        self._fds: dict[int, int] = {}
        self._fd_lock = threading.Lock()
        self._commit: GroupCommit[Op, bool] = GroupCommit(in_thread(executor, self._run_batch))
        self._closed = False
        self._lock_fd: int | None = None
        # durable records not yet in the index: key -> (file, offset, length), the same
        # changes in write order (a key put twice leaves a dead record to count), and
        # the synced end of each file they are in; see the module docstring
        self._unindexed: dict[str, tuple[int, int, int]] = {}
        self._unindexed_log: builtins.list[IndexChange] = []
        self._unindexed_ends: dict[int, int] = {}

    # -- the protocol

    async def put(self, key: str, parts: Sequence[Buffer]) -> None:
        check_key(key)
        size = sum(len(p) for p in parts)
        if size > MAX_VALUE:
            raise ValueError(f"value of {size} bytes is too large for a local backend")
        await self._commit.submit(("put", [(key, parts)]), size)

    async def put_many(self, items: Sequence[PutItem]) -> builtins.list[bool]:
        """Every item in one group-commit entry: one data write and one fdatasync for
        all of them (and for whatever else is queued then); indexed lazily (above).

        All or nothing: either every item is durable (all True) or the batch
        failed and this raises ``BackendUnavailable``."""
        if not items:
            return []
        size = 0
        for key, parts in items:
            check_key(key)
            length = sum(len(p) for p in parts)
            if length > MAX_VALUE:
                raise ValueError(f"value of {length} bytes is too large for a local backend")
            size += length
        await self._commit.submit(("put", list(items)), size)
        return [True] * len(items)

    async def get(self, key: str) -> bytes | None:
        check_key(key)
        return await self._io(self._read, key)

    async def delete(self, key: str) -> bool:
        check_key(key)
        return await self._commit.submit(("del", [(key, ())]))

    async def stat(self, key: str) -> int | None:
        check_key(key)
        return await self._io(self._stat, key)

    async def list(self, prefix: str = "") -> AsyncIterator[str]:
        after = prefix
        while True:
            page = await self._io(self._page, prefix, after)
            for key in page:
                yield key
            if len(page) < 1000:
                return
            after = page[-1]

    async def health(self) -> BackendHealth:
        try:
            await self._io(self._ensure_open)
            free = await self._io(lambda: shutil.disk_usage(self.path).free)
            return BackendHealth(self.name, self.kind, self.location, True, free, self._errors)
        except BackendUnavailable as exc:
            return BackendHealth(self.name, self.kind, self.location, False, None, self._errors,
                                 exc.detail)

    async def close(self) -> None:
        await self._commit.drain()
        self._closed = True
        # the last checkpoint commits index rows (and may compact): not on the loop
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_files)

    def _close_files(self) -> None:
        with self._wlock:
            if self._writer is not None:
                with contextlib.suppress(OSError, sqlite3.Error):  # redone from the files
                    self._checkpoint(self._writer)
            self._drop_writer()
        with self._fd_lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
        self._readers.close()

    async def checkpoint(self) -> None:
        """Commit every durable record to the index now instead of lazily."""
        def run() -> None:
            with self._wlock:
                self._checkpoint(self._writer_state())
        await self._io(run)

    async def compact(self) -> int:
        """Compact every file with dead bytes now, the active one included; returns
        files compacted."""
        return await self._io(self._compact_all, True)

    async def maintain(self) -> int:
        """Compact what the policy says is due (the store calls this periodically);
        returns files compacted."""
        if self._closed:
            return 0
        return await self._io(self._compact_all, False)

    def disk_usage(self) -> int:
        """Bytes the data files occupy on disk (holes excluded)."""
        return sum(p.stat().st_blocks * 512 for p in (self.path / "data").glob("*.dat"))

    # -- plumbing

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guard, fn, *args)

    def _guard(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except BackendUnavailable:
            self._errors += 1
            raise
        except (OSError, sqlite3.Error) as exc:
            self._errors += 1
            log.warning("backend %s: %s", self.name, exc)
            raise BackendUnavailable(self.name, str(exc)) from exc

    def _ensure_open(self) -> _Writer:
        with self._wlock:
            return self._writer_state()

    def _writer_state(self) -> _Writer:
        if self._writer is not None:
            return self._writer
        if self._closed:
            raise BackendUnavailable(self.name, "closed")
        try:
            if not self.path.exists():
                self.path.mkdir(parents=True)
                log.info("backend %s: %s did not exist, created it empty", self.name,
                            self.path)
            (self.path / "data").mkdir(exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(self.name, f"cannot use {self.path}: {exc}") from exc
        lock_fd = self._lock()
        try:
            db = sqlite3.connect(self.path / "index.sqlite", check_same_thread=False,
                                 isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._writer = self._recover(lock_fd, db)
        except BaseException:
            self._unlock()
            raise
        return self._writer

    def claim(self) -> None:
        """Take the directory's lock now, when the store opens.

        A second process (a CLI command while ``twin serve`` runs) then fails at
        once with ``StoreInUse`` naming the holder's pid, instead of finding
        every share "missing" later. An unreachable directory is left for later:
        the store opens without it and reads use the other backends.
        """
        with self._wlock:
            try:
                if self.path.is_dir():  # a missing one is created (and logged) on first use
                    self._lock()
            except OSError as exc:
                log.warning("backend %s: not claimed at open: %s", self.name, exc)

    def unclaim(self) -> None:
        """Give the lock back (the store failed to open after all)."""
        with self._wlock:
            if self._writer is None:
                self._unlock()

    def _lock(self) -> int:
        """This process's flock on ``lock`` (taken once; the file then holds our pid)."""
        if self._lock_fd is not None:
            return self._lock_fd
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise StoreInUse(self.name, str(self.path),
                             int(holder) if holder.isdigit() else None) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        return fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _drop_writer(self) -> None:
        w = self._writer
        self._writer = None
        # what was not checkpointed is re-indexed from the data files on reopen
        self._unindexed.clear()
        self._unindexed_log.clear()
        self._unindexed_ends.clear()
        if w is not None:
            with contextlib.suppress(OSError):
                os.close(w.fd)
            w.db.close()
        self._unlock()

    def _data_file(self, file_id: int) -> Path:
        return self.path / "data" / f"{file_id:08d}.dat"

    def _recover(self, lock_fd: int, db: sqlite3.Connection) -> _Writer:
        """Bring the index in line with the data files after any kind of stop."""
        known = {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, indexed, retired FROM files")}
        on_disk = sorted(int(p.stem) for p in (self.path / "data").glob("*.dat")
                         if p.stem.isdigit())
        db.execute("BEGIN")
        for file_id, (_, retired) in known.items():
            if retired is not None:
                self._data_file(file_id).unlink(missing_ok=True)
                db.execute("DELETE FROM files WHERE id=?", (file_id,))
            elif file_id not in on_disk:
                lost = db.execute("DELETE FROM shards WHERE file=?", (file_id,)).rowcount
                db.execute("DELETE FROM files WHERE id=?", (file_id,))
                log.error("backend %s: data file %d vanished, %d shares lost", self.name,
                          file_id, lost)
        live = [f for f in on_disk if f not in known or known[f][1] is None]
        for file_id in live:
            indexed = known[file_id][0] if file_id in known else 0
            if file_id not in known:
                db.execute("INSERT INTO files(id, indexed) VALUES (?, 0)", (file_id,))
            self._reindex_tail(db, file_id, indexed)
        if not live:
            live = [1]
            self._data_file(1).touch()
            db.execute("INSERT OR IGNORE INTO files(id, indexed) VALUES (1, 0)")
        db.execute("COMMIT")
        active = live[-1]
        fd = os.open(self._data_file(active), os.O_RDWR)
        size = os.fstat(fd).st_size
        return _Writer(lock_fd, db, active, fd, size)

    def _reindex_tail(self, db: sqlite3.Connection, file_id: int, indexed: int) -> None:
        path = self._data_file(file_id)
        size = path.stat().st_size
        if size < indexed:
            log.error("backend %s: data file %d shrank from %d to %d bytes", self.name, file_id,
                      indexed, size)
            db.execute("DELETE FROM shards WHERE file=? AND offset+length>?", (file_id, size))
        offset, found = min(indexed, size), 0
        changes: builtins.list[IndexChange] = []
        with open(path, "rb") as f:
            while offset + RECORD.size <= size:
                f.seek(offset)
                magic, klen, vlen = RECORD.unpack(f.read(RECORD.size))
                end = offset + RECORD.size + klen + vlen
                if magic != RECORD_MAGIC or end > size:
                    break
                key = f.read(klen).decode("ascii", "replace")
                changes.append((key, (file_id, offset + RECORD.size + klen, vlen)))
                offset, found = end, found + 1
        self._index_apply(db, changes, [])
        if offset < size:
            log.warning("backend %s: cutting %d torn bytes off data file %d", self.name,
                        size - offset, file_id)
            os.truncate(path, offset)
        if found:
            log.info("backend %s: re-indexed %d records of data file %d", self.name, found,
                     file_id)
        db.execute("UPDATE files SET indexed=? WHERE id=?", (offset, file_id))

    @staticmethod
    def _index_apply(db: sqlite3.Connection, changes: Sequence[IndexChange],
                     dead: builtins.list[Span]) -> builtins.list[bool]:
        """Apply index changes in order; per change, whether its key existed just before.

        A batch of small shares is the hot path of mail delivery, and a SELECT plus an
        INSERT per share was most of a batch's time here: the old rows of every key are
        read with a few ``IN (...)`` queries, the changes are played out in memory (a
        key put twice in a batch leaves a dead record in the data file too), and the
        result is written with one ``executemany`` per statement. Overwritten and
        deleted records are appended to ``dead`` (to punch out and count for compaction).
        """
        keys = list(dict.fromkeys(key for key, _ in changes))
        current: dict[str, tuple[int, int, int] | None] = {}
        for pos in range(0, len(keys), 500):  # well under SQLite's bound-variable limit
            chunk = keys[pos:pos + 500]
            marks = ",".join("?" * len(chunk))
            current.update((key, (file_id, offset, length))
                           for key, file_id, offset, length in db.execute(
                f"SELECT key, file, offset, length FROM shards WHERE key IN ({marks})",  # noqa: S608
                chunk))
        final: dict[str, tuple[int, int, int] | None] = {}
        existed: builtins.list[bool] = []
        for key, where in changes:
            old = current.get(key)
            existed.append(old is not None)
            if old is not None:
                dead.append(Span(old[0], old[1] - RECORD.size - len(key), old[1], old[1] + old[2]))
            current[key] = where
            final[key] = where
        gone = [(key,) for key, where in final.items() if where is None]
        if gone:
            db.executemany("DELETE FROM shards WHERE key=?", gone)
        rows = [(key, *where) for key, where in final.items() if where is not None]
        if rows:
            db.executemany("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?)", rows)
        return existed

    def _rotate(self, w: _Writer) -> None:
        os.fdatasync(w.fd)
        _evict_synced(w)
        self._unindexed_ends[w.file_id] = w.size
        os.close(w.fd)
        w.file_id += 1
        w.fd = os.open(self._data_file(w.file_id), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        w.size = 0
        dfd = os.open(self.path / "data", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        w.db.execute("INSERT INTO files(id, indexed) VALUES (?, 0)", (w.file_id,))

    def _append(self, w: _Writer, records: builtins.list[tuple[str, int, int]], key: str,
                parts: Sequence[Buffer], pending: builtins.list[Buffer]) -> None:
        """Queue one record; small ones are coalesced into a single pwritev."""
        kb = key.encode("ascii")
        length = sum(len(p) for p in parts)
        total = RECORD.size + len(kb) + length
        if w.size > 0 and w.size + total > self._max_file:
            self._flush_pending(w, pending)
            self._rotate(w)
        head = RECORD.pack(RECORD_MAGIC, len(kb), length) + kb
        if length <= SMALL:
            pending.append(head)
            pending.extend(parts)
        else:
            self._flush_pending(w, pending)
            _pwrite_all(w.fd, [head, *parts], w.size)
            if w.large_from is None:
                w.large_from = w.size
        records.append((key, w.file_id, w.size + len(head)))
        w.size += total

    @staticmethod
    def _flush_pending(w: _Writer, pending: builtins.list[Buffer]) -> None:
        if pending:
            total = sum(len(b) for b in pending)
            _pwrite_all(w.fd, pending, w.size - total)
            pending.clear()

    def _run_batch(self, ops: builtins.list[Op]) -> builtins.list[bool]:
        with self._wlock:
            try:
                return self._write_batch(ops)
            except (OSError, sqlite3.Error) as exc:
                self._errors += 1
                log.error("backend %s: write failed, reopening: %s", self.name, exc)
                self._drop_writer()
                raise BackendUnavailable(self.name, str(exc)) from exc

    def _write_batch(self, ops: builtins.list[Op]) -> builtins.list[bool]:
        w = self._writer_state()
        records: builtins.list[tuple[str, int, int]] = []
        pending: builtins.list[Buffer] = []
        for kind, items in ops:
            if kind == "put":
                for key, parts in items:
                    self._append(w, records, key, parts, pending)
        self._flush_pending(w, pending)
        if records:
            os.fdatasync(w.fd)
            _evict_synced(w)
        changes: builtins.list[IndexChange] = []
        rec = iter(records)
        for kind, items in ops:
            for key, parts in items:
                if kind == "put":
                    _, file_id, offset = next(rec)
                    changes.append((key, (file_id, offset, sum(len(p) for p in parts))))
                else:
                    changes.append((key, None))
        self._unindexed_ends[w.file_id] = w.size
        if all(kind == "put" for kind, _ in ops):  # durable now; indexed later
            self._unindexed_log.extend(changes)
            self._unindexed.update((key, where) for key, where in changes if where)
            if (len(self._unindexed_log) >= CHECKPOINT_ITEMS
                    or time.monotonic() - w.checkpointed >= CHECKPOINT_SECONDS):
                try:
                    self._checkpoint(w)
                except (OSError, sqlite3.Error) as exc:
                    # the puts are synced already: do not report them failed (the
                    # caller would store them again elsewhere); reopening re-indexes
                    self._errors += 1
                    log.error("backend %s: index checkpoint failed, reopening: %s",
                              self.name, exc)
                    self._drop_writer()
            return [True] * len(ops)
        # a delete must see every key's latest record: all of it goes in now
        self._unindexed_log.extend(changes)
        existed = iter(self._checkpoint(w)[-len(changes):])
        results: builtins.list[bool] = []
        for kind, items in ops:  # a put is True; a delete says whether the key was there
            found = [next(existed) for _ in items]
            results.append(kind == "put" or any(found))
        return results

    def _checkpoint(self, w: _Writer) -> builtins.list[bool]:
        """Commit the unindexed records (and queued deletes) to the index in one
        transaction; per change, whether its key existed just before. Then punch
        the records that died out of their files (no index row points there any
        more) and count what is left of them as dead bytes."""
        w.checkpointed = time.monotonic()
        if not self._unindexed_log:
            return []
        changes = self._unindexed_log
        dead: builtins.list[Span] = []
        db = w.db
        db.execute("BEGIN")
        try:
            existed = self._index_apply(db, changes, dead)
            db.executemany("UPDATE files SET indexed=? WHERE id=?",
                           [(end, file_id) for file_id, end in self._unindexed_ends.items()])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        # readers that miss here find the rows committed above
        self._unindexed_log = []
        self._unindexed.clear()
        self._unindexed_ends.clear()
        if any(where is None for _, where in changes):
            w.last_delete = w.checkpointed
        if dead:
            self._free(w, dead)
        self._remove_retired(w)
        return existed

    def _free(self, w: _Writer, dead: builtins.list[Span]) -> None:
        """Punch dead records out of their files; count the rest as dead bytes."""
        left: dict[int, int] = {}
        by_file: dict[int, builtins.list[Span]] = {}
        for span in dead:
            by_file.setdefault(span.file, []).append(span)
        for file_id, spans in by_file.items():
            freed = 0
            if any(s.end - s.value >= _BLOCK for s in spans):
                try:
                    fd = os.open(self._data_file(file_id), os.O_WRONLY)
                except OSError:  # retired meanwhile: nothing to free
                    fd = -1
                if fd >= 0:
                    try:
                        # the header stays: a re-index from scratch walks from
                        # header to header and must never land in a hole
                        freed = sum(punch(fd, s.value, s.end) for s in spans)
                    finally:
                        os.close(fd)
            left[file_id] = sum(s.end - s.start for s in spans) - freed
            w.dead_changed[file_id] = w.checkpointed
        w.db.executemany("UPDATE files SET dead=dead+? WHERE id=?",
                         [(amount, file_id) for file_id, amount in left.items() if amount])

    def _compact_all(self, force: bool) -> int:
        with self._wlock:
            return self._compact_locked(self._writer_state(), force)

    def _due(self, w: _Writer, force: bool) -> builtins.list[int]:
        """The files to compact now (see ``CompactPolicy``).

        A half-dead file waits for deletes to pause (a large object is deleted in
        batches; compacting between them copies its remaining shares forward for
        nothing), but no longer than ``max_wait``: on a busy mail server deletes
        never pause."""
        p, now = self.policy, time.monotonic()
        paused = force or now - w.last_delete >= p.delay
        due: builtins.list[int] = []
        half: dict[int, float] = {}
        for file_id, dead in w.db.execute(
                "SELECT id, dead FROM files WHERE retired IS NULL AND dead>=? ORDER BY id",
                (1 if force else p.min_dead,)).fetchall():
            if file_id == w.file_id and w.size == 0:
                continue
            try:
                used = os.stat(self._data_file(file_id)).st_blocks * 512
            except FileNotFoundError:
                continue
            live = max(used - dead, 0)
            if dead >= p.ratio * used:
                half[file_id] = w.half_dead_since.get(file_id, now)
                hot = paused or now - half[file_id] >= p.max_wait
            else:
                hot = False
            quiet = now - w.dead_changed.get(file_id, w.opened) >= p.age
            if force or hot or (quiet and dead > p.slack * live):
                due.append(file_id)
        w.half_dead_since = half
        return due

    def _compact_locked(self, w: _Writer, force: bool) -> int:
        self._checkpoint(w)  # the moves below rewrite the index: it must be whole
        due = self._due(w, force)
        if w.file_id in due:  # the active file is sealed first; its records move on
            self._rotate(w)
        for file_id in due:
            live = w.db.execute("SELECT key, offset, length FROM shards WHERE file=?",
                                (file_id,)).fetchall()
            moved: builtins.list[tuple[str, int, int]] = []
            pending: builtins.list[Buffer] = []
            src = os.open(self._data_file(file_id), os.O_RDONLY)
            try:
                for key, offset, length in live:
                    self._append(w, moved, key, [os.pread(src, length, offset)], pending)
                    self._flush_pending(w, pending)
            finally:
                os.close(src)
            os.fdatasync(w.fd)
            self._unindexed_ends.clear()  # every record moved is indexed just below
            w.db.execute("BEGIN")
            for key, new_file, new_offset in moved:
                w.db.execute("UPDATE shards SET file=?, offset=? WHERE key=?",
                             (new_file, new_offset, key))
            w.db.execute("UPDATE files SET retired=? WHERE id=?", (time.time(), file_id))
            w.db.execute("UPDATE files SET indexed=? WHERE id=?", (w.size, w.file_id))
            w.db.execute("COMMIT")
            w.retired = True
            w.dead_changed.pop(file_id, None)
            w.half_dead_since.pop(file_id, None)
            log.info("backend %s: compacted data file %d (%d live records moved)", self.name,
                     file_id, len(moved))
        if due:
            self._remove_retired(w)
        return len(due)

    def _remove_retired(self, w: _Writer) -> None:
        if not w.retired:  # nothing retired since the last look: skip the query
            return
        w.retired = w.db.execute("SELECT 1 FROM files WHERE retired IS NOT NULL LIMIT 1"
                                 ).fetchone() is not None
        old = w.db.execute("SELECT id FROM files WHERE retired IS NOT NULL AND retired<=?",
                           (time.time() - self.policy.retire_grace,)).fetchall()
        for (file_id,) in old:
            with self._fd_lock:
                fd = self._fds.pop(file_id, None)
                if fd is not None:
                    os.close(fd)
            self._data_file(file_id).unlink(missing_ok=True)
            w.db.execute("DELETE FROM files WHERE id=?", (file_id,))

    def _connect_reader(self) -> sqlite3.Connection:
        self._ensure_open()
        return sqlite3.connect(self.path / "index.sqlite", check_same_thread=False)

    def _fd(self, file_id: int) -> int:
        with self._fd_lock:
            fd = self._fds.get(file_id)
            if fd is None:
                fd = os.open(self._data_file(file_id), os.O_RDONLY)
                self._fds[file_id] = fd
            return fd

    def _read(self, key: str) -> bytes | None:
        if self._writer is None:
            self._ensure_open()
        row = self._unindexed.get(key)
        if row is None:
            with self._readers.lease() as db:
                row = db.execute("SELECT file, offset, length FROM shards WHERE key=?",
                                 (key,)).fetchone()
        if row is None:
            return None
        file_id, offset, length = row
        data = os.pread(self._fd(file_id), length, offset)
        if len(data) != length:
            raise OSError(f"short read of {key} in data file {file_id}")
        return data

    def _stat(self, key: str) -> int | None:
        where = self._unindexed.get(key)
        if where is not None:
            return where[2]
        with self._readers.lease() as db:
            row = db.execute("SELECT length FROM shards WHERE key=?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def _page(self, prefix: str, after: str) -> builtins.list[str]:
        if self._unindexed_log:  # listing reads the index alone: make it whole first
            with self._wlock:
                self._checkpoint(self._writer_state())
        with self._readers.lease() as db:
            rows = db.execute(
                "SELECT key FROM shards WHERE key>=? AND key>? ORDER BY key LIMIT 1000",
                (prefix, after)).fetchall()
        return [r[0] for r in rows if r[0].startswith(prefix)]
