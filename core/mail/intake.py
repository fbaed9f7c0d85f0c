"""Local delivery: accept into the journal, file into the mail store in batches.

``accept`` is what SMTP and the peer API call for a local recipient. It
returns once the message is in the journal (``core.mail.journal``: sealed and
synced together with the other sessions' messages), so the 250 or peer ack can
go out after one fsync instead of three. The message shows in the Inbox once
the filer has stored it: a few milliseconds later when the twin is idle.

Batching adapts to load, as Nagle's algorithm does: an idle filer files a
message the moment it is journaled; whatever is journaled while a batch is
being filed waits and goes out together as the next batch. Why: each batch
costs a commit on every backend, the catalogue and the mail index (eight
fsyncs) plus the work around them, so under load batches must be large; but
a fixed gathering window (0.1 s until 2026-12) made every message wait for it,
even a lone chat message on an idle twin (p50 107 ms from 250 to IMAP IDLE,
issue #22). Under load the batch grows by itself while the previous one is
filed. Measured with bench/smtp.py (2000 x 4 KiB, 20 sessions, 3 rounds, on
one heavily loaded 2-core machine): accepted and filed rates did not drop
against the 0.1 s window (reused connections, filed: 1275 before, 1917 and
2052 in two runs after; one connection per message, accepted: 815 before, 725
and 764 after, within this machine's noise); bench/messaging.py: idle p50
from the 250 to the IDLE push 105 ms before, 4-10 ms after.

It takes everything journaled so far, up to ``MAX_BATCH`` messages or
``MAX_BATCH_BYTES``, and hands it to ``MailStore.file``: the bytes go through
the small-put batcher (one write per backend for the lot) and all rows commit
in one transaction together with the journal's "filed up to" mark. So every
accepted message is filed exactly once, whatever the moment of a crash.

Limits: at most ``max_backlog`` bytes wait to be filed; beyond that ``accept``
waits up to ``WAIT_SECONDS`` for room and then raises ``Unavailable`` (SMTP
451: the client retries later). When filing fails (backends down), the filer
retries with exponential backoff and mail keeps being accepted until the
backlog is full; nothing journaled is dropped.

No single message may hold the queue. ``MailStore.file`` sets a message it
cannot describe aside by itself (``core.mail.quarantine``); for any other
failure the filer halves its batch after each failed try, so a bad message
ends up alone, and a message that fails alone ``SET_ASIDE_AFTER`` times in a
row is quarantined as it is (``MailStore.set_aside``), if the store and the
database take it (when they are down, nothing is set aside: it was them).
Quarantined messages are never replayed; the owner retries or deletes them
(``twin mail quarantine``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import QuotaExceeded, Unavailable
from core.mail.journal import Entry, Journal

if TYPE_CHECKING:
    from core.mail.store import MailStore

log = logging.getLogger("twin.mail.intake")

MAX_BATCH = 512
MAX_BATCH_BYTES = 16 * 1024 * 1024
WAIT_SECONDS = 60.0
RETRY_FIRST = 0.5
RETRY_MAX = 300.0
SET_ASIDE_AFTER = 3  # failures of one message alone before it goes to the quarantine


class Intake:
    def __init__(self, mail: MailStore, directory: Path, key: bytes, max_backlog: int) -> None:
        self.mail = mail
        self.journal = Journal(directory, key, self._journaled)
        self.max_backlog = max_backlog
        self._queue: deque[Entry] = deque()
        self._backlog = 0  # bytes journaled and not filed yet
        self._wake = asyncio.Event()  # set when the queue gets entries
        self._filed = asyncio.Event()  # set, then replaced, after each filed batch
        self._filer: asyncio.Task[None] | None = None
        self._limit = MAX_BATCH  # halved after a failed batch, doubled after a filed one
        self._failing = -1  # the entry that failed alone last, and how often in a row
        self._failures = 0
        # bytes per login reserved by accept (and recovery) and released once filed
        self._reserved: dict[str, int] = {}
        self._released: dict[str, int] = {}
        self._retry = asyncio.Event()  # set when storage health changes: retry now

    def retry_now(self) -> None:
        """Storage health changed (a backend is back): end the filer's back-off, so
        mail held through an outage is filed at once rather than up to RETRY_MAX later."""
        self._retry.set()

    async def start(self) -> None:
        """Replay what a crash left unfiled, then file from now on."""
        filed = await self.mail.journal_filed()
        recovered = await asyncio.to_thread(self.journal.recover, filed)
        for entry in recovered:  # not filed yet: they count against the quota
            self._reserve(entry.login, len(entry.message))
        self._journaled(recovered)
        self._filer = asyncio.create_task(self._run(), name="mail-intake")

    async def stop(self, grace: float = 30.0) -> None:
        """File what is journaled (for up to ``grace`` seconds; the rest at the next start)."""
        if self._filer is None:
            return
        try:
            await asyncio.wait_for(self.settled(), grace)
        except TimeoutError:
            log.warning("stopping with %d journaled message(s) not filed yet: they are "
                        "filed at the next start", len(self._queue))
        self._filer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._filer
        self._filer = None
        await self.journal.aclose()

    def pending(self, login: str) -> int:
        """Bytes of ``login``'s mail accepted (or being accepted) and not filed yet."""
        return self._reserved.get(login, 0) - self._released.get(login, 0)

    async def accept(self, login: str, message: bytes) -> int:
        """Journal ``message`` for ``login``'s Inbox; its sequence number once durable.

        The quota counts what is filed plus what is reserved here: a message
        reserves its size from the check until it is filed (or refused), so
        concurrent deliveries cannot all pass the check against the same
        filed total (30 deliveries of 250 KB at once filled a 300 KB quota
        25 times over)."""
        size = len(message)
        if self.mail.quota_bytes:
            released = self._released.get(login, 0)  # before the read: never undercount
            used, limit = await self.mail.quota(login)
            # no await from here to the reservation: check and reserve are one step
            total = used + self._reserved.get(login, 0) - released + size
            if total > limit:
                raise QuotaExceeded(f"over quota ({total} > {limit} bytes)")
        self._reserve(login, size)
        try:
            return await self._append(login, message)
        except BaseException:
            self._release(login, size)
            raise

    def _reserve(self, login: str, size: int) -> None:
        self._reserved[login] = self._reserved.get(login, 0) + size

    def _release(self, login: str, size: int) -> None:
        # both totals only grow (one pair per local user): a snapshot of either stays
        # comparable with a later value, which ``accept`` relies on
        self._released[login] = self._released.get(login, 0) + size

    async def _append(self, login: str, message: bytes) -> int:
        if self._backlog > self.max_backlog:
            try:
                await asyncio.wait_for(self._until(lambda: self._backlog <= self.max_backlog),
                                       WAIT_SECONDS)
            except TimeoutError:
                raise Unavailable("the mail store is behind on filing; try again "
                                  "later") from None
        return (await self.journal.append(login, message)).seq

    async def settled(self) -> None:
        """Wait until every message accepted so far is filed (tests, clean stop)."""
        await self._until(lambda: not self._queue)

    async def _until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self._filed.wait()

    def _journaled(self, entries: list[Entry]) -> None:
        self._queue.extend(entries)
        self._backlog += sum(len(e.message) for e in entries)
        if entries:
            self._wake.set()

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            # no waiting to gather: what came in while the last batch was filed is the batch
            batch, size = self._take()
            try:
                await self.mail.file(batch)
            except Exception as exc:
                if len(batch) > 1:  # halve at once: the next try leaves a poison half out
                    self._limit = max(1, len(batch) // 2)
                    log.warning("filing %d journaled message(s) failed (%s); trying %d at "
                                "a time", len(batch), exc, self._limit)
                    continue
                if await self._set_aside(batch[0], exc):
                    delay = RETRY_FIRST
                    await self._done([batch[0]], len(batch[0].message))
                    continue
                log.warning("filing journaled message %d failed (%s); it stays in the "
                            "journal, next try in %.1f s", batch[0].seq, exc, delay)
                self._retry.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._retry.wait(), delay)
                delay = RETRY_FIRST if self._retry.is_set() else min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_FIRST
            self._failures = 0
            self._limit = min(MAX_BATCH, self._limit * 2)
            await self._done(batch, size)

    async def _set_aside(self, entry: Entry, exc: Exception) -> bool:
        """After ``SET_ASIDE_AFTER`` failures of ``entry`` alone, quarantine it.

        A message that fails alone, again and again, while quarantining it
        (a store put and a commit) works, is what holds the queue: the
        backends and the database are evidently up. Whether that succeeded."""
        self._failures = self._failures + 1 if self._failing == entry.seq else 1
        self._failing = entry.seq
        if self._failures < SET_ASIDE_AFTER:
            return False
        try:
            await self.mail.set_aside(entry, f"{type(exc).__name__}: {exc}")
        except Exception as again:
            log.warning("could not set journaled message %d aside either (%s)", entry.seq,
                        again)
            return False
        self._failures = 0
        return True

    async def _done(self, batch: list[Entry], size: int) -> None:
        for entry in batch:
            self._queue.popleft()
            self._release(entry.login, len(entry.message))
        self._backlog -= size
        if self.journal.releasable(batch[-1].seq):  # once per segment file
            await asyncio.to_thread(self.journal.release, batch[-1].seq)
        self._filed.set()
        self._filed = asyncio.Event()

    def _take(self) -> tuple[list[Entry], int]:
        """The oldest entries, up to the batch limits, and their message bytes."""
        batch: list[Entry] = []
        size = 0
        for entry in self._queue:
            if batch and (len(batch) >= self._limit or size + len(entry.message) > MAX_BATCH_BYTES):
                break
            batch.append(entry)
            size += len(entry.message)
        return batch, size
