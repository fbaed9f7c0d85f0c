"""The delivery journal: a 250 waits for one fsync, not for filing.

Why: filing a message takes three group commits one after another (its
shares on n backends, its catalogue row, its mail row), each with its own
fsync. At 20 SMTP sessions that was 10-15 ms of waiting per message and
capped the twin at 0.4-0.65x a bare aiosmtpd sink. Postfix answers 250
once its queue file is on disk and delivers after; the journal does the
same for local delivery:

- ``append`` queues the message. The writer thread takes every queued
  message as one batch, seals the batch as one record (secretbox with the
  identity's ``journal`` key: mail is never on disk in clear) and appends it
  to a segment file opened with O_DSYNC, so one write is also the sync. When
  ``append`` returns, the message survives kill -9 and power loss, so the 250
  or the peer ack may go out.
- ``core.mail.intake`` files the journaled messages in batches and records
  the last filed sequence number in the same SQLite transaction as their
  rows; ``release(filed)`` then deletes the segments that hold nothing newer.
- ``recover(filed)`` (at start) returns every record after ``filed``. A record
  cut short by a crash was never acknowledged (its write had not returned)
  and is skipped; appending resumes in a fresh segment, so a torn tail is
  never followed by good records in the same file.

Record: ``MAGIC | first seq u64 | count u32 | length u32`` (big-endian), then
``length`` bytes of ``seal(key, meta length u32 | meta JSON | messages)``: the
batch's ``count`` messages, numbered ``first`` onwards, one after another. The
meta repeats ``first`` and ``count`` and gives each message's login, time and
size, so a record copied to another place is refused.

Why one record per batch, one write, no separate fdatasync: every C call the
writer thread makes gives up the GIL, and taking it back from the busy SMTP
thread can take milliseconds. With a record per message (a seal each) and a
write plus an fdatasync, a batch of 9 spent 0.8 ms sealing and the median
250 waited 4.2 ms for the journal under bench/smtp.py load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import ErrorCode, Invalid, Unavailable
from storage import IntegrityError
from storage.crypto import seal, unseal

log = logging.getLogger("twin.mail.journal")

MAGIC = b"TWJ2"
HEADER = struct.Struct(">4sQII")
META_LEN = struct.Struct(">I")
SEGMENT_BYTES = 16 * 1024 * 1024  # a new file after this much: released segments free disk
MAX_RECORD = 1024 * 1024 * 1024  # a longer length field is garbage, not a record
RECORD_BYTES = 64 * 1024 * 1024  # a batch's messages are split into records of this much
MAX_MESSAGE = MAX_RECORD // 2  # so that any one message fits a record
SUFFIX = ".log"


@dataclass(frozen=True)
class Entry:
    """One journaled delivery: ``message`` for ``login``'s Inbox, received at ``received``."""

    seq: int
    login: str
    message: bytes
    received: float


def _segment_name(first_seq: int) -> str:
    return f"{first_seq:016x}{SUFFIX}"


def _pack(key: bytes, entries: list[Entry]) -> bytes:
    """One sealed record holding ``entries`` (consecutive sequence numbers)."""
    first = entries[0].seq
    meta = json.dumps({"first": first, "count": len(entries),
                       "entries": [[e.login, e.received, len(e.message)] for e in entries]}
                      ).encode()
    body = seal(key, b"".join([META_LEN.pack(len(meta)), meta, *(e.message for e in entries)]))
    return HEADER.pack(MAGIC, first, len(entries), len(body)) + body


def _unpack(key: bytes, first: int, count: int, body: bytes) -> list[Entry]:
    plain = unseal(key, body, f"journal record {first}")
    (meta_len,) = META_LEN.unpack_from(plain)
    meta = json.loads(plain[META_LEN.size:META_LEN.size + meta_len])
    if meta.get("first") != first or meta.get("count") != count \
            or len(meta["entries"]) != count:
        raise IntegrityError(f"journal record {first} (x{count}) carries sequence numbers "
                             f"{meta.get('first')} (x{meta.get('count')})")
    entries, at = [], META_LEN.size + meta_len
    for i, (login, received, size) in enumerate(meta["entries"]):
        entries.append(Entry(first + i, str(login), plain[at:at + size], float(received)))
        at += size
    if at != len(plain):
        raise IntegrityError(f"journal record {first}: sizes do not add up")
    return entries


def _records(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(offset, first seq, count, sealed body) of each whole record; stops at a torn or
    garbage tail."""
    offset = 0
    while offset + HEADER.size <= len(data):
        magic, first, count, length = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        if magic != MAGIC or count == 0 or length > MAX_RECORD or end > len(data):
            return
        yield offset, first, count, data[offset + HEADER.size:end]
        offset = end


class Journal:
    """Append-only, sealed, group-committed log of accepted deliveries (see module doc)."""

    def __init__(self, directory: Path, key: bytes,
                 on_durable: Callable[[list[Entry]], None], *,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        """``on_durable`` gets every record once it is on disk, in sequence order,
        whether or not the appender is still waiting for it."""
        self.directory = directory
        self._key = key
        self._on_durable = on_durable
        self._segment_bytes = segment_bytes
        self._next_seq = 0  # set by recover(); 0 = not recovered yet
        self._fd = -1
        self._written = 0  # bytes in the current segment
        # closed segment -> its last seq; the writer thread adds, release() takes
        self._segments: dict[Path, int] = {}
        self._segments_lock = threading.Lock()
        self._current: Path | None = None
        self._current_last = 0
        # appends waiting for the flusher, in sequence order
        self._waiting: list[tuple[Entry, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # -- start and stop (blocking: called in a thread)

    def recover(self, filed: int) -> list[Entry]:
        """Every readable record after ``filed``, in order; the next append starts a new file."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        entries: list[Entry] = []
        last = filed
        for path in sorted(self.directory.glob("*" + SUFFIX)):
            data = path.read_bytes()
            seg_last, end = 0, 0
            for offset, first, count, body in _records(data):
                end = offset + HEADER.size + len(body)
                seg_last = max(seg_last, first + count - 1)
                if first + count - 1 <= filed:
                    continue
                if entries and first <= entries[-1].seq:
                    log.error("journal %s: record %d at offset %d repeats an earlier sequence "
                              "number and is skipped", path.name, first, offset)
                    continue
                try:
                    batch = _unpack(self._key, first, count, body)
                except (IntegrityError, ValueError, KeyError, TypeError, struct.error) as exc:
                    log.error("journal %s: record %d at offset %d cannot be read and is "
                              "skipped: %s", path.name, first, offset, exc)
                    continue
                entries += [e for e in batch if e.seq > filed]
            if end < len(data):
                log.warning("journal %s: %d bytes after offset %d are not a whole record "
                            "(a write cut short by a crash: never acknowledged); ignored",
                            path.name, len(data) - end, end)
            last = max(last, seg_last)
            if seg_last <= filed:
                path.unlink()
            else:
                self._segments[path] = seg_last
        self._next_seq = last + 1
        if entries:
            log.info("journal: %d accepted message(s) not filed yet, filing them now",
                     len(entries))
        return entries

    async def aclose(self) -> None:
        """Refuse new appends, let the write in flight finish, then close."""
        self._next_seq = 0
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- appending

    async def append(self, login: str, message: bytes) -> Entry:
        """Journal one delivery; returns once it is on disk (an O_DSYNC write).

        Records reach the disk, and ``on_durable``, in sequence order: the
        flusher takes every waiting append, in the order they came, as one
        batch. The filer depends on that order: it records the highest filed
        number, and recovery skips below it.
        """
        if self._next_seq == 0:
            raise Unavailable("the mail journal is not open")
        if len(message) > MAX_MESSAGE:
            raise Invalid(f"message larger than {MAX_MESSAGE} bytes", code=ErrorCode.TOO_LARGE)
        entry = Entry(self._next_seq, login, message, time.time())
        self._next_seq += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((entry, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await fut  # if the caller is cancelled, the record is still written
        return entry

    async def _flush(self) -> None:
        while self._waiting:
            cut, size = 0, 0  # a record of at most RECORD_BYTES, or one message
            for entry, _ in self._waiting:
                if cut and size + len(entry.message) > RECORD_BYTES:
                    break
                cut, size = cut + 1, size + len(entry.message)
            batch, self._waiting = self._waiting[:cut], self._waiting[cut:]
            entries = [entry for entry, _ in batch]
            try:
                await asyncio.to_thread(self._write, entries)
            except Exception as exc:
                log.error("journal write failed (%s): %d message(s) refused", exc, len(batch))
                error = Unavailable("the mail journal cannot be written: "
                                    f"{getattr(exc, 'strerror', None) or exc}")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error)
                continue
            self._on_durable(entries)
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    def _write(self, entries: list[Entry]) -> None:
        """Seal a batch as one record and write it; O_DSYNC makes the write the sync.

        In the writer thread, not in ``append``: sealing is a C call that gives
        up the GIL, and on the busy SMTP thread getting it back cost about 4 %
        of that thread's time under load (py-spy --idle)."""
        record = _pack(self._key, entries)
        if self._fd < 0 or self._written >= self._segment_bytes:
            self._open_segment(entries[0].seq)
        try:
            view = memoryview(record)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            # the file may now end in part of a record: never append after it
            self._close_segment()
            raise
        self._written += len(record)
        self._current_last = entries[-1].seq

    def _open_segment(self, first_seq: int) -> None:
        """A new file named after its first record: names sort in sequence order."""
        self._close_segment()
        path = self.directory / _segment_name(first_seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
                           | os.O_DSYNC | os.O_CLOEXEC, 0o600)
        self._written = 0
        self._current, self._current_last = path, 0
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:  # the new name itself must survive a crash
            os.fsync(dir_fd)
        except OSError:
            self._close_segment()  # never append to a file whose name may vanish
            raise
        finally:
            os.close(dir_fd)

    def _close_segment(self) -> None:
        if self._current is not None and self._current_last:
            with self._segments_lock:
                self._segments[self._current] = self._current_last
        self._current = None
        self.close()

    # -- after filing

    def releasable(self, filed: int) -> bool:
        """Whether ``release(filed)`` would delete a file (cheap: ask on the loop)."""
        with self._segments_lock:
            return any(last <= filed for last in self._segments.values())

    def release(self, filed: int) -> int:
        """Delete closed segments whose every record is filed; how many were deleted."""
        with self._segments_lock:
            done = [path for path, last in self._segments.items() if last <= filed]
            for path in done:
                del self._segments[path]
        for path in done:
            path.unlink(missing_ok=True)
        return len(done)
